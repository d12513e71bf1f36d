"""`uvlm report results/ --out report/`: our tables beside the paper's, verdicts, figures.

Every number comes from the runs' own files (eval/metrics.json, answers.jsonl,
generation.jsonl, metrics.jsonl, wall.json); nothing is typed in. Cells are means over
seeds with 95% hierarchical-bootstrap intervals (uvlm.suites.stats); each finding of the
paper is tested on our numbers and gets a verdict.
"""

from __future__ import annotations

import json
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from uvlm.data.smartwatch import WEATHERS
from uvlm.io import atomic_write_text
from uvlm.suites.presets import BIAS_VQA_PROB
from uvlm.suites.runner import job_index, overrides_of, record_rates, wall_seconds
from uvlm.suites.spec import (
    DOSE_PAIRS,
    DOSES,
    PAPER_UND,
    PROBE_ROWS,
    SCALING_ROWS,
    dose_label,
    matched,
    matched_label,
    scaling_curves,
    scaling_label,
    scaling_rows,
)
from uvlm.suites.stats import Interval, cell_interval, contrast

COLUMNS = {"time_acc": ("time",), "weather_acc": ("weather",), "position_acc": ("weather_pos", "battery_pos"),
           "battery_acc": ("battery",), "total_acc": ("time", "weather", "weather_pos", "battery", "battery_pos")}
KEY_COLUMN = {"A3": "total_acc", "A5": "weather_acc", "A6": "battery_acc"}  # what each table's figure shows
PAPER_TABLES = {"A3": "A3_smartwatch_mutual", "A4": "A4_smartwatch_scaling", "A5": "A5_weather_biased",
                "A6": "A6_battery_biased"}
TITLES = {"A3": "Table A3: mutual benefits (default mix)", "A5": "Table A5: weather-biased understanding data",
          "A6": "Table A6: battery-biased understanding data", "T1": "Table 1 (SmartWatch half): affine map",
          "A4": "Table A4: scaling", "dose-weather": "Dose-response: share of VQA asking weather (ours)",
          "dose-battery": "Dose-response: share of VQA asking battery (ours)", "fig7": "Fig 7 probe"}


def paper_rows(paper: dict, table: str) -> dict[str, dict]:
    """The paper's rows of one of our tables, by our row label."""
    rows = paper.get(PAPER_TABLES.get(table, ""), {}).get("rows", {})
    if table == "A4":  # a list of sweep points; both models' 0K-understanding cells are VQ_g's
        return {scaling_label(r["model"], r["und_k"], r["gen_k"]): r for r in rows}
    return rows


def paper_tables() -> dict:
    return json.loads(resources.files("uvlm.suites").joinpath("paper_tables.json").read_text())


