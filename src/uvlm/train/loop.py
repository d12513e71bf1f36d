"""The training loop: plain, on accelerate, on one process or many, resumable to the bit.

One optimizer step sees `global_batch` records. The record order is a seeded permutation per
epoch (or, with `train.record_order: modality`, a seeded order of steps each all with images
or all without), so step k's records are known without replaying the data: resuming needs only
the step, the weights, the optimizer, the scheduler and the RNG states, which every checkpoint
holds.

Under `accelerate launch` or `torchrun`, process r takes records r, r + N, ... of each step and
runs them in micro-batches of `micro_batch` (gradients accumulated, synchronised once per step).
Losses are means over the whole global batch, every answer token and every generation slot
weighing the same whatever micro-batch or process it fell into, so a run gives the same result
(to float rounding) on any number of processes and at any micro-batch size. The main process
prepares the run folder and builds the datasets, feature caches and judge while the others wait; a
process left without records in a short last step joins the step at weight 0. With
`train.sharding: fsdp` the model is sharded across the processes (uvlm.train.sharding); the loop
is otherwise the same.

Run folder:
    config.yaml            the resolved config
    metrics.jsonl          one line per step ("train") and per evaluation point ("eval")
    tb/                    TensorBoard
    checkpoints/step-N/    trainable weights, optimizer, scheduler, RNG of every process, state
    weights/               final weights: adapters.safetensors, llm/ (full or LoRA), tokenizer/
    final.json             written last: the run is complete; its train_seconds include the
                           steps before any resume; `encoders` names the fingerprints of the
                           encoder weights it read (stand-ins are rebuilt per machine)
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from torch.utils.tensorboard import SummaryWriter
from transformers.utils import logging as hf_logging

from uvlm.device import placement, process_state, require_device
from uvlm.errors import UvlmError
from uvlm.io import (
    atomic_write_json,
    atomic_write_text,
    exclusive,
    make_folder,
    read_text_file,
    sweep_temporaries,
)
from uvlm.model.names import parse_name
from uvlm.model.prompt import GENERATE, IGNORE
from uvlm.model.unified import UnifiedVLM
from uvlm.progress import rate
from uvlm.train.build import (
    RunParts,
    build_model,
    build_tokenizer,
    load_spaces,
    lora_in_run_dtype,
    manifest_style,
    prompt_encoder,
)
from uvlm.train.checkpoint import Checkpointer, load_final_weights, save_final_weights, verify_digests
from uvlm.train.config import FSDP_NOT_FP16, RunConfig, from_dict
from uvlm.train.data import RecordSet, collate, face_folders, load_record_set, micro_batches, resolve_dataset
from uvlm.train.memory import check_host_memory, checkpointing_for, micro_batch_size, out_of_memory_named
from uvlm.train.sharding import gather_weights, gathered, shard

EvalPoint = Callable[[UnifiedVLM, RunParts, int], dict]
VAL_TASKS = {"understanding": ("vqa",), "generation": ("generation",), "both": ("vqa", "generation")}


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate rises linearly over `warmup` steps, then falls along half a cosine to 0 at
    `total` (the values of transformers' get_cosine_schedule_with_warmup, to the bit, without
    importing its trainer utilities, which import peft: seconds in every `uvlm train` and `eval`)."""

    def factor(step: int) -> float:
        if step < warmup:
            return float(step) / float(max(1, warmup))
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def stream_indices(n: int, seed: int, start: int, stop: int,
                   epoch_order: Callable[[torch.Generator], list[int]] | None = None) -> list[int]:
    """Records at positions [start, stop) of the endless stream of seeded epoch orders: each epoch
    a permutation of the n records, `epoch_order(generator)`'s (default: a random one)."""
    out = []
    pos = start
    while pos < stop:
        epoch, offset = divmod(pos, n)
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = epoch_order(generator) if epoch_order else torch.randperm(n, generator=generator).tolist()
        take = min(stop - pos, n - offset)
        out += order[offset:offset + take]
        pos += take
    return out


