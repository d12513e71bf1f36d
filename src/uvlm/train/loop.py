"""The training loop: plain, on accelerate, resumable to the bit.

One optimizer step sees `global_batch` records (micro-batches of `batch_size`, gradients
accumulated). The record order is a seeded permutation per epoch, so step k's records are
known without replaying the data: resuming only needs the step, the weights, the optimizer,
the scheduler and the RNG states, which every checkpoint holds.

Run folder:
    config.yaml            the resolved config
    metrics.jsonl          one line per step ("train") and per evaluation point ("eval")
    tb/                    TensorBoard
    checkpoints/step-N/    trainable weights, optimizer, scheduler, RNG, state (atomic)
    weights/               final weights: adapters.safetensors, llm/ (full or LoRA), tokenizer/
    final.json             written last: the run is complete; its train_seconds include the
                           steps before any resume
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file, save_file
from torch.utils.tensorboard import SummaryWriter
from transformers import get_cosine_schedule_with_warmup
from transformers.utils import logging as hf_logging

from uvlm.device import placement
from uvlm.errors import UvlmError
from uvlm.io import atomic_write_json, atomic_write_text, exclusive, make_folder
from uvlm.model.names import parse_name
from uvlm.model.prompt import GENERATE, IGNORE
from uvlm.model.unified import UnifiedVLM
from uvlm.train.build import RunParts, build_model, build_tokenizer, load_spaces, prompt_encoder
from uvlm.train.config import RunConfig, from_dict
from uvlm.train.data import RecordSet, collate, load_record_set, resolve_dataset
from uvlm.train.memory import micro_batch_size, out_of_memory_named


def stream_indices(n: int, seed: int, start: int, stop: int) -> list[int]:
    """Records at positions [start, stop) of the endless stream of seeded epoch permutations."""
    out = []
    pos = start
    while pos < stop:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = min(stop - pos, n - offset)
        out += perm[offset:offset + take].tolist()
        pos += take
    return out


class Checkpointer:
    """Atomic step checkpoints of everything a bit-exact resume needs."""

    def __init__(self, folder: Path, keep: int):
        self.folder = folder
        self.keep = keep

    def latest(self) -> Path | None:
        done = sorted(p for p in self.folder.glob("step-*") if (p / "state.json").exists())
        return done[-1] if done else None

    def save(self, step: int, model: UnifiedVLM, optimizer, scheduler, extra: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=".tmp-"))
        try:
            trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(trainable, str(tmp / "trainable.safetensors"))
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                "python": random.getstate(),
                                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}},
                       tmp / "state.pt")
            (tmp / "state.json").write_text(json.dumps({"step": step, **extra}))  # written last
            target = self.folder / f"step-{step:07d}"
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in sorted(self.folder.glob("step-*"))[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def load(path: Path, model: UnifiedVLM, optimizer, scheduler) -> dict:
        try:
            trainable = load_file(str(path / "trainable.safetensors"))
            state = torch.load(path / "state.pt", weights_only=False)  # our own file: RNG states need pickle
            info = json.loads((path / "state.json").read_text())
        except Exception as e:  # any unreadable piece means the same thing to the user
            raise UvlmError(f"checkpoint {path} is corrupt ({type(e).__name__}); delete it to resume "
                            "from the one before") from None
        missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in trainable]
        if missing:
            raise UvlmError(f"checkpoint {path} does not match this model (e.g. {missing[0]} missing)")
        model.load_state_dict(trainable, strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        return info


def _prepare_folder(out: Path, cfg: RunConfig, resume: bool) -> None:
    resolved = out / "config.yaml"
    if resolved.exists():
        previous = yaml.safe_load(resolved.read_text())
        if from_dict(previous).identity() != cfg.identity():
            raise UvlmError(f"{out} holds a run with another config; choose another --out or delete it")
        if (out / "final.json").exists():
            return
        if not resume:
            raise UvlmError(f"{out} holds an unfinished run; add --resume to continue it")
    elif any(out.iterdir()):  # train() made the folder
        raise UvlmError(f"{out} is not empty and holds no uvlm run; choose another --out")
    atomic_write_text(resolved, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _log(out: Path, line: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


def _truncate_metrics(out: Path, step: int) -> list[dict]:
    """Drop log lines a killed run wrote after its last checkpoint; return the kept train lines."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    keep = [(ln, e) for ln in path.read_text().splitlines() if ln and (e := json.loads(ln))["step"] <= step]
    atomic_write_text(path, "".join(ln + "\n" for ln, _ in keep))
    return [e for _, e in keep if e["event"] == "train"]


