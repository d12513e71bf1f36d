"""Turn a model into the numbers of the paper's tables, on the whole test set.

- VQA: every test question, decoded greedily, scored with the paper's rules; per attribute
  and pooled; the distribution of answers per attribute is kept (a model that answers one
  constant word scores chance and should be seen doing it).
- Generation (every output space): the judge reads the generated images (VQ, decoded to
  pixels) or embeddings (SigLIP) and its answers are scored against the attributes the
  prompt named; domain FID/KID against the test images for pixel outputs. Beside them, what
  the judge gives real, shuffled, constant and (VQ) reconstructed images for the same prompts.
- Chance: what a random and the best constant answer score on the same questions.

`evaluate_model` works on a model in memory (the training loop's evaluation points);
`evaluate_run` loads a run folder and writes metrics.json, answers.jsonl and generated/.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from uvlm.data.folder import read_records
from uvlm.errors import UvlmError
from uvlm.eval.chance import chance
from uvlm.eval.decode import Sampling, decode_batch
from uvlm.eval.vqa import FACE_COLUMNS, aggregate, score_answer, true_answer
from uvlm.io import atomic_write_bytes, atomic_write_json, atomic_write_text, exclusive, sweep_temporaries
from uvlm.model.names import parse_name
from uvlm.model.unified import UnifiedVLM
from uvlm.progress import progress
from uvlm.train.build import RunParts, load_spaces
from uvlm.train.data import face_folders, resolve_dataset
from uvlm.train.load import load_trained
from uvlm.train.loop import load_run_config
from uvlm.vision.cache import cached_features, dataset_images
from uvlm.vision.space import load_images

METRICS_SCHEMA = {
    "vqa": ["time_acc", "weather_acc", "position_acc", "battery_acc", "total_acc", "n"],
    "gen": ["judge", "fid", "kid", "n"],
}


@dataclass
class EvalContext(RunParts):
    """What evaluation needs besides the model: the run's parts and the judge of its output space."""

    judge: object | None = None  # uvlm.vision.judge.output_judge's, loaded by `loaded_judge` on first use
    compile_decoding: bool = False  # image generation's decode step through torch.compile (train.compile)

    @classmethod
    def of(cls, parts: RunParts, compile_decoding: bool = False) -> EvalContext:
        return cls(parts.tokenizer, parts.prompts, parts.in_space, parts.out_space, parts.test_root, parts.place,
                   parts.faces, compile_decoding=compile_decoding)

    def loaded_judge(self):
        """The judge for the output space, loaded (or trained and cached) on first use: for a
        CelebA run, trained on its train folder's faces."""
        from uvlm.vision.judge import output_judge

        if self.judge is None:
            judge = output_judge(self.out_space, None if self.faces else self.style(), self.faces)
            self.judge = judge.to(self.place.device) if self.out_space.discrete else judge  # pixel judges are CNNs
        return self.judge


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def vqa_answers(model: UnifiedVLM, ctx: EvalContext, records: list[dict], batch_size: int = 64) -> list[dict]:
    """Greedy answers to single-turn VQA records, with what the scorer needs."""
    tok = ctx.tokenizer
    images = {name: i for i, name in enumerate(dataset_images(ctx.test_root))}
    features = cached_features(ctx.in_space, ctx.test_root)["features"]
    rows: list[dict] = []
    update = progress(f"answering {len(records)} questions", len(records))
    for chunk in _batches(records, batch_size):
        update(len(rows))
        prompts = [ctx.prompts.encode(r["conversations"][:1]) for r in chunk]
        feats = torch.cat([features[images[r["image"]]] for r in chunk])
        outs = decode_batch(model, prompts, feats, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                            boi_id=ctx.prompts.boi_id, max_new_tokens=16)
        for r, o in zip(chunk, outs, strict=True):
            answer = tok.decode(o.text_ids, skip_special_tokens=True).strip()
            attribute = r["named"][0]
            truth = r["conversations"][1]["value"]
            rows.append({"id": r["id"], "attribute": attribute, "ground_truth": truth, "answer": answer,
                         "score": round(score_answer(attribute, truth, answer), 4)})
    update(len(rows))
    return rows


