"""Table 2 in the report: the paper's rows beside ours, from the benchmark records of LLaVA runs.

A results folder holds Table 2's runs under `llava/` (`uvlm llava train --out RESULTS/llava/NAME`,
then `uvlm llava eval NAME/stage2`). Rows are grouped by preset and model; a cell is the mean
over seeds, with the seeds' standard deviation where there are several (MME moves by about 20
points between training runs of one recipe, more than most of Table 2's gaps). A unified row is
compared with our LLaVA row of the same preset and settings per benchmark (Welch's t on the seeds,
Holm within that study) only where both rows have at least MIN_SEEDS seeds; otherwise, and for
the tiny preset, no verdict. Smoke tests (`uvlm llava eval --limit`) are left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from uvlm.llava.benchmarks import COLUMNS
from uvlm.suites.stats import holm

MIN_SEEDS = 3
# A random answer's score, where a benchmark's answers are a fixed set: MME's yes/no pairs (per
# subtask 50 accuracy + 25 for both of a pair, over 10 perception subtasks), POPE's balanced yes/no
# (F1 of a coin; always "yes" gets 66.7), MMStar's and MMBench's four options. The open-answer
# benchmarks (VizWiz, MM-Vet, GQA, TextVQA) have no such chance.
CHANCE = {"MME": 750.0, "MMBench_EN": 25.0, "POPE": 50.0, "MMStar": 25.0}
RECORD = "llava.json"  # written by `uvlm llava train` into its run folder: model, preset, recipe, overrides


def collect(results: Path) -> dict[tuple, dict[str, list[float]]]:
    """{(preset, model, other settings): {column: [one value per seed]}} from
    RESULTS/llava/*/stage2/benchmarks. Only runs of the same settings but the seed are one row, one
    value a seed (a second run of a seed is not a second seed); a smoke test's scores (`--limit`)
    are left out."""
    rows: dict[tuple, dict[int, dict[str, float]]] = {}
    for record_path in sorted((Path(results) / "llava").glob("*/stage2/benchmarks/benchmarks.json")):
        run = record_path.parents[2]
        record = json.loads(record_path.read_text())
        if record.get("limit"):
            continue
        about = json.loads((run / RECORD).read_text()) if (run / RECORD).exists() else {}
        config = yaml.safe_load((run / "stage2" / "config.yaml").read_text())
        settings = tuple(sorted(o for o in about.get("overrides", []) if not o.strip().startswith("train.seed=")))
        if about.get("recipe", "release") != "release":  # the release's recipe is the default, named by none
            settings = (f"--recipe {about['recipe']}", *settings)
        key = (about.get("preset", "?"), config["model"]["name"], settings)
        seed = int(config.get("train", {}).get("seed", 0))
        scores = {c: float(v["value"]) for c, v in record["scores"].items() if v.get("value") is not None}
        rows.setdefault(key, {}).setdefault(seed, {}).update(scores)
    return {key: {c: [s[c] for s in seeds.values() if c in s] for c in COLUMNS if any(c in s for s in seeds.values())}
            for key, seeds in rows.items()}


def _cell(values: list[float] | None) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def _verdicts(rows: dict) -> list[str]:
    """One line per unified-vs-LLaVA comparison that the seeds allow: Holm-adjusted within each
    preset and settings (a family per study); the tiny preset is plumbing and gets none."""
    from scipy.stats import ttest_ind

    families: dict[tuple, list] = {}
    for (preset, model, settings), cells in rows.items():
        base = rows.get((preset, "LLaVA", settings), {})
        if model == "LLaVA" or preset == "tiny":
            continue
        for column in COLUMNS:
            a, b = cells.get(column, []), base.get(column, [])
            if len(a) >= MIN_SEEDS and len(b) >= MIN_SEEDS:
                p = float(ttest_ind(a, b, equal_var=False).pvalue)
                families.setdefault((preset, settings), []).append((model, column, float(np.mean(a) - np.mean(b)), p))
    if not families:
        return [f"No verdicts: a comparison needs {MIN_SEEDS} seeds of both rows (seeds are the unit of "
                "replication; one training run says nothing about the recipe), and the tiny preset gets none."]
    lines = ["| preset | model vs LLaVA | benchmark | effect | p | Holm p | verdict |", "|---|---|---|---|---|---|---|"]
    for (preset, settings), tests in families.items():
        label = preset + (f" ({', '.join(settings)})" if settings else "")
        for (model, column, effect, p), q in zip(tests, holm([t[-1] for t in tests]), strict=True):
            verdict = "inconclusive" if q >= 0.05 else ("holds: better" if effect > 0 else "worse")
            lines.append(f"| {label} | {model} | {column} | {effect:+.1f} | {p:.3f} | {q:.3f} | {verdict} |")
    return lines


def table2_section(results: Path, paper: dict) -> list[str]:
    """The report's Table 2 section (markdown lines)."""
    t2 = paper["T2_llava"]
    head = ["model", "source", *COLUMNS]
    lines = ["## Table 2: LLaVA-1.5-7B with and without image-generation data", "",
             "The paper's rows, then ours (`uvlm llava`). MME is a score (perception), the rest percent; a cell "
             "is the mean over seeds ± their standard deviation. The paper's LLaVA row was not retrained: the "
             "paper quotes it from lmms-eval's report. Rows of the `tiny` preset test the plumbing (a 2-layer LLM, "
             "random CLIP, fake data): they are not a reproduction. A row trained with `--recipe paper` says so; the "
             "others follow the authors' release (the default). `chance`: a random answer's score where the "
             "answers are a fixed set (MME's yes/no pairs, POPE's yes/no, four options); the open-answer "
             "benchmarks have none.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| chance | a random answer | " + " | ".join(f"{CHANCE[c]:.1f}" if c in CHANCE else "-"
                                                               for c in COLUMNS) + " |")
    for name, values in t2["rows"].items():
        source = "paper (quoted from lmms-eval, not retrained)" if name == "LLaVA" else "paper (one run)"
        lines.append(f"| {name} | {source} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    rows = collect(results)
    for (preset, model, settings), cells in sorted(rows.items()):
        seeds = max(len(v) for v in cells.values())
        changed = "".join(f", `{o}`" for o in settings)
        source = f"ours, `{preset}` preset{changed}, {seeds} seed{'s' if seeds > 1 else ''}" \
            + (" (plumbing only)" if preset == "tiny" else "")
        lines.append(f"| {model} | {source} | " + " | ".join(_cell(cells.get(c)) for c in COLUMNS) + " |")
    if not rows:
        lines += ["", "No Table 2 runs in this folder yet: docs/table2-llava.md says how to make them "
                      "(`uvlm llava data`, `train`, `eval`; 8 GPUs for the paper preset)."]
    return [*lines, "", *_verdicts(rows), ""]
