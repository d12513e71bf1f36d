"""`uvlm report results/ --out report/`: our tables beside the paper's, verdicts, figures.

Cells are means over seeds with 95% hierarchical-bootstrap intervals (uvlm.suites.stats);
the rows come from uvlm.suites.results, the verdicts from uvlm.suites.findings and the
figures from uvlm.suites.figures. Nothing is typed in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uvlm.io import atomic_write_text, make_folder
from uvlm.suites.figures import figures
from uvlm.suites.findings import findings
from uvlm.suites.results import COLUMNS, KEY_COLUMN, TITLES, Results, paper_rows, paper_tables
from uvlm.suites.runner import overrides_of, record_rates
from uvlm.suites.stats import cell_interval


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
    training records times the median seconds per record of its finished runs (of all runs while
    it has none). A suite's grid is the rows this folder's suites were run with (all of them
    unless `--rows` chose some)."""
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
        if not grid and not done:
            continue
        # a suite with no finished run yet is priced at the median rate of every run
        if done_rates := [rates[k] for k in done if k in rates] or list(rates.values()):
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
    make_folder(out, "report")
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
    made = figures(res, out, paper) + probe_fig
    if made:
        lines += ["## Figures", "", *[f"![{f}]({f})" for f in made], ""]
    if wall:
        lines += _cost_section(res, wall)
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