def generate_images(model: UnifiedVLM, ctx: RunParts, records: list[dict], batch_size: int = 32,
                    sampling: Sampling | None = None, open_image: bool = False,
                    compile_step: bool = False) -> list[torch.Tensor | None]:
    """The vision tokens each generation prompt yields (None when no image was opened).

    open_image: every answer starts at `<boi>`, so an image is decoded whether or not the model
    would open one (an untrained model, a check of the image path). compile_step: decode through
    a compiled step (uvlm.eval.decode)."""
    tok = ctx.tokenizer
    n = ctx.out_space.n_tokens
    guided = sampling is not None and sampling.cfg_scale != 1.0
    opened = [{"from": "gpt", "value": "<image>"}] if open_image else []
    # Janus-style unconditional prompt: the same turn with the instruction left out.
    uncond = ctx.prompts.encode([{"from": "human", "value": ""}, *opened], answer_image=False) if guided else None
    results: list[torch.Tensor | None] = []
    update = progress(f"generating {len(records)} images", len(records))
    for chunk in _batches(records, batch_size):
        update(len(results))
        prompts = [ctx.prompts.encode([r["conversations"][0], *opened], answer_image=False) for r in chunk]
        outs = decode_batch(model, prompts, None, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                            boi_id=ctx.prompts.boi_id, max_new_tokens=24, n_vision=n, sampling=sampling,
                            uncond=[uncond] * len(chunk) if guided else None, compile_step=compile_step)
        results += [o.vision if o.vision is not None and len(o.vision) == n else None for o in outs]
    update(len(results))
    return results


# What metrics.json's "gen.protocol" records: 2 = SigLIP outputs rescaled to the targets' length
# when fed back and judged by unit-length probes (earlier SigLIP-output judgements read lengths).
GEN_PROTOCOL = 2


def _judged_rows(answers: list[dict], records: list[dict], indices: list[int]) -> list[dict]:
    """Judged answers scored against the attributes each prompt named (unnamed ones are free)."""
    rows = []
    for i, ans in zip(indices, answers, strict=True):
        truth = records[i]["attributes"]
        scores = {k: round(score_answer(k, true_answer(truth, k), ans[k]), 4) for k in records[i]["named"]}
        rows.append({"id": records[i]["id"], "judged": ans, "scores": scores})
    return rows


def _judge_total(answers: list[dict], records: list[dict]) -> dict:
    return aggregate((k, v) for r in _judged_rows(answers, records, list(range(len(records))))
                     for k, v in r["scores"].items())


def judge_generations(vision: list[torch.Tensor | None], records: list[dict], ctx: EvalContext) -> dict:
    """Judge scores (named attributes only), FID/KID for pixel outputs, and counts."""
    made = [i for i, v in enumerate(vision) if v is not None]
    result: dict = {"n": len(records), "n_images": len(made), "protocol": GEN_PROTOCOL}
    if not made:
        result.update({"judge": None, "fid": None, "kid": None, "rows": []})
        return result
    judge = ctx.loaded_judge()
    if ctx.out_space.discrete:
        from uvlm.eval.image_metrics import domain_fid_kid

        pixels = torch.cat([ctx.out_space.decode(torch.stack([vision[i] for i in chunk]))
                            for chunk in _batches(made, 64)])
        answers = judge.answers(pixels)
        real = load_images([ctx.test_root / r["image"] for r in records])
        result.update({"fid": None, "kid": None})
        if len(made) >= 2:  # FID needs two images a side
            result.update({k: v for k, v in domain_fid_kid(real, pixels, judge.features).items()
                           if k in ("fid", "kid", "kid_std")})
        result["pixels"] = pixels
    else:
        answers = judge.answers(torch.stack([vision[i] for i in made]))
        result.update({"fid": None, "kid": None})
    rows = _judged_rows(answers, records, made)
    result["judge"] = aggregate((k, v) for r in rows for k, v in r["scores"].items())
    result["rows"] = rows
    return result


