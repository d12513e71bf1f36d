"""Target 1 of the cpu instrument: do the stand-in encoders keep every attribute?

For the VQ stand-in, the pixel judge reads its reconstructions of held-out renders (what a
VQ-output model can at best draw, and what a VQ-input model is given); the judge on the renders
themselves is the ceiling. For both stand-ins, a linear probe on the encoder's features (the
quality recorded when they were pretrained). Targets: judge on VQ reconstructions >= 90 on
time and >= 95 total; the SigLIP stand-in's probe reads time >= 90.

    python benchmarks/bench_encoders.py                       # the cpu preset's stand-ins
    python benchmarks/bench_encoders.py --vq steps=1600 num_embeddings=2048 --label "..."

`--vq` / `--siglip` change fields of VQPretrainConfig / SiglipPretrainConfig (a selection run;
pretrained on first use and cached like the preset's). `--style` changes the render style
(e.g. `hand_scale=2`) for everything at once: both stand-ins, the judge and the held-out renders.
Each call adds its row to RESULTS.md's table, so the rows of a selection stay side by side.
"""

from __future__ import annotations

import argparse
import json

import torch
import yaml
from common import RESULTS, markdown_table, record

from uvlm.data.smartwatch import CPU_STYLE, RenderStyle
from uvlm.errors import UvlmError
from uvlm.vision.judge import JudgeConfig, pretrained_judge, score_against
from uvlm.vision.pretrain import (
    SiglipPretrainConfig,
    VQPretrainConfig,
    changed_config,
    pretrained_siglip,
    pretrained_vq,
    psnr,
    render_pool,
)

N_HELD = 1000
NAME = "bench_encoders"
HEADER = ["stand-ins", "VQ tokens", "PSNR dB", "judge on renders: time / total",
          "judge on VQ recon: time / weather / battery / position / total",
          "VQ probe: time / total", "SigLIP probe: time / total", "pretrain s (VQ, SigLIP)"]


def settings(pairs: list[str], flag: str) -> dict:
    """`key=value` pairs as a dict, values parsed as YAML."""
    if bad := [p for p in pairs if "=" not in p]:
        raise SystemExit(f"{flag} {bad[0]!r}: give field=value")
    return {k: yaml.safe_load(v) for k, _, v in (p.partition("=") for p in pairs)}


def changed(cls, pairs: list[str], style: dict, flag: str):
    """A pretraining config with `key=value` fields changed and the render style `style`."""
    changes = settings(pairs, flag)
    if "style" in changes:
        raise SystemExit(f"{flag} style=...: give the style with --style, for every model at once")
    try:
        return changed_config(cls, {**changes, "style": style}, flag)
    except UvlmError as e:
        raise SystemExit(str(e)) from None


def _judged(judge, images: torch.Tensor, attrs: list[dict]) -> dict:
    answers = [a for i in range(0, len(images), 200) for a in judge.answers(images[i:i + 200])]
    return score_against(answers, attrs)


def _rows_so_far() -> list[list[str]]:
    """This benchmark's earlier rows in RESULTS.md (a selection run adds one)."""
    if not RESULTS.exists():
        return []
    text = RESULTS.read_text()
    start = text.find(f"## {NAME}")
    if start < 0:
        return []
    section = text[start:].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| stand-ins")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vq", nargs="*", default=[], help="VQPretrainConfig field=value")
    parser.add_argument("--siglip", nargs="*", default=[], help="SiglipPretrainConfig field=value")
    parser.add_argument("--style", nargs="*", default=[], help="render style field=value (e.g. hand_scale=2)")
    parser.add_argument("--label", default="", help="what this row is (default: the changes)")
    args = parser.parse_args()
    try:
        style = RenderStyle(**{**CPU_STYLE, **settings(args.style, "--style")}).to_dict()
    except (TypeError, UvlmError) as e:
        raise SystemExit(f"--style: {e}") from None
    vq_cfg = changed(VQPretrainConfig, args.vq, style, "--vq")
    siglip_cfg = changed(SiglipPretrainConfig, args.siglip, style, "--siglip")

    vq, vq_info = pretrained_vq(vq_cfg, progress=lambda d, n, note: print(f"\rVQ {d}/{n} {note}", end=""))
    _, siglip_info = pretrained_siglip(siglip_cfg)
    judge, _ = pretrained_judge(JudgeConfig(style=style))
    # Renders none of them trained on: the judge's and the stand-ins' pools use other seeds.
    images, attrs = render_pool(N_HELD, 12, style)
    with torch.no_grad():
        recon = torch.cat([vq.decode(vq.targets(images[i:i + 100])) for i in range(0, N_HELD, 100)])
    real, rec = _judged(judge, images, attrs), _judged(judge, recon, attrs)
    vq_probe, siglip_probe = vq_info["probe"]["vqa"], siglip_info["probe"]["vqa"]
    changes = [*(f"style.{p}" for p in args.style), *(f"vq.{p}" for p in args.vq),
               *(f"siglip.{p}" for p in args.siglip)]
    label = args.label or " ".join(changes or ["preset"])
    row = [label, vq.n_tokens, f"{psnr(recon, images):.1f}", f"{real['time_acc']:.1f} / {real['total_acc']:.1f}",
           " / ".join(f"{rec[k]:.1f}" for k in ("time_acc", "weather_acc", "battery_acc", "position_acc",
                                                 "total_acc")),
           f"{vq_probe['time_acc']:.1f} / {vq_probe['total_acc']:.1f}",
           f"{siglip_probe['time_acc']:.1f} / {siglip_probe['total_acc']:.1f}",
           f"{vq_info['train_seconds']:.0f}, {siglip_info['train_seconds']:.0f}"]
    rows = [r for r in _rows_so_far() if r[0] != label] + [[str(c) for c in row]]
    body = (f"{N_HELD} held-out 64-px renders (seed 12). Targets: judge on VQ reconstructions >= 90 time and "
            ">= 95 total; SigLIP probe time >= 90. Scores in percent under the VQA rules (a random time "
            "scores 50). Pretraining seconds were measured on whatever else the machine was doing.\n\n"
            + markdown_table(HEADER, rows))
    record(NAME, "python benchmarks/bench_encoders.py [--style field=value ...] [--vq field=value ...] "
           "[--siglip field=value ...]", body)
    print(json.dumps({"recon": rec, "real": real}, indent=1))


if __name__ == "__main__":
    main()