def _seconds_of(steps: list[dict], global_batch: int, total_records: int) -> float:
    """The seconds that the steps a resumed run keeps took, so a resume does not hide them from
    its cost. Lines logged before they had "seconds" give the step's records over its samples/s."""
    return sum(e["seconds"] if "seconds" in e else
               (min(e["step"] * global_batch, total_records) - (e["step"] - 1) * global_batch) / e["samples_per_s"]
               for e in steps)


@torch.no_grad()
def validation_loss(model: UnifiedVLM, data: RecordSet, pad_id: int, batch_size: int, device,
                    autocast: Callable[[], AbstractContextManager] = nullcontext) -> dict:
    """Mean losses over a fixed validation slice: the text loss per answer token and the image
    loss per generation slot, each over the batches that have any (a VQA-only batch has no
    image loss to average in), and their weighted sum as in training."""
    model.eval()
    sums = {"text_loss": 0.0, "image_loss": 0.0}
    counts = {"text_loss": 0, "image_loss": 0}
    for start in range(0, len(data), batch_size):
        batch = collate(data, list(range(start, min(start + batch_size, len(data)))), pad_id)
        with autocast():
            out = model(batch.to(device))
        n = {"text_loss": int((batch.labels[:, 1:] != IGNORE).sum()),
             "image_loss": int((batch.kinds == GENERATE).sum())}
        for k in sums:
            sums[k] += float(out[k]) * n[k]
            counts[k] += n[k]
    model.train()
    means = {k: sums[k] / counts[k] if counts[k] else 0.0 for k in sums}
    means["loss"] = means["text_loss"] + model.image_loss_weight * means["image_loss"]
    return {f"val_{k}": means[k] for k in ("loss", "text_loss", "image_loss")}


def save_final_weights(out: Path, model: UnifiedVLM, tokenizer) -> None:
    """Adapters, head and fixed maps in one file; the LLM (full, or LoRA only) beside them."""
    weights = out / "weights"
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".weights-"))
    vision, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if name.startswith("llm.") or tensor.data_ptr() in seen:  # a shared adapter is stored once
            continue
        seen.add(tensor.data_ptr())
        vision[name] = tensor.detach().cpu().contiguous()
    save_file(vision, str(tmp / "adapters.safetensors"))
    model.llm.save_pretrained(tmp / "llm")  # LoRA: the adapter weights only; tiny: the whole model
    tokenizer.save_pretrained(tmp / "tokenizer")
    if weights.exists():
        shutil.rmtree(weights)
    os.replace(tmp, weights)


EvalPoint = Callable[[UnifiedVLM, RunParts, int], dict]


def train(cfg: RunConfig, out: Path, resume: bool = False, progress=None, eval_point: EvalPoint | None = None) -> dict:
    """Train the run of `cfg` into `out`; return the final summary (also written to final.json).
    A second `uvlm train` into the same folder fails while this one runs.

    `eval_point(model, parts, samples)` adds metrics at each evaluation point (`uvlm train`
    passes the evaluator's, uvlm.eval.evaluate.eval_point); without it they log validation
    losses only."""
    out = Path(out)
    make_folder(out, "run")
    # Under `accelerate launch` every rank trains into `out`; the main one holds the lock.
    main_rank = os.environ.get("RANK", "0") == "0"
    with exclusive(out, "`uvlm train`") if main_rank else nullcontext():
        _prepare_folder(out, cfg, resume)
        return _train(cfg, out, resume, progress, eval_point)