def judge_baselines(ctx: EvalContext, records: list[dict]) -> dict:
    """What the judge gives images that no model drew, for these prompts (total_acc and the
    columns, percent): `real`, each prompt's own test image (the judge's ceiling); `shuffled`,
    the next prompt's image (a real watch of unrelated attributes); `constant`, one image for
    every prompt (the mean test image, or the mean feature per position); for VQ outputs
    `reconstructed`, the real image through the VQ's encoder and decoder (the ceiling of any
    VQ-output model); and `chance`, the random and best constant answers of uvlm.eval.chance."""
    judge = ctx.loaded_judge()
    real = load_images([ctx.test_root / r["image"] for r in records])
    if ctx.out_space.discrete:
        images = {"real": real, "constant": real.float().mean(0, keepdim=True).round().to(torch.uint8)
                  .expand_as(real)}
        ids = torch.cat([ctx.out_space.targets(real[i:i + 64]) for i in range(0, len(real), 64)])
        images["reconstructed"] = torch.cat([ctx.out_space.decode(ids[i:i + 64]) for i in range(0, len(ids), 64)])
    else:
        feats = torch.cat([ctx.out_space.targets(real[i:i + 64]) for i in range(0, len(real), 64)])
        images = {"real": feats, "constant": feats.mean(0, keepdim=True).expand_as(feats)}
    images["shuffled"] = images["real"].roll(1, dims=0)
    out = {name: _judge_total(judge.answers(x), records) for name, x in images.items()}
    truths = [(k, true_answer(r["attributes"], k)) for r in records for k in r["named"]]
    found = chance(truths)
    out.update({"random answer": found["random"], "best constant answer": found["constant"]})
    return out


def run_judge_baselines(run: Path) -> dict:
    """`judge_baselines` on a run folder's generation prompts and output space (its config is
    enough: no weights are read), for runs evaluated before metrics.json recorded them."""
    cfg = load_run_config(run)
    arch = parse_name(cfg.model.name)
    if arch.output_space is None:
        raise UvlmError(f"{run} ({arch.name}) generates no images: it has no judge baselines")
    faces = face_folders(cfg.data.train, cfg.data.test)
    _, out_space = load_spaces(cfg, arch, faces=faces)
    test_root = faces[1] if faces else resolve_dataset(cfg.data.test, "test")
    ctx = EvalContext(None, None, None, out_space, test_root, faces=faces)
    return judge_baselines(ctx, [r for r in read_records(test_root) if r["task"] == "generation"])


def answer_distribution(rows: list[dict], top: int = 5) -> dict:
    """The most frequent answers per attribute, with their share (percent)."""
    out = {}
    for attribute in sorted({r["attribute"] for r in rows}):
        answers = Counter(r["answer"] for r in rows if r["attribute"] == attribute)
        total = sum(answers.values())
        out[attribute] = [[a, round(100 * c / total, 1)] for a, c in answers.most_common(top)]
    return out


def evaluate_model(model: UnifiedVLM, ctx: EvalContext, vqa_limit: int | None = None,
                   gen_limit: int | None = None, sampling: Sampling | None = None,
                   open_image: bool = False) -> tuple[dict, list[dict], dict | None]:
    """metrics (the metrics.json schema), VQA answer rows, generation details."""
    was_training = model.training
    model.eval()
    records = read_records(ctx.test_root)
    metrics: dict = {"vqa": None, "gen": None}
    rows: list[dict] = []
    gen = None
    arch = model.arch
    if arch.input_space:
        vqa = [r for r in records if r["task"] == "vqa"][:vqa_limit]
        with ctx.place.autocast():
            rows = vqa_answers(model, ctx, vqa)
        metrics["vqa"] = aggregate((r["attribute"], r["score"]) for r in rows)
        metrics["answer_distribution"] = answer_distribution(rows)
        metrics["chance"] = chance((r["attribute"], r["ground_truth"]) for r in rows)
    if arch.output_space:
        prompts = [r for r in records if r["task"] == "generation"][:gen_limit]
        with ctx.place.autocast():
            vision = generate_images(model, ctx, prompts, sampling=sampling, open_image=open_image,
                                     compile_step=ctx.compile_decoding)
        gen = judge_generations(vision, prompts, ctx)
        metrics["gen"] = {k: v for k, v in gen.items() if k not in ("pixels", "rows")}
    if was_training:
        model.train()
    return metrics, rows, gen