def modality_order(with_image: np.ndarray, step: int) -> Callable[[torch.Generator], list[int]]:
    """An epoch order whose steps of `step` records are each all records with an image (shown or
    generated) or all without (LLaVA's group_by_modality_length, by global batch): each kind
    shuffled and cut into steps, the steps shuffled, and the two kinds' leftovers together at the
    epoch's end, as LLaVA's last megabatch. Steps line up with the grouping only where an epoch
    is a whole number of steps (the stream runs on across epochs; LLaVA trains one)."""
    kinds = [np.flatnonzero(with_image), np.flatnonzero(~with_image)]

    def order(generator: torch.Generator) -> list[int]:
        steps, rest = [], []
        for members in kinds:
            shuffled = members[torch.randperm(len(members), generator=generator).numpy()].tolist()
            whole = len(shuffled) // step * step
            steps += [shuffled[i:i + step] for i in range(0, whole, step)]
            rest += shuffled[whole:]
        return [i for k in torch.randperm(len(steps), generator=generator).tolist() for i in steps[k]] + rest

    return order


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
    """Drop log lines a killed run wrote after its last checkpoint (and a last line it was
    killed while writing); return the kept train lines."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            if entry["step"] > step:
                break
        except (ValueError, KeyError, TypeError):  # written in part when the run was killed: what follows is lost
            break
        keep.append((line, entry))
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
    sums = {"text": 0.0, "image": 0.0}
    counts = {"text": 0, "image": 0}
    for start in range(0, len(data), batch_size):
        batch = collate(data, list(range(start, min(start + batch_size, len(data)))), pad_id)
        with autocast():
            out = model(batch.to(device))
        for k in sums:
            sums[k] += float(out[f"{k}_sum"])
        counts["text"] += out["n_text"]
        counts["image"] += out["n_slots"]
    model.train()
    means = {k: sums[k] / counts[k] if counts[k] else 0.0 for k in sums}
    return {"val_loss": means["text"] + model.image_loss_weight * means["image"], "val_text_loss": means["text"],
            "val_image_loss": means["image"]}


def step_counts(data: RecordSet, records: list[int]) -> tuple[int, int]:
    """Answer tokens and generation slots of a whole global batch: the denominators of its means."""
    text = sum(int((data.encoded[i].labels[1:] != IGNORE).sum()) for i in records)
    slots = sum(int((data.encoded[i].kinds[1:] == GENERATE).sum()) for i in records)
    return text, slots


def prepare_inputs(cfg: RunConfig, judge: bool = False) -> None:
    """Build what every process will read (datasets, encoders' feature caches and, with `judge`, the
    judge of the output space the evaluation points use), once, on the main process, so the others
    find them whole (a cold cache is never built twice at once) and no step's time includes them."""
    arch = parse_name(cfg.model.name)
    faces = face_folders(cfg.data.train, cfg.data.test)
    in_space, out_space = load_spaces(cfg, arch, faces=faces)
    from uvlm.vision.cache import cached_features
    from uvlm.vision.judge import output_judge

    roots = faces or (resolve_dataset(cfg.data.train, "train"), resolve_dataset(cfg.data.test, "test"))
    for role, root in zip(("train", "test"), roots, strict=True):
        # a trained encoder reads pixels: no cache of its starting features is needed
        spaces = (out_space,) if cfg.train.train_encoder else (in_space, out_space)
        for space in {id(s): s for s in spaces if s is not None}.values():
            dtype = cfg.data.feature_dtype if role == "train" else "float32"
            cached_features(space, root, dtype=dtype)
    if judge and out_space is not None:
        output_judge(out_space, None if faces else manifest_style(roots[1]), faces)


