"""Sharded data parallelism (FSDP2): each process holds 1/N of the weights, gradients and
optimizer state, which full fine-tuning of a 7B LLM needs (its fp32 AdamW state alone is 84 GB).

`train.sharding: fsdp` turns it on. Each decoder layer of the LLM is one shard unit, gathered
just before its forward and backward and freed after; the rest of the model (embeddings, LM
head, adapters, generation head) is the root unit. The training loop stays the one of data
parallelism: the same records per process, the same loss scaling, gradients synchronised on
a step's last micro-batch. What changes is the model's state, which exists whole nowhere:

- checkpoints and final weights gather it, all processes together, onto the main process, which
  writes the same files an unsharded run writes (so `uvlm eval` and `load_trained` need nothing
  new), and a resume scatters it back;
- evaluation points run on the main process with every unit gathered (`gathered`).

The state is moved with torch.distributed.checkpoint's state-dict helpers, which key the
optimizer state by parameter name, so a resume does not depend on parameter order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
_SCATTER = StateDictOptions(full_state_dict=True, strict=False)


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's decoder layers, the units Hugging Face itself never splits (`_no_split_modules`);
    a LoRA-wrapped LLM is looked into through its base model."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    kinds = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in llm.modules() if type(m).__name__ in kinds]
    if not layers:
        raise ValueError(f"{type(base).__name__} names no decoder layer class (_no_split_modules) to shard by")
    return layers


def shard(model: nn.Module, device: torch.device) -> None:
    """Shard `model` in place across the processes: one unit per decoder layer, the rest at the root.
    Parameters become new (sharded) objects: build the optimizer after this."""
    model.to(device)
    for layer in decoder_layers(model.llm):
        fully_shard(layer)
    fully_shard(model)


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def _units(model: nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Every shard unit whole on every process for the block, and not freed after each forward, so
    the main process can evaluate alone (generation, answer decoding, any method of the model)
    while the others wait. Collective: every process enters. A no-op for an unsharded model."""
    units = _units(model)
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            # the root keeps its weights whole after forward anyway (FSDP's default for the root)
            unit.set_reshard_after_forward(unit is not model, recurse=False)


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients after this backward (a step's last micro-batch) or keep
    accumulating them locally (the others): FSDP's counterpart of DDP's no_sync."""
    model.set_requires_gradient_sync(sync)


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The whole model state (parameters and buffers, by name) and optimizer state (keyed by
    parameter name), on the CPU of the main process; empty elsewhere. Collective."""
    return gather_weights(model), get_optimizer_state_dict(model, optimizer, options=_GATHER)


def gather_weights(model: nn.Module) -> dict:
    """The whole model state by name on the CPU of the main process; empty elsewhere. Collective."""
    return get_model_state_dict(model, options=_GATHER)


def scatter_state(model: nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optim_state: dict) -> None:
    """Load whole states that every process has read (a checkpoint) into the shards. Collective."""
    set_model_state_dict(model, weights, options=_SCATTER)
    set_optimizer_state_dict(model, optimizer, optim_state, options=_SCATTER)
