"""The report's figures in the paper's spirit: bars beside the paper (Fig 1, 5, 6), training
curves (Fig 3), data scaling (Fig 4) and the transfer dose-response, each with 95% intervals
and chance drawn across (a random answer dashed, the best constant answer dotted)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np

from uvlm.io import atomic_write_bytes
from uvlm.suites.curves import draw_fig3
from uvlm.suites.results import KEY_COLUMN, TITLES, Results, dataset_of, paper_rows
from uvlm.suites.spec import (
    DOSE_PAIRS,
    DOSES,
    PAPER_UND,
    SCALING_ROWS,
    dose_label,
    matched,
    matched_label,
    scaling_curves,
)
from uvlm.suites.stats import Interval, cell_interval


def save_figure(fig, path: Path) -> None:
    """Write `fig` as a PNG atomically (a killed report leaves no truncated figure) and close it."""
    import matplotlib.pyplot as plt

    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue(), durable=False)


def figures(res: Results, out: Path, paper: dict) -> list[str]:
    """Draw every figure the results allow into `out`, the paper's numbers beside ours; return the
    file names drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for table in ("A3", "A3-celeba", "A5", "A6"):
        labels = res.labels(table)
        if not labels:
            continue
        column = KEY_COLUMN.get(table, "total_acc")
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
        _chance_lines(ax, res.chance(table), column)
        ax.set_xticks(x, [label for label, _ in keep], rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(column)
        ax.set_ylim(0, 105)
        ax.set_title(TITLES[table], fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        name = f"fig-{table}.png"
        save_figure(fig, out / name)
        made.append(name)
    for table, name in (("A3", "fig-3-curves.png"), ("A3-celeba", "fig-3-curves-celeba.png")):
        if (fig := draw_fig3(res, table)) is not None:
            save_figure(fig, out / name)
            made.append(name)
    for table, name in (("A4", "fig-4-scaling.png"), ("A4-celeba", "fig-4-scaling-celeba.png")):
        if _scaling_figure(res, table, out / name, paper):
            made.append(name)
    for bias in ("weather", "battery"):
        if _dose_figure(res, bias, out / f"fig-dose-{bias}.png"):
            made.append(f"fig-dose-{bias}.png")
    return made


def _chance_lines(ax, chance: dict | None, column: str) -> None:
    """Chance of one column across the axes: a random answer and the best constant answer."""
    if not chance or chance["random"].get(column) is None:
        return
    ax.axhline(chance["random"][column], color="grey", ls="--", lw=0.8, label="chance: random answer")
    ax.axhline(chance["constant"][column], color="grey", ls=":", lw=1.0, label="chance: best constant answer")


def _judge_lines(ax, baselines: dict | None) -> None:
    """The judge's chance: the best constant answer, and one constant image for every prompt."""
    if not baselines:
        return
    ax.axhline(baselines["best constant answer"]["total_acc"], color="grey", ls=":", lw=1.0,
               label="judge: best constant answer")
    ax.axhline(baselines["constant"]["total_acc"], color="grey", ls="-.", lw=0.8, label="judge: constant image")


def _interval(res: Results, table: str, label: str, column: str) -> Interval | None:
    scores = res.scores(table, label, column)
    return None if scores is None else cell_interval(scores)


def _errorbar(ax, xs: list, cells: list[Interval | None], **style) -> bool:
    """Plot the cells that exist as means with 95% intervals; say whether any did."""
    pts = [(x, c) for x, c in zip(xs, cells, strict=True) if c is not None]
    if pts:
        ax.errorbar([x for x, _ in pts], [c.mean for _, c in pts], capsize=3, marker="o",
                    yerr=[[c.mean - c.low for _, c in pts], [c.high - c.mean for _, c in pts]], **style)
    return bool(pts)


def _scaling_figure(res: Results, table: str, path: Path, paper: dict) -> bool:
    """Fig 4: VQA and judged generation along each data sweep of table A4 (or its CelebA panels,
    A4-celeba, which the paper draws without numbers)."""
    import matplotlib.pyplot as plt

    if not res.labels(table):
        return False
    ref = paper_rows(paper, table)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6))
    for row, (sweep, what) in enumerate((("und", "understanding"), ("gen", "generation"))):
        for col, (column, ylabel) in enumerate((("total_acc", "VQA total_acc"), ("gen", "judge (gen)"))):
            ax = axes[row, col]
            for i, name in enumerate(SCALING_ROWS):
                points = scaling_curves(name)[sweep]
                xs = [k for k, _ in points]
                color = f"C{i}"
                _errorbar(ax, xs, [_interval(res, table, label, column) for _, label in points], color=color,
                          label=f"{name} (ours)")
                if column == "total_acc":
                    paper_pts = [(k, ref[label]["total_acc"]) for k, label in points
                                 if ref.get(label, {}).get("total_acc") is not None]
                    if paper_pts:  # none on CelebA: the paper draws those panels without numbers
                        ax.plot([k for k, _ in paper_pts], [v for _, v in paper_pts], ls=":", marker="x",
                                color=color, label=f"{name} (paper)")
                    if sweep == "gen":
                        ks = [k for k in xs if k]  # the 0K point is the _u model itself
                        controls = [_interval(res, table, matched_label(name, PAPER_UND, k), column) for k in ks]
                        _errorbar(ax, ks, controls, color=color, ls="--", mfc="white",
                                  label=f"{name}: step-matched _u")
            if column == "total_acc":
                _chance_lines(ax, res.chance(table), column)
            else:
                _judge_lines(ax, res.judge_baselines("vq", dataset_of(table)))
            ax.set_xlabel(f"thousands of {what} records (paper scale)")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=6)
    dataset = "CelebA" if dataset_of(table) == "celeba" else "SmartWatch"
    fig.suptitle(f"Fig 4 (ours, {dataset}): scaling one task's data with the other fixed (table {table})",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def _dose_of(label: str) -> float | None:
    """The dose of a row labelled as the sweep labels its points (`VQ-VQ p=0.1`), else None."""
    name, _, p = label.partition(" p=")
    try:
        dose = float(p)
    except ValueError:
        return None
    return dose if any(name in pair for pair in DOSE_PAIRS) and dose_label(name, dose) == label else None


def _dose_figure(res: Results, bias: str, path: Path) -> bool:
    """Accuracy on the biased attribute against the share of VQA that asks it."""
    import matplotlib.pyplot as plt

    table = f"dose-{bias}"
    if not res.labels(table):
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6))
    # the sweep's doses, and any a variant added under the sweep's own labels ("VQ-VQ p=0.1")
    doses = sorted(set(DOSES) | {p for label in res.labels(table) if (p := _dose_of(label)) is not None})
    xs = list(range(len(doses)))
    for i, pair in enumerate(DOSE_PAIRS):
        for name, ls in zip(pair, ("-", "--"), strict=True):
            _errorbar(ax, xs, [_interval(res, table, dose_label(name, p), f"{bias}_acc") for p in doses],
                      color=f"C{i}", ls=ls, label=name)
        asked = [(x, p) for x, p in zip(xs, doses, strict=True) if p]  # no control at p = 0
        _errorbar(ax, [x for x, _ in asked], [_interval(res, table, matched(dose_label(pair[1], p)), f"{bias}_acc")
                                              for _, p in asked], color=f"C{i}", ls=":", mfc="white",
                  label=matched(pair[1]))
    _chance_lines(ax, res.chance(table), f"{bias}_acc")
    ax.set_xticks(xs, [str(p) for p in doses])
    ax.set_xlabel(f"share of VQA records asking {bias} (--bias-vqa-prob)")
    ax.set_ylabel(f"{bias}_acc (unbiased test set)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Transfer dose-response ({bias}-biased mix, ours)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return True