def train(cfg: RunConfig, out: Path, resume: bool = False, progress=None, eval_point: EvalPoint | None = None) -> dict:
    """Train the run of `cfg` into `out`; return the final summary (also written to final.json), on
    every process. A second `uvlm train` into the same folder fails while this one runs.

    `eval_point(model, parts, samples)` adds metrics at each evaluation point (`uvlm train`
    passes the evaluator's, uvlm.eval.evaluate.eval_point); without it they log validation
    losses only."""
    out = Path(out)
    require_device(cfg.train.device)  # before any process group or file
    state = process_state(cfg.train.precision)
    main = state.is_main_process
    if eval_point is not None and cfg.train.eval_metrics and cfg.train.eval_points:
        from uvlm.train.data import dataset_domain

        if dataset_domain(cfg.data.train) == "llava":
            raise UvlmError("evaluation points score SmartWatch and CelebA test sets, not LLaVA's: set "
                            "train.eval_metrics=false (validation losses still log), and score the run with "
                            "`uvlm llava eval`")
    if main:
        check_host_memory(cfg)
        make_folder(out, "run")
    with exclusive(out, "`uvlm train`") if main else nullcontext():
        fresh = main and not (out / "config.yaml").exists()
        if main:
            sweep_temporaries(out)
        try:
            if main:
                _prepare_folder(out, cfg, resume)
                if (out / "final.json").exists():  # finished: nothing to train, but say if its weights are lost
                    verify_digests(out / "weights", "final weights file", f"delete {out} and run the same "
                                   "command again to train it anew")
                else:
                    t = cfg.train
                    prepare_inputs(cfg, judge=eval_point is not None and t.eval_metrics and t.eval_points > 0)
            state.wait_for_everyone()
            if not (out / "final.json").exists():
                _train(cfg, out, resume, progress, eval_point, state)
        except UvlmError:
            if fresh and not Checkpointer(out / "checkpoints", 1).latest():
                _undo_start(out)  # bad input found before the first checkpoint: the folder is as it was
            raise
        state.wait_for_everyone()
    return json.loads((out / "final.json").read_text())


def _undo_start(out: Path) -> None:
    """Remove what a run that failed before its first checkpoint wrote into a fresh folder, so the
    corrected command starts clean instead of being told to --resume."""
    import shutil

    for name in ("config.yaml", "metrics.jsonl"):
        (out / name).unlink(missing_ok=True)
    for name in ("tb", "checkpoints"):
        shutil.rmtree(out / name, ignore_errors=True)


