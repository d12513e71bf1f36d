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
from datetime import timedelta

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


# How long the processes of one run wait for each other at a collective. Rank 0 alone renders,
# encodes and caches the data before the first barrier (on an empty cache at paper size: 60K
# renders, the judge's 22K, an 18 GB SigLIP feature file), which outlasts NCCL's 10-minute default.
DISTRIBUTED_TIMEOUT = timedelta(hours=3)


def require_device(device: str) -> None:
    """Refuse in one line a run that asks for a GPU (train.device cuda) where torch sees none: a
    CUDA build that does not match the driver would otherwise train a 7B model on the CPU."""
    from uvlm.errors import UvlmError

    if device == "cuda" and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise UvlmError(f"train.device cuda, but torch {torch.__version__} ({build}) sees no GPU; install the torch "
                        "build that matches this machine's driver (nvidia-smi), or run on the CPU with "
                        "--set train.device=auto")


def process_state(precision: str = "auto"):
    """This process's accelerate PartialState (the processes of `torchrun`, or one without it;
    gloo between CPU processes), with DISTRIBUTED_TIMEOUT at its collectives."""
    from accelerate import PartialState

    return PartialState(cpu=placement(precision).device.type == "cpu", timeout=DISTRIBUTED_TIMEOUT)


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_gpus(count: int | None = None) -> list[str]:
    """The GPU ids this process may hand to its children, as CUDA_VISIBLE_DEVICES names them:
    its own mask in order (under CUDA_VISIBLE_DEVICES=4,5,6,7 the children get 4-7, not 0-3),
    or 0 .. count - 1 without one. `count`: how many GPUs there are (default: torch's count)."""
    count = gpu_count() if count is None else count
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None or not mask.strip():
        return [str(i) for i in range(count)]
    return [d.strip() for d in mask.split(",") if d.strip()][:count]


def gpu_groups(ids: list[str], groups: int, per_group: int) -> list[str]:
    """`groups` disjoint CUDA_VISIBLE_DEVICES values of `per_group` ids each, taken in order."""
    if groups * per_group > len(ids):
        raise ValueError(f"{groups} x {per_group} GPUs asked, {len(ids)} visible")
    return [",".join(ids[g * per_group:(g + 1) * per_group]) for g in range(groups)]


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the body (or, as a decorator, the function) on `n` CPU threads; restore the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
