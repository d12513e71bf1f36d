"""Where and in what precision uvlm computes, decided in one place.

Training, evaluation points, `uvlm eval`, feature encoding and judge training all ask
`placement()` and use what it says:

- device: the GPU of this process (`LOCAL_RANK` under a launcher), else the CPU;
- precision: `auto` is bf16 on a GPU that supports it, fp16 on other GPUs, fp32 on the CPU;
  `bf16`, `fp16` and `fp32` are taken as given (bf16 and fp16 also run on a CPU, slowly);
- frozen pretrained weights (a 7B LLM, the encoders on a GPU) are held in the 16-bit type of the
  precision; what is trained from scratch (the tiny LLM, adapters, heads) stays in fp32 and
  computes under autocast;
- on a GPU, TF32 matmuls are allowed (the authors train with tf32);
- CPU pretraining of the stand-ins and the judge runs on PRETRAIN_THREADS threads, whatever
  the caller set (see `cpu_threads`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

# The VQ stand-in's weights depend on the CPU thread count (its dead-code restarts amplify the
# last-bit differences of a parallel reduction), and a suite worker pretrains on first use with
# one thread: one fixed count keeps one set of bytes behind each cache key.
PRETRAIN_THREADS = 1

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    precision: str  # bf16 | fp16 | fp32, resolved

    @property
    def dtype(self) -> torch.dtype:
        """The compute (autocast) dtype, and the dtype of frozen pretrained weights."""
        return _DTYPES[self.precision]

    @property
    def mixed(self) -> bool:
        return self.precision != "fp32"

    def autocast(self) -> AbstractContextManager:
        """Autocast to the precision on this device (nothing at fp32)."""
        if not self.mixed:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def accelerate_precision(self) -> str:
        """The same choice in accelerate's words (its `mixed_precision`)."""
        return {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[self.precision]


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def placement(precision: str = "auto", device: str | torch.device | None = None) -> Placement:
    """This process's device and resolved precision (see the module docstring)."""
    if device is None:
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        else:
            device = torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Placement(device, resolve_precision(precision, device))


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the body (or, as a decorator, the function) on `n` CPU threads; restore the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
