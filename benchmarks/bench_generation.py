"""Target 2 of the cpu instrument: is generation learned? The judge against generation records.

Trains a generation-only row (VQ_g, or SigLIP_g with `--row`; baseline rows, so choosing their
settings here is allowed) at several amounts of generation data and settings, evaluates it on
the cpu test set, and adds one row per point to RESULTS.md: the judge's scores of the generated
images on the attributes each prompt named, beside the best constant answer and the ceiling
(the judge on the real test images' VQ reconstructions, or on their SigLIP features: the most
such a model can show). Targets: >= 90 on positions and >= 80 on weather, above the best
constant on battery and time.

    python benchmarks/bench_generation.py --records 3000 12000 --set model.image_loss_weight=1.0
    python benchmarks/bench_generation.py --preset cpu2 --records 48000 --set train.lr=1e-3
    python benchmarks/bench_generation.py                     # rewrite the table from the points run

Runs live in benchmarks/runs/generation/ (not committed; a point already run is reused); with
`--runs NAME` in benchmarks/runs/generation-NAME/, so that two calls can run side by side. The
table gathers every such folder's evaluated points.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import yaml
from common import markdown_table, record

from uvlm.suites.presets import PRESETS, asks_for_gpu, row_config
from uvlm.suites.runner import job_index, run_suite
from uvlm.suites.spec import Job
from uvlm.train.config import apply_override

NAME = "bench_generation"
RUNS = Path(__file__).with_name("runs") / "generation"
HEADER = ["row", "settings", "LLM layers x width", "generation records", "epochs", "final loss",
          "judge: position / weather / battery / time / total", "best constant: same", "ceiling: same"]
COLUMNS = ("position_acc", "weather_acc", "battery_acc", "time_acc", "total_acc")


def _cells(scores: dict) -> str:
    return " / ".join(f"{scores[c]:.1f}" if scores.get(c) is not None else "-" for c in COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", default="VQ_g")
    # a CPU benchmark: not the presets that ask for a GPU
    cpu_presets = [p for p in PRESETS if not asks_for_gpu(p)]
    parser.add_argument("--preset", default="cpu", choices=cpu_presets)
    parser.add_argument("--records", type=int, nargs="*", default=[],
                        help="generation records of each point to train (none: only rewrite the table)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", default="", help="a folder of its own: benchmarks/runs/generation-NAME")
    args = parser.parse_args()
    jobs = []
    for n in args.records:
        cfg = copy.deepcopy(row_config(args.preset, args.row))
        cfg["data"]["train"].update({"n_vqa": 0, "n_caption": 0, "n_generation": n})
        cfg["train"]["eval_points"] = 0
        for o in args.overrides:
            apply_override(cfg, o)
        preset = [f"preset={args.preset}"] if args.preset != "cpu" else []
        jobs.append(Job("bench", " ".join([args.row, str(n), *preset, *args.overrides]), 0, cfg))
    if jobs:
        folder = RUNS.with_name(f"generation-{args.runs}") if args.runs else RUNS
        # a label names its settings, not the preset's model of the day: keep a point made under
        # another config instead of replacing it in the folder's index
        held = {e["label"]: e["key"] for e in job_index(folder)} if (folder / "jobs.json").exists() else {}
        for job in jobs:
            if held.get(job.label, job.key) != job.key:
                raise SystemExit(f"{folder} holds a point labelled {job.label!r} made with another config (the "
                                 f"preset changed since): give --runs NAME for a folder of its own")
        run_suite(jobs, folder, workers=args.workers, echo=print)
    # keyed by config: a preset's label ("preset=cpu2") can name different models over time
    done = {e["key"]: (folder, e) for folder in sorted(RUNS.parent.glob("generation*"))
            if (folder / "jobs.json").exists() for e in job_index(folder)
            if (folder / "runs" / e["key"] / "eval" / "metrics.json").exists()}
    rows = sorted((_row(*found) for found in done.values()), key=lambda r: (r[0], r[1], r[2], r[3]))
    body = ("The cpu test set's 500 generation prompts, greedy decoding. Scores in percent under the VQA rules, "
            "on the attributes each prompt named. Ceiling: the same judge on the real test images' VQ "
            "reconstructions (VQ output), or on their SigLIP features (SigLIP output, the embedding judge).\n\n"
            + markdown_table(HEADER, rows))
    record(NAME, "python benchmarks/bench_generation.py [--records N ...] [--set section.key=value ...]", body)


def _row(folder: Path, entry: dict) -> list:
    """One evaluated point of a runs folder's jobs.json as a table row (its label: row, records,
    settings)."""
    run = folder / "runs" / entry["key"]
    name, n, *settings = entry["label"].split(" ")
    gen = json.loads((run / "eval" / "metrics.json").read_text())["gen"]
    final = json.loads((run / "final.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    llm = f"{config['model']['layers']} x {config['model']['hidden_size']}"
    loss = final["final"].get("loss", float("nan"))
    return [name, " ".join(settings) or "preset", llm, int(n), config["train"]["epochs"], f"{loss:.3f}",
            _cells(gen["judge"] or {}), _cells(gen["baselines"]["best constant answer"]),
            _cells(gen["baselines"].get("reconstructed") or gen["baselines"].get("real", {}))]


if __name__ == "__main__":
    main()