def _train(cfg: RunConfig, out: Path, resume: bool, progress, eval_point: EvalPoint | None,
           state: PartialState) -> None:
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
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process

    faces = face_folders(cfg.data.train, cfg.data.test)  # a CelebA run's folders, resolved once
    in_space, out_space = load_spaces(cfg, arch, place, faces)
    hf_logging.disable_progress_bar()
    tokenizer = build_tokenizer(cfg)
    prompts = prompt_encoder(cfg, tokenizer, in_space, out_space)
    train_root, test_root = faces or (resolve_dataset(cfg.data.train, "train"), resolve_dataset(cfg.data.test, "test"))
    train_set = load_record_set(train_root, arch, prompts, in_space, out_space, feature_dtype=cfg.data.feature_dtype,
                                max_tokens=t.max_tokens, pixels=t.train_encoder)
    val_set = load_record_set(test_root, arch, prompts, in_space, out_space, VAL_TASKS[arch.tasks],
                              limit=t.eval_samples, max_tokens=t.max_tokens,
                              pixels=t.train_encoder) if t.eval_points and main else None
    parts = RunParts(tokenizer, prompts, in_space, out_space, test_root, place, faces)
    # which encoder bytes the run read (stand-ins are rebuilt per machine), before any trains
    encoders = {role: space.fingerprint for role, space in (("input", in_space), ("output", out_space))
                if space is not None}

    cfg = checkpointing_for(cfg, train_set, out_space, accelerator)  # `auto`: decided by the memory plan
    model = build_model(cfg, in_space, out_space, tokenizer, place)
    if t.init_from:  # a stage that starts where another run ended, its fitted maps included
        start_from(model, Path(t.init_from), cfg)
    else:
        model.fit_standardization(train_set.und_features, train_set.gen_targets)  # deterministic: redone on resume
    if t.freeze_llm:  # the adapters and the generation head train alone
        model.llm.requires_grad_(False)
    if t.compile:  # the decoder (what the model runs), in place: parameter names, so checkpoints, stay
        model.llm.get_decoder().compile(dynamic=True)
    sharded = _sharded(cfg, accelerator, place.precision)
    if sharded:
        shard(model)  # before the optimizer: sharding replaces the parameters
    adapter_ids = {id(p) for p in model.adapter_parameters()}
    llm_params = [p for p in model.parameters() if p.requires_grad and id(p) not in adapter_ids]
    optimizer = torch.optim.AdamW([{"params": llm_params, "lr": t.lr},
                                   {"params": model.adapter_parameters(), "lr": t.adapter_lr}],
                                  weight_decay=t.weight_decay)
    global_batch = t.global_batch or t.batch_size
    epoch_order = None
    if t.record_order == "modality":
        epoch_order = modality_order(train_set.image_rows >= 0, global_batch)
    total_records = math.ceil(t.epochs * len(train_set))
    total_steps = math.ceil(total_records / global_batch)
    # floor: a run shorter than its warmup still learns (smoke tests). Not handed to accelerate,
    # which would step it once per process: it steps once per optimizer step.
    scheduler = cosine_with_warmup(optimizer, int(t.warmup_ratio * total_steps), total_steps)
    if not sharded and accelerator.distributed_type != DistributedType.FSDP:  # never accelerate's own FSDP
        model, optimizer = accelerator.prepare(model, optimizer)
    elif not sharded:
        model.to(accelerator.device)
    unwrapped = accelerator.unwrap_model(model)

    checkpoints = Checkpointer(out / "checkpoints", t.keep_checkpoints, rank, accelerator.wait_for_everyone)
    start_step, seconds_before = 0, 0.0
    last: dict = {}
    latest = checkpoints.latest() if resume else None
    if latest is not None:
        start_step = checkpoints.load(latest, unwrapped, optimizer, scheduler)["step"]
        if main:
            kept = _truncate_metrics(out, start_step)
            seconds_before, last = _seconds_of(kept, global_batch, total_records), (kept[-1] if kept else {})
    elif main and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    writer = SummaryWriter(str(out / "tb"), purge_step=start_step) if main else None
    eval_steps = {round(total_steps * k / t.eval_points) for k in range(1, t.eval_points + 1)}
    pad_id = tokenizer.pad_token_id
    # a sharded model's trial forward would have to fail or pass on every process alike: the plan is taken as is
    micro_size = micro_batch_size(cfg, model, train_set, pad_id, accelerator, confirm=not sharded)
    weight = unwrapped.image_loss_weight

    model.train()
    tick = time.perf_counter()
    for step in range(start_step, total_steps):
        records = stream_indices(len(train_set), t.seed, step * global_batch,
                                 min((step + 1) * global_batch, total_records), epoch_order)
        n_text, n_slots = step_counts(train_set, records)
        mine = records[rank::world]
        # Every process runs as many micro-batches as the one with the most records (a sharded
        # model gathers its weights in every forward, all processes together); a process short of
        # records (a short last step, an uneven split) fills in with a record at weight 0.
        n_micro = math.ceil(math.ceil(len(records) / world) / micro_size)
        micro = micro_batches(train_set, mine, micro_size, n_micro)
        optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        for k, idx in enumerate(micro):
            scale = 1.0 if idx else 0.0
            batch = collate(train_set, idx or records[:1], pad_id).to(accelerator.device)
            sync = k == len(micro) - 1  # DDP all-reduces once a step; FSDP reduce-scatters every micro-batch
            with out_of_memory_named(micro_size), accelerator.autocast(), lora_in_run_dtype(unwrapped), \
                    (accelerator.no_sync(model) if not sync and not sharded else nullcontext()):
                out_ = model(batch)
                # sums over the global batch's tokens and slots; data parallelism averages over processes
                loss = out_["text_sum"] / max(n_text, 1) + weight * out_["image_sum"] / max(n_slots, 1)
                accelerator.backward(loss * scale * world)
            sums += scale * torch.stack([out_["text_sum"].detach(), out_["image_sum"].detach()]).double()
        if sharded:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        else:
            accelerator.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        done = step + 1
        totals = accelerator.reduce(sums, reduction="sum").tolist() if world > 1 else sums.tolist()
        text_loss, image_loss = totals[0] / max(n_text, 1), totals[1] / max(n_slots, 1)
        losses = {"loss": text_loss + weight * image_loss, "text_loss": text_loss, "image_loss": image_loss}
        elapsed = time.perf_counter() - tick
        tick = time.perf_counter()
        last = {"event": "train", "step": done, **{k: round(v, 6) for k, v in losses.items()},
                "lr": scheduler.get_last_lr()[0], "samples_per_s": round(len(records) / elapsed, 2),
                "seconds": round(elapsed, 4)}
        if main:
            _log(out, last)
            for key, v in losses.items():
                writer.add_scalar(f"train/{key}", v, done)
        if done in eval_steps and t.eval_points:
            # the main process evaluates; a sharded model is first gathered whole, all processes together
            with gathered(model) if sharded else nullcontext():
                if main:
                    val = validation_loss(unwrapped, val_set, pad_id, micro_size, accelerator.device,
                                          accelerator.autocast)
                    val = {k: round(v, 6) for k, v in val.items()}
                    if t.eval_metrics and eval_point is not None:
                        if t.train_encoder:  # its test features are the tower's as trained so far
                            in_space.weights_changed()
                        val.update(eval_point(unwrapped, parts, t.eval_samples))
                    _log(out, {"event": "eval", "step": done, **val})
                    for key, v in val.items():
                        if isinstance(v, int | float):
                            writer.add_scalar(f"eval/{key}", v, done)
        if done % t.checkpoint_every == 0 or done == total_steps:
            checkpoints.save(done, unwrapped, optimizer, scheduler, {"total_steps": total_steps, "processes": world})
        if progress and main:
            progress(done, total_steps, f"loss {losses['loss']:.3f}  {rate(last['samples_per_s'])} samples/s")
    state = gather_weights(model) if sharded else None  # every rank takes part
    if not main:
        return
    writer.close()
    save_final_weights(out, unwrapped, tokenizer, state)
    summary = {"steps": total_steps, "records": total_records, "train_records": len(train_set),
               "final": last, "model": arch.name, "processes": world, "micro_batch": micro_size,
               "gradient_checkpointing": cfg.train.gradient_checkpointing,
               "resumed_from_step": start_step,
               # which encoder bytes the run started from: runs that are compared should name the same ones
               "encoders": encoders, **({"encoder_trained": True} if t.train_encoder else {}),
               "train_seconds": round(time.perf_counter() - began + seconds_before, 1)}
    atomic_write_json(out / "final.json", summary)


