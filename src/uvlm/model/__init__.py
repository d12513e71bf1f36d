"""The unified VLM: tokenizer, adapters, heads and the model that ties them together."""