class Results:
    """The finished runs of a results folder, grouped by (table, row label)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        index = job_index(self.root)
        self.planned = {(e["table"], e["label"]) for e in index}  # the rows a suite was asked for (`--rows`)
        for e in index:
            if (self.root / "runs" / e["key"] / "eval" / "metrics.json").exists():
                self.groups[(e["table"], e["label"])].append(e["key"])
        self._answers: dict[str, dict] = {}
        self._generation: dict[str, list[float] | None] = {}
        self._probe: dict[str, dict | None] = {}

    def tables(self) -> list[str]:
        return sorted({t for t, _ in self.groups}, key=lambda t: list(TITLES).index(t) if t in TITLES else 99)

    def labels(self, table: str) -> list[str]:
        found = [label for t, label in self.groups if t == table]
        if table == "A4":  # sweep order, not alphabetical ("gen 120K" before "gen 60K")
            order = scaling_rows()
            found.sort(key=lambda label: order.index(label) if label in order else len(order))
        return found

    def metrics(self, key: str) -> dict:
        return json.loads((self.root / "runs" / key / "eval" / "metrics.json").read_text())

    def answers(self, key: str) -> dict:
        """id -> (attribute, score) of a run's VQA answers."""
        if key not in self._answers:
            path = self.root / "runs" / key / "eval" / "answers.jsonl"
            rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
            self._answers[key] = {r["id"]: (r["attribute"], r["score"]) for r in rows}
        return self._answers[key]

    def vqa_scores(self, table: str, label: str, column: str) -> np.ndarray | None:
        """(seeds, questions) scores in percent for one column, questions in id order."""
        keys = self.groups.get((table, label), [])
        runs = [self.answers(k) for k in keys]
        if not runs or not runs[0]:
            return None
        ids = sorted(i for i, (a, _) in runs[0].items() if a in COLUMNS[column])
        return 100 * np.array([[r[i][1] for i in ids] for r in runs])

    def generation(self, key: str) -> list[float] | None:
        """A run's judged score per test prompt in percent (mean over its named attributes; 0 if
        no image), or None if it generated nothing. Read once per run: tables, verdicts and
        figures all ask for it."""
        if key not in self._generation:
            path = self.root / "runs" / key / "eval" / "generation.jsonl"
            scores = None
            if path.exists():
                made = {r["id"]: np.mean(list(r["scores"].values()))
                        for r in map(json.loads, path.read_text().splitlines())}
                n = self.metrics(key)["gen"]["n"]
                scores = [100 * made.get(f"test-generation-{j:06d}", 0.0) for j in range(n)]
            self._generation[key] = scores
        return self._generation[key]

    def gen_scores(self, table: str, label: str) -> np.ndarray | None:
        """(seeds, prompts) judged scores of a row's runs."""
        runs = [self.generation(k) for k in self.groups.get((table, label), [])]
        return None if not runs or any(r is None for r in runs) else np.array(runs)

    def probe(self, key: str) -> dict | None:
        """A run's Fig 7 probe result (probe/probe.json), or None before `suite run probe`."""
        if key not in self._probe:
            path = self.root / "runs" / key / "probe" / "probe.json"
            self._probe[key] = json.loads(path.read_text()) if path.exists() else None
        return self._probe[key]

    def probe_scores(self, table: str, label: str) -> np.ndarray | None:
        """(seeds, test images) correctness of the Fig 7 probe, in percent."""
        rows = []
        for k in self.groups.get((table, label), []):
            correct = (self.probe(k) or {}).get("correct")
            if correct is None:
                return None
            rows.append(correct)
        return 100 * np.array(rows, dtype=float) if rows else None

    def scores(self, table: str, label: str, column: str) -> np.ndarray | None:
        """(seeds, items) scores of a VQA column, of judged generation ("gen") or of the probe ("probe")."""
        if column == "gen":
            return self.gen_scores(table, label)
        if column == "probe":
            return self.probe_scores(table, label)
        return self.vqa_scores(table, label, column)

    def values(self, table: str, label: str, path: tuple[str, ...]) -> list[float]:
        out = []
        for k in self.groups.get((table, label), []):
            v = self.metrics(k)
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if isinstance(v, int | float):
                out.append(float(v))
        return out

    def wall(self) -> dict[str, float]:
        times = {k: wall_seconds(self.root, k) for keys in self.groups.values() for k in keys}
        return {k: t for k, t in times.items() if t is not None}


def _cell(scores: np.ndarray | None) -> str:
    if scores is None or scores.size == 0:
        return "-"
    return cell_interval(scores, n_boot=2000).fmt()


