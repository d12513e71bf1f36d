"""Turn a model into the numbers of the paper's tables, on the whole test set.

- VQA: every test question, decoded greedily, scored with the paper's rules; per attribute
  and pooled; the distribution of answers per attribute is kept (a model that answers one
  constant word scores chance and should be seen doing it).
- Generation (every output space): the judge reads the generated images (VQ, decoded to
  pixels) or embeddings (SigLIP) and its answers are scored against the attributes the
  prompt named; domain FID/KID against the test images for pixel outputs.

`evaluate_model` works on a model in memory (the training loop's evaluation points);
`evaluate_run` loads a run folder and writes metrics.json, answers.jsonl and generated/.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from uvlm.data.folder import read_manifest, read_records
from uvlm.data.smartwatch import Attributes
from uvlm.errors import UvlmError
from uvlm.eval.decode import Sampling, decode_batch
from uvlm.eval.vqa import aggregate, score_answer
from uvlm.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from uvlm.model.prompt import PromptEncoder
from uvlm.model.unified import UnifiedVLM
from uvlm.vision.cache import cached_features, dataset_images
from uvlm.vision.space import VisionSpace, load_images

METRICS_SCHEMA = {
    "vqa": ["time_acc", "weather_acc", "position_acc", "battery_acc", "total_acc", "n"],
    "gen": ["judge", "fid", "kid", "n"],
}


@dataclass
class EvalContext:
    """What evaluation needs besides the model."""

    tokenizer: object
    prompts: PromptEncoder
    in_space: VisionSpace | None
    out_space: VisionSpace | None
    test_root: Path
    pixel_judge: object | None = None  # default: the cached pretrained judge for the test style
    embed_judge: object | None = None  # default: probes on the output SigLIP space

    def style(self) -> dict:
        config = read_manifest(self.test_root)["config"]
        return {k: config[k] for k in ("size", "detail_scale", "face_radius")}

    def judges(self):
        """The judge for the output space, loaded (or trained and cached) on first use."""
        from uvlm.vision.judge import JudgeConfig, embedding_judge, pretrained_judge

        if self.out_space.discrete and self.pixel_judge is None:
            self.pixel_judge = pretrained_judge(JudgeConfig(style=self.style()))[0]
        if not self.out_space.discrete and self.embed_judge is None:
            self.embed_judge = embedding_judge(self.out_space, self.style())[0]
        return self.pixel_judge if self.out_space.discrete else self.embed_judge


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def vqa_answers(model: UnifiedVLM, ctx: EvalContext, records: list[dict], batch_size: int = 64) -> list[dict]:
    """Greedy answers to single-turn VQA records, with what the scorer needs."""
    tok = ctx.tokenizer
    images = {name: i for i, name in enumerate(dataset_images(ctx.test_root))}
    features = cached_features(ctx.in_space, ctx.test_root)["features"]
    rows = []
    for chunk in _batches(records, batch_size):
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
    return rows


def generate_images(model: UnifiedVLM, ctx: EvalContext, records: list[dict], batch_size: int = 32,
                    sampling: Sampling | None = None) -> list[torch.Tensor | None]:
    """The vision tokens each generation prompt yields (None when no image was opened)."""
    tok = ctx.tokenizer
    n = ctx.out_space.n_tokens
    guided = sampling is not None and sampling.cfg_scale != 1.0
    # Janus-style unconditional prompt: the same turn with the instruction left out.
    uncond = ctx.prompts.encode([{"from": "human", "value": ""}]) if guided else None
    results: list[torch.Tensor | None] = []
    for chunk in _batches(records, batch_size):
        prompts = [ctx.prompts.encode(r["conversations"][:1]) for r in chunk]
        outs = decode_batch(model, prompts, None, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                            boi_id=ctx.prompts.boi_id, max_new_tokens=24, n_vision=n, sampling=sampling,
                            uncond=[uncond] * len(chunk) if guided else None)
        results += [o.vision if o.vision is not None and len(o.vision) == n else None for o in outs]
    return results


def judge_generations(vision: list[torch.Tensor | None], records: list[dict], ctx: EvalContext) -> dict:
    """Judge scores (named attributes only), FID/KID for pixel outputs, and counts."""
    made = [i for i, v in enumerate(vision) if v is not None]
    result: dict = {"n": len(records), "n_images": len(made)}
    if not made:
        result.update({"judge": None, "fid": None, "kid": None, "rows": []})
        return result
    judge = ctx.judges()
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
    rows = []
    for i, ans in zip(made, answers, strict=True):
        truth = Attributes.from_dict(records[i]["attributes"])
        rows.append({"id": records[i]["id"], "judged": ans,
                     "scores": {k: round(score_answer(k, truth.answer(k), ans[k]), 4) for k in records[i]["named"]}})
    result["judge"] = aggregate((k, v) for r in rows for k, v in r["scores"].items())
    result["rows"] = rows
    return result


def answer_distribution(rows: list[dict], top: int = 5) -> dict:
    """The most frequent answers per attribute, with their share (percent)."""
    out = {}
    for attribute in sorted({r["attribute"] for r in rows}):
        answers = Counter(r["answer"] for r in rows if r["attribute"] == attribute)
        total = sum(answers.values())
        out[attribute] = [[a, round(100 * c / total, 1)] for a, c in answers.most_common(top)]
    return out


def evaluate_model(model: UnifiedVLM, ctx: EvalContext, vqa_limit: int | None = None,
                   gen_limit: int | None = None,
                   sampling: Sampling | None = None) -> tuple[dict, list[dict], dict | None]:
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
        rows = vqa_answers(model, ctx, vqa)
        metrics["vqa"] = aggregate((r["attribute"], r["score"]) for r in rows)
        metrics["answer_distribution"] = answer_distribution(rows)
    if arch.output_space:
        prompts = [r for r in records if r["task"] == "generation"][:gen_limit]
        gen = judge_generations(generate_images(model, ctx, prompts, sampling=sampling), prompts, ctx)
        metrics["gen"] = {k: v for k, v in gen.items() if k not in ("pixels", "rows")}
    if was_training:
        model.train()
    return metrics, rows, gen


def check_schema(metrics: dict) -> None:
    """Raise if metrics.json lacks a documented key (tests and readers rely on it)."""
    for section, keys in METRICS_SCHEMA.items():
        if metrics.get(section) is None:
            continue
        missing = [k for k in keys if k not in metrics[section]]
        if missing:
            raise ValueError(f"metrics.json {section} lacks {missing}")


def vqa_rows_to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def evaluate_run(run: Path, checkpoint: int | None = None, show: int = 0,
                 inception_weights: Path | None = None, sampling: Sampling | None = None) -> dict:
    """Evaluate a run folder's final weights (or a checkpoint); write metrics.json, answers.jsonl,
    generated/ (PNG for pixel outputs) and, with show > 0, a qualitative sheet, into the folder
    `eval_folder` names."""
    from uvlm.train.load import load_trained

    run = Path(run)
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise UvlmError(f"Inception weights {inception_weights} do not exist")
    model, ctx = load_trained(run, checkpoint)
    metrics, rows, gen = evaluate_model(model, ctx, sampling=sampling)
    if sampling is not None:
        metrics["sampling"] = {"temperature": sampling.temperature, "top_k": sampling.top_k,
                               "cfg_scale": sampling.cfg_scale, "seed": sampling.seed}
    if inception_weights is not None and gen is not None and "pixels" in gen:
        from uvlm.eval.image_metrics import inception_fid

        prompts = [r for r in read_records(ctx.test_root) if r["task"] == "generation"]
        real = load_images([ctx.test_root / r["image"] for r in prompts])
        metrics["gen"]["inception_fid"] = inception_fid(real, gen["pixels"], Path(inception_weights))
    metrics["checkpoint"] = checkpoint if checkpoint is not None else "final"
    check_schema(metrics)
    out = run / eval_folder(checkpoint, sampling)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "answers.jsonl", vqa_rows_to_jsonl(rows))
    if gen is not None:
        atomic_write_text(out / "generation.jsonl", "".join(json.dumps(r) + "\n" for r in gen["rows"]))
    if gen is not None and "pixels" in gen:
        write_pngs(out / "generated", gen["pixels"])
    if show:
        from uvlm.eval.sheet import qualitative_sheet

        qualitative_sheet(out / "sheet.png", ctx, rows, gen, show)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def eval_folder(checkpoint: int | None, sampling: Sampling | None) -> str:
    """Where an evaluation is written inside its run: `eval` is the default (final weights,
    greedy) that suites and reports read; any other choice gets a folder naming it, so it
    never replaces the default."""
    name = "eval" if checkpoint is None else f"eval-step-{checkpoint}"
    if sampling is not None:
        name += f"-t{sampling.temperature:g}-k{sampling.top_k}-cfg{sampling.cfg_scale:g}-seed{sampling.seed}"
    return name


def write_pngs(folder: Path, pixels: torch.Tensor) -> None:
    """Generated images as numbered PNGs, each written atomically."""
    import io

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(pixels):
        buf = io.BytesIO()
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        atomic_write_bytes(folder / f"{i:04d}.png", buf.getvalue(), durable=False)
