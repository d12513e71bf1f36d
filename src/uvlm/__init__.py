"""uvlm: controlled understanding-vs-generation studies of unified vision-language models."""

__version__ = "0.1.0"