def _table(res: Results, table: str, paper: dict) -> str:
    rows = paper_rows(paper, table)
    # the biased tables' point is the held-out attribute, so the paper's value of it sits beside the total
    key = KEY_COLUMN.get(table, "total_acc")
    extra = [key] if key != "total_acc" else []
    head = ["model", "seeds", *[c.removesuffix("_acc") for c in COLUMNS], "paper total",
            *[f"paper {c.removesuffix('_acc')}" for c in extra], "judge (gen)", "domain FID", "paper FID"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in res.labels(table):
        n = len(res.groups[(table, label)])
        cells = [_cell(res.vqa_scores(table, label, c)) for c in COLUMNS]
        ref = rows.get(label, {})
        fids = res.values(table, label, ("gen", "fid"))
        gen = res.gen_scores(table, label)
        lines.append("| " + " | ".join([label, str(n), *cells, _fmt(ref.get("total_acc")),
                                        *[_fmt(ref.get(c)) for c in extra], _cell(gen),
                                        f"{np.mean(fids):.1f}" if fids else "-", _fmt(ref.get("fid"))]) + " |")
    return "\n".join(lines)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


class Finding(NamedTuple):
    """A claim of the paper as a contrast: sum of weight x row mean, minus baseline, > 0."""

    text: str
    table: str
    column: str  # a VQA column, "gen" (judged generation) or "probe" (Fig 7 probe accuracy)
    terms: list[tuple[float, str]]  # (weight, row label)
    baseline: float = 0.0


FINDINGS = [
    Finding("unified beats understanding-only: SigLIP-SigLIP vs SigLIP_u", "A3", "total_acc",
            [(1, "SigLIP-SigLIP"), (-1, "SigLIP_u")]),
    Finding("... against the step-matched control", "A3", "total_acc",
            [(1, "SigLIP-SigLIP"), (-1, "SigLIP_u (step-matched)")]),
    Finding("unified beats understanding-only: VQ-VQ vs VQ_u", "A3", "total_acc", [(1, "VQ-VQ"), (-1, "VQ_u")]),
    Finding("... against the step-matched control", "A3", "total_acc", [(1, "VQ-VQ"), (-1, "VQ_u (step-matched)")]),
    Finding("unified beats understanding-only: VQ-SigLIP vs VQ_u", "A3", "total_acc", [(1, "VQ-SigLIP"), (-1, "VQ_u")]),
    Finding("aligned beats misaligned: SigLIP-SigLIP vs SigLIP-VQ", "A3", "total_acc",
            [(1, "SigLIP-SigLIP"), (-1, "SigLIP-VQ")]),
    Finding("aligned beats misaligned: VQ-VQ vs VQ-SigLIP", "A3", "total_acc", [(1, "VQ-VQ"), (-1, "VQ-SigLIP")]),
    Finding("unified beats generation-only (judge): VQ-VQ vs VQ_g", "A3", "gen", [(1, "VQ-VQ"), (-1, "VQ_g")]),
    Finding("unified beats generation-only (judge): SigLIP-VQ vs VQ_g", "A3", "gen", [(1, "SigLIP-VQ"), (-1, "VQ_g")]),
    Finding("the affine map hurts unified more than _u: (SigLIP-SigLIP - SigLIP*-SigLIP) - (SigLIP_u - SigLIP*_u)",
            "T1", "total_acc", [(1, "SigLIP-SigLIP"), (-1, "SigLIP*-SigLIP"), (-1, "SigLIP_u"), (1, "SigLIP*_u")]),
    Finding("the affine map hurts unified more than _u: (VQ-VQ - VQ*-VQ) - (VQ_u - VQ*_u)", "T1", "total_acc",
            [(1, "VQ-VQ"), (-1, "VQ*-VQ"), (-1, "VQ_u"), (1, "VQ*_u")]),
]


def transfer_findings() -> list[Finding]:
    """Tables A5/A6: the unified model beats its `_u` model on the attribute the understanding
    data rarely asks about, and its step-matched control."""
    out = []
    for table, bias in (("A5", "weather"), ("A6", "battery")):
        for unified, understanding in DOSE_PAIRS:
            out += [Finding(f"knowledge transfers ({bias}-biased, {bias} questions): {unified} vs {understanding}",
                            table, f"{bias}_acc", [(1, unified), (-1, understanding)]),
                    Finding("... against the step-matched control", table, f"{bias}_acc",
                            [(1, unified), (-1, matched(understanding))])]
    return out


def _slope(points: list[tuple[int, str]]) -> list[tuple[float, str]]:
    """Weights whose weighted sum of row means is the least-squares slope of score on data
    amount (thousands of records), per 100K records."""
    x = np.array([k for k, _ in points], dtype=float)
    w = 100 * (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    return [(float(wi), label) for wi, (_, label) in zip(w, points, strict=True)]


def scaling_findings() -> list[Finding]:
    """Section 4.1's claim that the benefits grow with data, as slopes over each sweep of A4."""
    out = []
    for name in SCALING_ROWS:
        curves = scaling_curves(name)
        top_k, top = curves["gen"][-1]
        out += [
            Finding(f"understanding grows with generation data: {name} VQA total, points per 100K generation "
                    f"records (understanding fixed at {PAPER_UND}K)", "A4", "total_acc", _slope(curves["gen"])),
            Finding(f"... {top} against its step-matched control", "A4", "total_acc",
                    [(1, top), (-1, matched_label(name, PAPER_UND, top_k))]),
            Finding(f"generation grows with understanding data: {name} judge score, points per 100K "
                    "understanding records (generation fixed at 60K)", "A4", "gen", _slope(curves["und"])),
        ]
    return out


def dose_findings() -> list[Finding]:
    """Transfer at each share of biased questions, and against the step-matched control where the
    attribute is asked at all (p > 0); the A5/A6 rows already test the default 0.05."""
    out = []
    for bias in ("weather", "battery"):
        for p in DOSES:
            if p == BIAS_VQA_PROB:
                continue
            for uni, und in DOSE_PAIRS:
                out.append(Finding(f"knowledge transfers at p={p} ({bias} questions): {uni} vs {und}",
                                   f"dose-{bias}", f"{bias}_acc", [(1, dose_label(uni, p)), (-1, dose_label(und, p))]))
                if p:
                    out.append(Finding(f"... {uni} at p={p} against the step-matched control", f"dose-{bias}",
                                       f"{bias}_acc", [(1, dose_label(uni, p)), (-1, matched(dose_label(und, p)))]))
    return out


def probe_findings() -> list[Finding]:
    """Fig 7: the weather is linearly decodable from every model's adapter output."""
    chance = 100 / len(WEATHERS)
    return [Finding(f"the probe finds the weather in {name}'s adapter output: accuracy minus chance ({chance:.1f})",
                    "fig7", "probe", [(1, name)], chance) for name in PROBE_ROWS]


def findings(res: Results) -> list[str]:
    lines = ["| finding | effect (points) [95% CI] | p | verdict |", "|---|---|---|---|"]
    for f in FINDINGS + transfer_findings() + scaling_findings() + dose_findings() + probe_findings():
        mats = [res.scores(f.table, label, f.column) for _, label in f.terms]
        if any(m is None for m in mats):
            continue
        c = contrast(mats, [w for w, _ in f.terms], n_boot=4000, baseline=f.baseline)
        lines.append(f"| {f.text} | {c.difference.fmt()} | {c.p_value:.3f} | **{c.verdict}** |")
    return lines if len(lines) > 2 else []


def _figures(res: Results, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    paper = paper_tables()
    for table in ("A3", "A5", "A6"):
        labels = res.labels(table)
        if not labels:
            continue
        column = KEY_COLUMN[table]
        cells = [_interval(res, table, label, column) for label in labels]
        keep = [(label, c) for label, c in zip(labels, cells, strict=True) if c is not None]
        if not keep:
            continue
        fig, ax = plt.subplots(figsize=(max(6, len(keep) * 0.9), 3.6))
        x = np.arange(len(keep))
        means = [c.mean for _, c in keep]
        err = [[c.mean - c.low for _, c in keep], [c.high - c.mean for _, c in keep]]
        ax.bar(x, means, yerr=err, color="#4c72b0", capsize=3, label="ours (mean, 95% CI)")
        ref = paper_rows(paper, table)
        px = [i for i, (label, _) in enumerate(keep) if ref.get(label, {}).get(column) is not None]
        ax.scatter(px, [ref[keep[i][0]][column] for i in px], color="#dd8452", zorder=3, label="paper")
        ax.set_xticks(x, [label for label, _ in keep], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(column)
        ax.set_ylim(0, 105)
        ax.set_title(TITLES[table], fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        name = f"fig-{table}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)
    curves = _curves(res)
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, (steps, values) in curves.items():
            ax.plot(steps, values, marker="o", label=label)
        ax.set_xlabel("training progress (fraction of steps)")
        ax.set_ylabel("VQA total_acc (eval slice)")
        ax.set_title("Fig 3 (ours): understanding during training, default mix", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "fig-3-curves.png", dpi=110)
        plt.close(fig)
        made.append("fig-3-curves.png")
    if _scaling_figure(res, out / "fig-4-scaling.png", paper):
        made.append("fig-4-scaling.png")
    for bias in ("weather", "battery"):
        if _dose_figure(res, bias, out / f"fig-dose-{bias}.png"):
            made.append(f"fig-dose-{bias}.png")
    return made


def _interval(res: Results, table: str, label: str, column: str) -> Interval | None:
    scores = res.scores(table, label, column)
    return None if scores is None else cell_interval(scores, n_boot=1000)


def _errorbar(ax, xs: list, cells: list[Interval | None], **style) -> bool:
    """Plot the cells that exist as means with 95% intervals; say whether any did."""
    pts = [(x, c) for x, c in zip(xs, cells, strict=True) if c is not None]
    if pts:
        ax.errorbar([x for x, _ in pts], [c.mean for _, c in pts], capsize=3, marker="o",
                    yerr=[[c.mean - c.low for _, c in pts], [c.high - c.mean for _, c in pts]], **style)
    return bool(pts)


def _scaling_figure(res: Results, path: Path, paper: dict) -> bool:
    """Fig 4: VQA and judged generation along each data sweep of table A4."""
    import matplotlib.pyplot as plt

    if not res.labels("A4"):
        return False
    ref = paper_rows(paper, "A4")
    fig, axes = plt.subplots(2, 2, figsize=(9, 6))
    for row, (sweep, what) in enumerate((("und", "understanding"), ("gen", "generation"))):
        for col, (column, ylabel) in enumerate((("total_acc", "VQA total_acc"), ("gen", "judge (gen)"))):
            ax = axes[row, col]
            for i, name in enumerate(SCALING_ROWS):
                points = scaling_curves(name)[sweep]
                xs = [k for k, _ in points]
                color = f"C{i}"
                _errorbar(ax, xs, [_interval(res, "A4", label, column) for _, label in points], color=color,
                          label=f"{name} (ours)")
                if column == "total_acc":
                    paper_pts = [(k, ref[label]["total_acc"]) for k, label in points
                                 if ref.get(label, {}).get("total_acc") is not None]
                    ax.plot([k for k, _ in paper_pts], [v for _, v in paper_pts], ls=":", marker="x", color=color,
                            label=f"{name} (paper)")
                    if sweep == "gen":
                        ks = [k for k in xs if k]  # the 0K point is the _u model itself
                        _errorbar(ax, ks, [_interval(res, "A4", matched_label(name, PAPER_UND, k), column) for k in ks],
                                  color=color, ls="--", mfc="white", label=f"{name}: step-matched _u")
            ax.set_xlabel(f"thousands of {what} records (paper scale)")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=6)
    fig.suptitle("Fig 4 (ours): scaling one task's data with the other fixed (table A4)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _dose_figure(res: Results, bias: str, path: Path) -> bool:
    """Accuracy on the biased attribute against the share of VQA that asks it."""
    import matplotlib.pyplot as plt

    table = f"dose-{bias}"
    if not res.labels(table):
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = list(range(len(DOSES)))
    for i, pair in enumerate(DOSE_PAIRS):
        for name, ls in zip(pair, ("-", "--"), strict=True):
            _errorbar(ax, xs, [_interval(res, table, dose_label(name, p), f"{bias}_acc") for p in DOSES],
                      color=f"C{i}", ls=ls, label=name)
        asked = [(x, p) for x, p in zip(xs, DOSES, strict=True) if p]  # no control at p = 0
        _errorbar(ax, [x for x, _ in asked], [_interval(res, table, matched(dose_label(pair[1], p)), f"{bias}_acc")
                                              for _, p in asked], color=f"C{i}", ls=":", mfc="white",
                  label=matched(pair[1]))
    ax.set_xticks(xs, [str(p) for p in DOSES])
    ax.set_xlabel(f"share of VQA records asking {bias} (--bias-vqa-prob)")
    ax.set_ylabel(f"{bias}_acc (unbiased test set)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Transfer dose-response ({bias}-biased mix, ours)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _curves(res: Results) -> dict:
    curves = {}
    for label in res.labels("A3"):
        per_seed = []
        for k in res.groups[("A3", label)]:
            path = res.root / "runs" / k / "metrics.jsonl"
            evals = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
            evals = [e for e in evals if e["event"] == "eval" and "vqa_total_acc" in e]
            if evals:
                last = evals[-1]["step"]
                per_seed.append([(e["step"] / last, e["vqa_total_acc"]) for e in evals])
        if per_seed and all(len(s) == len(per_seed[0]) for s in per_seed):
            steps = [p[0] for p in per_seed[0]]
            curves[label] = (steps, np.mean([[p[1] for p in s] for s in per_seed], axis=0))
    return curves


def _probe_section(res: Results, out: Path, paper: dict) -> tuple[list[str], list[str]]:
    """Fig 7: linear-probe accuracy of the weather at the icon's adapter output, and t-SNE."""
    rows, points = [], {}
    for label in res.labels("fig7"):
        accs = []
        for k in res.groups[("fig7", label)]:
            if (result := res.probe(k)) is not None:
                accs.append(result["weather_probe_acc"])
                tsne = res.root / "runs" / k / "probe" / "tsne.npy"
                if label not in points and tsne.exists():
                    points[label] = np.load(tsne)
        if accs:
            ref = paper["fig7_probe"]["rows"].get(label)
            rows.append(f"| {label} | {len(accs)} | {np.mean(accs):.1f} (min {min(accs):.1f}) | {_fmt(ref)} |")
    if not rows:
        return [], []
    figs = []
    if points:
        from uvlm.suites.probe import tsne_figure

        tsne_figure(points, out / "fig-7-tsne.png")
        figs.append("fig-7-tsne.png")
    lines = ["## Fig 7: weather in the understanding adapter's output (weather-biased models)", "",
             "Linear probe, 4,000 train / 1,000 test adapter outputs at the weather icon's token.", "",
             "| model | seeds | probe accuracy (ours) | paper |", "|---|---|---|---|", *rows, ""]
    return lines, figs


def _cost_section(res: Results, wall: dict[str, float]) -> list[str]:
    """Wall time spent per suite, and what each suite's cpu grid at 3 seeds would cost: its runs'
    training records times the median seconds per record of its finished runs. A suite's grid is
    the rows this folder's suites were run with (all of them unless `--rows` chose some)."""
    from uvlm.suites.spec import SUITES, expand

    rows = ["| suite | runs done | one-core hours spent | runs at 3 seeds | estimated one-core hours at 3 seeds "
            "(2 cores) |", "|---|---|---|---|---|"]
    rates = record_rates(res.root, wall)  # each run's files read once, for every suite's estimate
    every: dict[str, int] = {}
    for suite in SUITES:
        jobs = expand(suite, "cpu", 3, tuple(overrides_of(res.root)))
        every |= {j.key: j.records for j in jobs}
        grid = {j.key: j.records for j in jobs if (j.table, j.label) in res.planned}
        tables = {j.table for j in jobs}
        done = [k for k in {k for (t, _), keys in res.groups.items() if t in tables for k in keys} if k in wall]
        if done_rates := [rates[k] for k in done if k in rates]:
            est = sum(grid.values()) * float(np.median(done_rates)) / 3600
            spent = sum(wall[k] for k in done) / 3600
            rows.append(f"| {suite} | {len(done)} | {spent:.1f} | {len(grid)} | {est:.1f} ({est / 2:.1f}) |")
    median = float(np.median(list(wall.values())))
    lines = ["## Cost", "", f"Wall time per run (train + eval, one thread): median {median / 60:.1f} min; "
             f"{sum(wall.values()) / 3600:.2f} h of one core for these {len(wall)} runs. A suite's runs go "
             "two at a time on 2 cores, so its wall-clock time is about half its one-core hours. Estimates "
             "scale each run by its training records (epochs included) at the median seconds per record.", "",
             *rows, ""]
    if rates:
        full = sum(every.values()) * float(np.median(list(rates.values()))) / 3600
        lines += [f"The full cpu grid (`uvlm suite run all --seeds 3`) is {len(every)} runs: about {full:.0f} h "
                  f"of one core, {full / 2:.0f} h on 2 cores.", ""]
    return lines


def write_report(results: Path, out: Path) -> Path:
    """Write out/README.md and the figures; return the README's path."""
    res = Results(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paper = paper_tables()
    wall = res.wall()
    lines = ["# uvlm report (generated by `uvlm report`; do not edit by hand)", "",
             f"Results: `{results}`. {len(wall)} runs. Cells: mean over seeds with a 95% interval from a "
             "two-level bootstrap (test questions paired, seeds resampled); percent. The paper reports one "
             "seed per cell; with one seed our intervals reflect test-question noise only. `judge (gen)`: the "
             "judge's score of each generated image on the attributes its prompt named, averaged over prompts "
             "(a prompt with no complete image scores 0; the paper has no such column). `domain FID`: FID in "
             "the judge's feature space (not comparable to the paper's Inception FID).", ""]
    if overrides := overrides_of(results):
        lines += [f"Every run here changes its preset with {', '.join(f'`--set {o}`' for o in overrides)}.", ""]
    for table in res.tables():
        if table != "fig7":  # the probe's runs are A5's; the probe section below shows what is new
            lines += [f"## {TITLES.get(table, table)}", "", _table(res, table, paper), ""]
    verdicts = findings(res)
    if verdicts:
        lines += ["## The paper's findings, tested on our numbers", "",
                  "Each effect is a difference (or difference of differences) of means, in points; the interval "
                  "and p-value come from the same paired bootstrap. reproduced: interval above 0; not reproduced: "
                  "below 0; inconclusive: contains 0.", "", *verdicts, ""]
    probe_lines, probe_fig = _probe_section(res, out, paper)
    lines += probe_lines
    figures = _figures(res, out) + probe_fig
    if figures:
        lines += ["## Figures", "", *[f"![{f}]({f})" for f in figures], ""]
    if wall:
        lines += _cost_section(res, wall)
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
