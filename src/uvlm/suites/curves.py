"""Fig 3 as the paper draws it: mutual benefits during training, in three panels per dataset.

(a) understanding of the SigLIP-input rows, (b) understanding of the VQ-input rows, (c) judged
generation of the rows that draw images. Each row is its seeds' mean at each evaluation point
(`train.eval_points`, read from the runs' metrics.jsonl) with a 95% t-band over seeds, a
step-matched control dashed in its row's colour; chance drawn across (a random answer dashed,
the best constant answer dotted; for generation, drawn by the VQ-output rows whose images the
pixel judge reads, its constant answer and constant image),
the y axis wide enough to show it, one colour per row within a panel, the legend under the data.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from uvlm.io import read_jsonl
from uvlm.model.names import parse_name
from uvlm.suites.results import Results, dataset_of

# (metric in metrics.jsonl, panel title, which rows: input space for understanding, else output)
PANELS = (("vqa_total_acc", "(a) understanding, SigLIP input", ("input", "siglip")),
          ("vqa_total_acc", "(b) understanding, VQ input", ("input", "vq")),
          ("gen_judge_total_acc", "(c) generation (judge), VQ output", ("output", "vq")))
CONTROL = " (step-matched"  # "X (step-matched)", or a variant's "X_u (step-matched to LABEL)"


def _base(label: str) -> str:
    """The row a label draws in the colour of: a control's own row (a variant's control: its variant's)."""
    head, _, rest = label.partition(CONTROL)
    return rest.removeprefix(" to ").removesuffix(")") or head


def _in_panel(label: str, which: tuple[str, str | None]) -> bool:
    arch = parse_name(label.split(" ")[0])
    side, space = which
    return (arch.input_space if side == "input" else arch.output_space) == space


def curve(res: Results, table: str, label: str, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(fraction of training, seeds' mean, 95% half-width over seeds: 0 with one seed) of a row's
    evaluation points; None where its runs logged none, or differently many."""
    per_seed = []
    for key in res.groups.get((table, label), []):
        path = res.root / "runs" / key / "metrics.jsonl"
        evals = [e for e in (read_jsonl(path, "training log", "train the run again") if path.exists() else [])
                 if e.get("event") == "eval" and e.get(metric) is not None]
        if evals:
            per_seed.append([(e["step"] / evals[-1]["step"], e[metric]) for e in evals])
    if not per_seed or any(len(s) != len(per_seed[0]) for s in per_seed):
        return None
    values = np.array([[v for _, v in s] for s in per_seed])
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(values.shape[1])
    return np.array([x for x, _ in per_seed[0]]), values.mean(axis=0), half


def draw_fig3(res: Results, table: str):
    """Fig 3's panels for one table (A3 or A3-celeba) as a matplotlib figure; None when no row has
    curves."""
    import matplotlib.pyplot as plt

    labels = res.labels(table)
    chance = res.chance(table)
    drawn, left_out = False, []
    fig, axes = plt.subplots(1, 3, figsize=(14, 5.2))
    for ax, (metric, title, which) in zip(axes, PANELS, strict=True):
        rows = [label for label in labels if _in_panel(label, which)]
        bases = list(dict.fromkeys(_base(x) for x in rows))
        palette = plt.get_cmap("tab10" if len(bases) <= 10 else "tab20")
        colours = {row: palette(i % palette.N) for i, row in enumerate(bases)}
        low, high = [], []
        for label in rows:
            found = curve(res, table, label, metric)
            if found is None:
                if res.groups.get((table, label)):  # runs without these points, or with unequal ones
                    left_out.append(f"{label} ({title[:3]})")
                continue
            x, mean, half = found
            colour = colours[_base(label)]
            control = CONTROL in label
            ax.plot(x, mean, color=colour, ls="--" if control else "-", marker="o", ms=3,
                    mfc="white" if control else colour, label=label)
            ax.fill_between(x, np.clip(mean - half, 0, 100), np.clip(mean + half, 0, 100), color=colour, alpha=0.15,
                            lw=0)
            low.append(float((mean - half).min()))
            high.append(float((mean + half).max()))
            drawn = True
        if not rows:  # a folder of some rows only (a pilot): say why the panel is empty
            ax.text(0.5, 0.5, "no runs of these rows in this folder", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8, color="grey")
        bars = _chance(res, table, metric, chance)
        for value, style, name in bars:
            ax.axhline(value, color="grey", ls=style, lw=0.9, label=name)
        if low:
            floor = min(low + [v for v, _, _ in bars])
            ceiling = max(high + [v for v, _, _ in bars])
            ax.set_ylim(max(0.0, floor - 5), min(100.0, ceiling + 5))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training progress (fraction of steps)")
        ax.set_ylabel("VQA total_acc (eval slice)" if metric.startswith("vqa") else "judge total_acc")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    dataset = "CelebA" if dataset_of(table) == "celeba" else "SmartWatch"
    fig.suptitle(f"Fig 3 (ours, {dataset}): understanding and generation during training, default mix; "
                 "seeds' mean with a 95% band", fontsize=10)
    if left_out:  # said on the figure itself, so that no row goes missing unremarked
        fig.text(0.01, 0.005, "not drawn (no evaluation points, or seeds that logged different ones): "
                 + ", ".join(left_out), fontsize=6, color="grey")
    fig.tight_layout()
    if not drawn:
        plt.close(fig)
        return None
    return fig


def _chance(res: Results, table: str, metric: str, chance: dict | None) -> list[tuple[float, str, str]]:
    """The chance lines of a panel: (value, line style, legend name)."""
    if metric.startswith("vqa"):
        if not chance:
            return []
        return [(chance["random"]["total_acc"], "--", "chance: random answer"),
                (chance["constant"]["total_acc"], ":", "chance: best constant answer")]
    base = res.judge_baselines("vq", dataset_of(table))
    if not base:
        return []
    # the bar the report's judge cells must clear (uvlm.suites.results.judge_bar) is the highest of these
    return [(base[name]["total_acc"], style, f"judge: {label}") for name, style, label in
            (("best constant answer", ":", "best constant answer"), ("constant", "-.", "constant image"),
             ("shuffled", "--", "real images of other prompts")) if name in base]