def _train(cfg: RunConfig, out: Path, resume: bool, progress, eval_point: EvalPoint | None) -> dict:
    if (out / "final.json").exists():
        return json.loads((out / "final.json").read_text())
    began = time.perf_counter()
    t = cfg.train
    torch.set_num_threads(t.threads)
    random.seed(t.seed)
    np.random.seed(t.seed)
    arch = parse_name(cfg.model.name)

    place = placement(t.precision)
    # one Accelerator per run; a process that trains twice (tests, notebooks) may change precision
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=place.accelerate_precision, cpu=place.device.type == "cpu")

    in_space, out_space = load_spaces(cfg, arch, place)
    hf_logging.disable_progress_bar()
    tokenizer = build_tokenizer(cfg)
    prompts = prompt_encoder(cfg, tokenizer, in_space, out_space)
    train_set = load_record_set(resolve_dataset(cfg.data.train, "train"), arch, prompts, in_space, out_space,
                                feature_dtype=cfg.data.feature_dtype)
    test_root = resolve_dataset(cfg.data.test, "test")
    val_tasks = {"understanding": ("vqa",), "generation": ("generation",), "both": ("vqa", "generation")}
    val_set = load_record_set(test_root, arch, prompts, in_space, out_space, val_tasks[arch.tasks],
                              limit=t.eval_samples, feature_dtype=cfg.data.feature_dtype) if t.eval_points else None

    parts = RunParts(tokenizer, prompts, in_space, out_space, test_root, place)
    model = build_model(cfg, in_space, out_space, tokenizer, place)
    model.fit_standardization(train_set.und_features, train_set.gen_targets)  # deterministic: redone on resume
    adapter_ids = {id(p) for p in model.adapter_parameters()}
    llm_params = [p for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids]
    optimizer = torch.optim.AdamW([{"params": llm_params, "lr": t.lr},
                                   {"params": model.adapter_parameters(), "lr": t.adapter_lr}],
                                  weight_decay=t.weight_decay)
    global_batch = t.global_batch or t.batch_size
    total_records = math.ceil(t.epochs * len(train_set))
    total_steps = math.ceil(total_records / global_batch)
    # floor: a run shorter than its warmup still learns (smoke tests)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps), total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    checkpoints = Checkpointer(out / "checkpoints", t.keep_checkpoints)
    start_step, seconds_before = 0, 0.0
    last: dict = {}
    latest = checkpoints.latest() if resume else None
    if latest is not None:
        start_step = Checkpointer.load(latest, unwrapped, optimizer, scheduler)["step"]
        kept = _truncate_metrics(out, start_step)
        seconds_before, last = _seconds_of(kept, global_batch, total_records), (kept[-1] if kept else {})
    elif (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    writer = SummaryWriter(str(out / "tb"), purge_step=start_step)
    eval_steps = {round(total_steps * k / t.eval_points) for k in range(1, t.eval_points + 1)}
    pad_id = tokenizer.pad_token_id
    rank, world = accelerator.process_index, accelerator.num_processes
    micro_size = micro_batch_size(cfg, model, train_set, pad_id, accelerator)

    model.train()
    tick = time.perf_counter()
    for step in range(start_step, total_steps):
        records = stream_indices(len(train_set), t.seed, step * global_batch,
                                 min((step + 1) * global_batch, total_records))
        mine = records[rank::world]
        micro = [mine[i:i + micro_size] for i in range(0, len(mine), micro_size)]
        optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "text_loss": 0.0, "image_loss": 0.0}
        for k, idx in enumerate(micro):
            batch = collate(train_set, idx, pad_id).to(accelerator.device)
            sync = k == len(micro) - 1
            with out_of_memory_named(micro_size), accelerator.autocast(), \
                    (accelerator.no_sync(model) if not sync else nullcontext()):
                losses = model(batch)
                weight = len(idx) / len(mine)
                accelerator.backward(losses["loss"] * weight)
            for key in sums:
                sums[key] += losses[key].item() * weight
        accelerator.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        done = step + 1
        elapsed = time.perf_counter() - tick
        tick = time.perf_counter()
        last = {"event": "train", "step": done, **{k: round(v, 6) for k, v in sums.items()},
                "lr": scheduler.get_last_lr()[0], "samples_per_s": round(len(records) / elapsed, 2),
                "seconds": round(elapsed, 4)}
        if accelerator.is_main_process:
            _log(out, last)
            for key in sums:
                writer.add_scalar(f"train/{key}", sums[key], done)
        if done in eval_steps and val_set is not None and accelerator.is_main_process:
            val = {k: round(v, 6) for k, v in validation_loss(unwrapped, val_set, pad_id, micro_size,
                                                              accelerator.device, accelerator.autocast).items()}
            if t.eval_metrics and eval_point is not None:
                val.update(eval_point(unwrapped, parts, t.eval_samples))
            _log(out, {"event": "eval", "step": done, **val})
            for key, v in val.items():
                if isinstance(v, int | float):
                    writer.add_scalar(f"eval/{key}", v, done)
        if (done % t.checkpoint_every == 0 or done == total_steps) and accelerator.is_main_process:
            checkpoints.save(done, unwrapped, optimizer, scheduler, {"total_steps": total_steps})
        if progress:
            progress(done, total_steps, f"loss {sums['loss']:.3f}  {last['samples_per_s']:.0f} samples/s")
    writer.close()
    if not accelerator.is_main_process:
        return {}
    save_final_weights(out, unwrapped, tokenizer)
    summary = {"steps": total_steps, "records": total_records, "train_records": len(train_set),
               "final": last, "model": arch.name,
               "resumed_from_step": start_step,
               "train_seconds": round(time.perf_counter() - began + seconds_before, 1)}
    atomic_write_json(out / "final.json", summary)
    return summary


def load_run_config(out: Path) -> RunConfig:
    """The resolved config of a run folder."""
    path = Path(out) / "config.yaml"
    if not path.exists():
        raise UvlmError(f"{out} holds no run (missing config.yaml)")
    return from_dict(yaml.safe_load(path.read_text()))