def eval_point(model: UnifiedVLM, parts: RunParts, samples: int) -> dict:
    """The evaluator on a slice of the test set, flattened for metrics.jsonl: the numbers of the
    paper's Fig 3 curves (the training loop calls it at each evaluation point)."""
    metrics, _, _ = evaluate_model(model, EvalContext.of(parts), vqa_limit=samples, gen_limit=max(2, samples // 2))
    flat = {}
    if metrics["vqa"]:
        flat.update({f"vqa_{k}": v for k, v in metrics["vqa"].items() if k != "n"})
    if metrics["gen"] and metrics["gen"]["judge"]:
        flat["gen_judge_total_acc"] = metrics["gen"]["judge"]["total_acc"]
        flat["gen_fid"] = metrics["gen"]["fid"]
    return flat


def check_schema(metrics: dict) -> None:
    """Raise if metrics.json lacks a documented key (tests and readers rely on it)."""
    for section, keys in METRICS_SCHEMA.items():
        if metrics.get(section) is None:
            continue
        if section == "vqa" and "Male_acc" in metrics[section]:  # a CelebA run: one column per attribute
            keys = [*FACE_COLUMNS, "total_acc", "n"]
        missing = [k for k in keys if k not in metrics[section]]
        if missing:
            raise ValueError(f"metrics.json {section} lacks {missing}")


def vqa_rows_to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def evaluate_run(run: Path, checkpoint: int | None = None, show: int = 0,
                 inception_weights: Path | None = None, sampling: Sampling | None = None,
                 open_image: bool = False) -> dict:
    """Evaluate a run folder's final weights (or a checkpoint); write metrics.json, answers.jsonl,
    generated/ (PNG for pixel outputs) and, with show > 0, a qualitative sheet, into the folder
    `eval_folder` names."""
    run = Path(run)
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise UvlmError(f"Inception weights {inception_weights} do not exist")
    load_run_config(run)  # a folder that holds no run: one line, before anything is locked or written
    with exclusive(run, "`uvlm train` or `uvlm eval`"):
        sweep_temporaries(run)
        return _evaluate_run(run, checkpoint, show, inception_weights, sampling, open_image)


def _evaluate_run(run: Path, checkpoint: int | None, show: int, inception_weights: Path | None,
                  sampling: Sampling | None, open_image: bool) -> dict:
    model, parts = load_trained(run, checkpoint)
    ctx = EvalContext.of(parts, compile_decoding=load_run_config(run).train.compile)
    metrics, rows, gen = evaluate_model(model, ctx, sampling=sampling, open_image=open_image)
    if gen is not None:
        prompts = [r for r in read_records(ctx.test_root) if r["task"] == "generation"]
        metrics["gen"]["baselines"] = judge_baselines(ctx, prompts)
    if sampling is not None:
        metrics["sampling"] = {"temperature": sampling.temperature, "top_k": sampling.top_k,
                               "cfg_scale": sampling.cfg_scale, "seed": sampling.seed}
    if inception_weights is not None and gen is not None and "pixels" in gen:
        from uvlm.eval.image_metrics import inception_fid

        prompts = [r for r in read_records(ctx.test_root) if r["task"] == "generation"]
        real = load_images([ctx.test_root / r["image"] for r in prompts])
        metrics["gen"]["inception_fid"] = inception_fid(real, gen["pixels"], Path(inception_weights))
    metrics["checkpoint"] = checkpoint if checkpoint is not None else "final"
    metrics["open_image"] = open_image
    check_schema(metrics)
    out = run / eval_folder(checkpoint, sampling, open_image)
    out.mkdir(parents=True, exist_ok=True)
    write_evaluation(out, metrics, rows, gen, show, ctx)
    return metrics


def write_evaluation(out: Path, metrics: dict, rows: list[dict], gen: dict | None, show: int,
                     ctx: EvalContext) -> None:
    """An evaluation folder's files, metrics.json last (what marks it complete)."""
    atomic_write_text(out / "answers.jsonl", vqa_rows_to_jsonl(rows))
    if gen is not None:
        atomic_write_text(out / "generation.jsonl", "".join(json.dumps(r) + "\n" for r in gen["rows"]))
    if gen is not None and "pixels" in gen:
        write_pngs(out / "generated", gen["pixels"])
    if show:
        from uvlm.eval.sheet import qualitative_sheet

        qualitative_sheet(out / "sheet.png", ctx, rows, gen, show)
    atomic_write_json(out / "metrics.json", metrics)


def eval_folder(checkpoint: int | None, sampling: Sampling | None, open_image: bool = False) -> str:
    """Where an evaluation is written inside its run: `eval` is the default (final weights,
    greedy) that suites and reports read; any other choice gets a folder naming it, so it
    never replaces the default."""
    name = "eval" if checkpoint is None else f"eval-step-{checkpoint}"
    if sampling is not None:
        name += f"-t{sampling.temperature:g}-k{sampling.top_k}-cfg{sampling.cfg_scale:g}-seed{sampling.seed}"
    return name + ("-opened" if open_image else "")


def write_pngs(folder: Path, pixels: torch.Tensor) -> None:
    """Generated images as numbered PNGs, each written atomically."""
    import io

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(pixels):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        atomic_write_bytes(folder / f"{i:04d}.png", buf.getvalue(), durable=False)
