"""What a run writes to survive: step checkpoints for a bit-exact resume, and the final weights.

A checkpoint (checkpoints/step-N/) holds the trainable weights, the optimizer and scheduler,
and the RNG states of every process (LoRA dropout draws differ per rank), and appears whole:
the ranks write into a staging folder, and the main rank renames it into place after
state.json, written last. A sharded model's state is gathered onto the main rank first (its
optimizer state is then keyed by parameter name), so its files are whole too. The final
weights (weights/) hold the adapters, head and fixed maps in one file, the LLM (whole, or its
LoRA weights), the tokenizer and, where the run trained it, the encoder (a transformers folder
that `clip:` or `siglip:` loads), also renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from uvlm.errors import UvlmError
from uvlm.model.unified import UnifiedVLM
from uvlm.train.sharding import gather_state, is_sharded, scatter_state

DIGESTS = "digests.json"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:  # streamed: a 7B model's weights never sit in memory to be hashed
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (by relative path), the digests file excepted."""
    return {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != DIGESTS}


def verify_digests(folder: Path, what: str, fix: str) -> None:
    """Check `folder` against the digests written with it: a flipped bit in a weights file loads
    without error and silently changes a model. Folders written before digests pass unchecked."""
    path = folder / DIGESTS
    if not path.exists():
        return
    try:
        expected = json.loads(path.read_text())
    except ValueError:
        raise UvlmError(f"{path} is corrupt; {fix}") from None
    for name, digest in expected.items():
        f = folder / name
        if not f.is_file() or _sha256(f) != digest:
            raise UvlmError(f"{what} {f} is missing or corrupt (it does not match {DIGESTS}); {fix}")


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])


class Checkpointer:
    """Atomic step checkpoints of everything a bit-exact resume needs, on any number of processes.

    `save` and `load` are called by every rank; `barrier()` waits for all of them."""

    def __init__(self, folder: Path, keep: int, rank: int = 0, barrier=lambda: None):
        self.folder = folder
        self.keep = keep
        self.rank = rank
        self.barrier = barrier

    def latest(self) -> Path | None:
        done = sorted(p for p in self.folder.glob("step-*") if (p / "state.json").exists())
        return done[-1] if done else None

    def save(self, step: int, model: UnifiedVLM, optimizer, scheduler, extra: dict) -> None:
        staging = self.folder / f".staging-{step:07d}"
        if self.rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.barrier()
        torch.save(_rng_state(), staging / f"rng-{self.rank}.pt")
        sharded = is_sharded(model)
        if sharded:
            weights, optim_state = gather_state(model, optimizer)  # every rank takes part
        self.barrier()
        if self.rank == 0:
            try:
                if not sharded:
                    weights, optim_state = model.state_dict(), optimizer.state_dict()
                trainable = {n: weights[n].detach().cpu().contiguous() for n in trainable_names(model)}
                save_file(trainable, str(staging / "trainable.safetensors"))
                torch.save({"optimizer": optim_state, "scheduler": scheduler.state_dict()}, staging / "state.pt")
                (staging / DIGESTS).write_text(json.dumps(file_digests(staging)))
                (staging / "state.json").write_text(json.dumps({"step": step, **extra}))  # written last
                target = self.folder / f"step-{step:07d}"
                if target.exists():
                    shutil.rmtree(target)
                os.replace(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            for old in sorted(self.folder.glob("step-*"))[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()

    def load(self, path: Path, model: UnifiedVLM, optimizer, scheduler) -> dict:
        verify_digests(path, "checkpoint file", "delete the checkpoint to resume from the one before")
        sharded = is_sharded(model)
        reads_weights = not sharded or self.rank == 0  # a sharded model's state goes out from the main process
        try:
            trainable = load_file(str(path / "trainable.safetensors")) if reads_weights else {}
            # our own file: RNG states need pickle; mapped, so a process reads only what it uses
            state = torch.load(path / "state.pt", weights_only=False, mmap=True)
            info = json.loads((path / "state.json").read_text())
            own = path / f"rng-{self.rank}.pt"
            # checkpoints of one process written before per-rank files kept it in state.pt
            rng = torch.load(own, weights_only=False) if own.exists() else state.get("rng")
        except Exception as e:  # any unreadable piece means the same thing to the user
            raise UvlmError(f"checkpoint {path} is corrupt ({type(e).__name__}); delete it to resume "
                            "from the one before") from None
        if rng is None:
            raise UvlmError(f"checkpoint {path} was written by fewer processes than this run has; resume it "
                            "with as many processes as it was started with")
        missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in trainable]
        if missing and reads_weights:
            raise UvlmError(f"checkpoint {path} does not match this model (e.g. {missing[0]} missing)")
        if sharded:
            scatter_state(model, optimizer, trainable, state["optimizer"] if reads_weights else {})
        else:
            model.load_state_dict(trainable, strict=False)
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(rng)
        return info


def trainable_names(model: UnifiedVLM) -> list[str]:
    """The names of the trained parameters (a shared adapter under its first name only)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def save_final_weights(out: Path, model: UnifiedVLM, tokenizer, state: dict | None = None) -> None:
    """Adapters, head and fixed maps in one file; the LLM (full, or LoRA only) beside them.
    `state`: the model's whole state by name, where the model itself holds only shards."""
    weights = out / "weights"
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".weights-"))
    state = model.state_dict() if state is None else state
    # named_* keep the first name of a tensor registered twice: a shared adapter is stored once
    names = [n for n, _ in (*model.named_parameters(), *model.named_buffers())
             if not n.startswith(("llm.", "encoder.")) and n in state]  # in state: persistent buffers only
    vision = {n: state[n].detach().cpu().contiguous() for n in names}
    save_file(vision, str(tmp / "adapters.safetensors"))
    llm_state = {n.removeprefix("llm."): t for n, t in state.items() if n.startswith("llm.")}
    # LoRA: the adapter weights only; tiny: the whole model
    model.llm.save_pretrained(tmp / "llm", state_dict=llm_state)
    if model.encoder is not None:
        prefix = "encoder.tower."
        model.encoder.tower.save_pretrained(tmp / "encoder", state_dict={n.removeprefix(prefix): t for n, t in
                                                                         state.items() if n.startswith(prefix)})
        model.encoder.processor.save_pretrained(tmp / "encoder")
    tokenizer.save_pretrained(tmp / "tokenizer")
    (tmp / DIGESTS).write_text(json.dumps(file_digests(tmp)))
    if weights.exists():
        shutil.rmtree(weights)
    os.replace(tmp, weights)


