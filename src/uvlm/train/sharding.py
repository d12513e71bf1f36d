"""Sharded data parallelism (FSDP2): each process holds 1/N of the weights, gradients and
optimizer state, which full fine-tuning of a 7B LLM needs (its fp32 AdamW state alone is 84 GB).

`train.sharding: fsdp` turns it on. Each decoder layer of the LLM is one shard unit, gathered
just before its forward and backward and freed after (and so is each layer of a trained
encoder); the rest of the model (embeddings, LM head, adapters, generation head) is the root
unit. Trained weights are held in fp32 (a
pretrained LLM's trained weights too: AdamW on 16-bit weights loses small updates, and FSDP
wants one dtype per unit); computation stays under the run's autocast. The training loop stays
the one of data parallelism: the same records per process, the same loss scaling. Gradients are
reduce-scattered after every micro-batch, so no process ever holds whole gradients. What
changes is the model's state, which exists whole nowhere:

- checkpoints and final weights gather it, all processes together, onto the main process, which
  writes the same files an unsharded run writes (so `uvlm eval` and `load_trained` need nothing
  new), and a resume scatters it back;
- evaluation points run on the main process with every unit gathered (`gathered`);
- every process runs the same number of forwards per step (each gathers every unit), so the
  loop gives a process with fewer records weight-0 micro-batches.

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
_GATHER_TRAINED = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
# the main process reads a checkpoint and sends it out: the others never hold a whole copy
_SCATTER = StateDictOptions(full_state_dict=True, strict=False, broadcast_from_rank0=True)


def layer_units(model: nn.Module) -> list[nn.Module]:
    """A transformers model's layers (an LLM's decoder layers, a vision tower's encoder layers and
    embeddings), the units Hugging Face itself never splits (`_no_split_modules`); a LoRA-wrapped
    LLM is looked into through its base model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kinds = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in kinds]
    if not layers:
        raise ValueError(f"{type(base).__name__} names no layer class (_no_split_modules) to shard by")
    return layers


def _trained_in_fp32(module: nn.Module) -> None:
    for p in module.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def shard(model: nn.Module) -> None:
    """Shard `model` in place across the processes: one unit per decoder layer, the rest at the
    root, each moved to this process's device as it is sharded (a layer at a time: the whole
    model never sits on one GPU in fp32). Parameters become new (sharded) objects: build the
    optimizer after this."""
    towers = [model.encoder.tower] if getattr(model, "encoder", None) is not None else []
    for layer in [unit for part in (model.llm, *towers) for unit in layer_units(part)]:
        _trained_in_fp32(layer)
        fully_shard(layer)
    _trained_in_fp32(model)
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
        if units:
            # forget the order of the main process's evaluation forwards: backward prefetches by
            # the recorded order, which must be the same on every process
            model.reset_iter_state()


def gather_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The trained parameters (by name) and the optimizer state (keyed by parameter name), on the
    CPU of the main process; empty elsewhere. Collective."""
    weights = get_model_state_dict(model, options=_GATHER_TRAINED)
    return weights, get_optimizer_state_dict(model, optimizer, options=_GATHER)


def gather_weights(model: nn.Module) -> dict:
    """The whole model state by name on the CPU of the main process; empty elsewhere. Collective."""
    return get_model_state_dict(model, options=_GATHER)


def scatter_state(model: nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optim_state: dict) -> None:
    """Load whole states that the main process has read (a checkpoint; the others pass empty
    dicts) into the shards. Collective."""
    set_model_state_dict(model, weights, options=_SCATTER)
    set_optimizer_state_dict(model, optimizer, optim_state, options=_SCATTER)