def start_from(model: UnifiedVLM, run: Path, cfg: RunConfig) -> None:
    """The final weights of the finished run `run` into `model`, which `cfg` builds: the run must
    be of the same model and LLM (LLaVA's stage 2 starts from its stage 1)."""
    if not (run / "final.json").exists():
        raise UvlmError(f"train.init_from {run} is not a finished run (no final.json); finish it first "
                        "(`uvlm train --resume`)")
    before = load_run_config(run)
    for key in ("name", "llm"):
        if getattr(before.model, key) != getattr(cfg.model, key):
            raise UvlmError(f"train.init_from {run} trained model.{key} {getattr(before.model, key)!r}, this run "
                            f"{getattr(cfg.model, key)!r}; start from a run of the same model")
    if before.model.lora_r > 0 and cfg.model.lora_r == 0:
        raise UvlmError(f"train.init_from {run} holds LoRA weights; this run trains the whole LLM (lora_r: 0): "
                        "merge them first, or start from a run without LoRA")
    verify_digests(run / "weights", "weights file", f"retrain {run}")
    load_final_weights(model, run / "weights", lora=before.model.lora_r > 0, fix=f"retrain {run}")


def _sharded(cfg: RunConfig, accelerator: Accelerator, precision: str) -> bool:
    """Whether this run shards its model: `train.sharding: fsdp` on more than one process (on one
    there is nothing to shard across, and the run trains as an unsharded one)."""
    if cfg.train.sharding == "none":
        if accelerator.distributed_type == DistributedType.FSDP:
            raise UvlmError("this launch asks for FSDP but the run config has train.sharding: none; add "
                            "--set train.sharding=fsdp (or launch with configs/accelerate/ddp.yaml)")
        return False
    if precision == "fp16":
        raise UvlmError(FSDP_NOT_FP16)  # train.precision: auto on a GPU without bf16
    return accelerator.num_processes > 1


def load_run_config(out: Path) -> RunConfig:
    """The resolved config of a run folder."""
    path = Path(out) / "config.yaml"
    if not path.exists():
        raise UvlmError(f"{out} holds no run (missing config.yaml)")
    try:
        return from_dict(yaml.safe_load(read_text_file(path, "run config", "the config.yaml uvlm train wrote")))
    except (yaml.YAMLError, TypeError, AttributeError):
        raise UvlmError(f"run config {path} is corrupt; restore it or train the run again") from None