def load_final_weights(model: UnifiedVLM, weights: Path, lora: bool, fix: str) -> None:
    """A run's final weights (its weights/ folder, as save_final_weights writes it) into `model`,
    built to the run's config: the LLM's (whole, or LoRA over the base the model was built from),
    then adapters and head, then a trained encoder's (when the folder holds one: a stage that
    starts from a run with a frozen encoder keeps the pretrained tower). The weights are copied
    into the model as built, so its dtype, attention and checkpointing stay the run's."""
    part = weights / "llm"
    try:
        if lora:
            from peft.utils import set_peft_model_state_dict

            part = weights / "llm" / "adapter_model.safetensors"
            set_peft_model_state_dict(model.llm, load_file(str(part)))
        else:
            state = _folder_state(part)
            missing, unexpected = model.llm.load_state_dict(state, strict=False)
            params = dict(model.llm.named_parameters(remove_duplicate=False))
            loaded = {params[k].data_ptr() for k in state if k in params}
            # a tied output layer is saved once, under the embedding's name
            if unexpected or not state or any(k not in params or params[k].data_ptr() not in loaded for k in missing):
                raise ValueError(f"{len(unexpected)} unexpected, {len(missing)} missing tensors")
        part = weights / "adapters.safetensors"
        model.load_state_dict(load_file(str(part)), strict=False)
        part = weights / "encoder"
        if model.encoder is not None and part.exists():
            model.encoder.tower.load_state_dict(_folder_state(part))
    except Exception as e:  # safetensors, torch and transformers each raise their own type for a bad file
        raise UvlmError(f"the weights {part} are missing or corrupt ({type(e).__name__}); {fix}") from None


def _folder_state(folder: Path) -> dict:
    """Every tensor of a transformers folder's safetensors files (one file or shards), by name."""
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
