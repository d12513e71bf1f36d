"""`uvlm report results/ --out report/`: our tables beside the paper's, verdicts, figures.

Cells are means over seeds with 95% t-intervals over seeds and questions (uvlm.suites.stats);
the rows come from uvlm.suites.results, the verdicts from uvlm.suites.findings and the
figures from uvlm.suites.figures. Nothing is typed in.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uvlm.data.smartwatch import WEATHERS
from uvlm.errors import UvlmError
from uvlm.io import atomic_write_text, exclusive, holds_files, make_folder, sweep_temporaries
from uvlm.suites.figures import figures
from uvlm.suites.findings import findings
from uvlm.suites.results import (
    KEY_COLUMN,
    TITLES,
    Results,
    columns,
    dataset_of,
    output_space,
    paper_rows,
    paper_tables,
)
from uvlm.suites.runner import overrides_of, preset_of, probe_folder, record_rates, run_summary, run_threads
from uvlm.suites.stats import cell_interval
from uvlm.suites.table2 import table2_section
from uvlm.suites.words import NOT_SHOWN, phrase

AT_CHANCE = "°"  # the cell's interval does not clear chance
INVALID = "invalid‡"  # SigLIP-output generation judged under the old protocol


def _cell(scores: np.ndarray | None, bar: float | None = None) -> str:
    """mean [95% CI] (an interval on a proportion: inside 0-100 by construction), marked where it
    is not shown to clear `bar` (chance)."""
    if scores is None or scores.size == 0:
        return "-"
    cell = cell_interval(scores)
    return cell.fmt() + (AT_CHANCE if phrase(cell, bar) == NOT_SHOWN else "")


def _table(res: Results, table: str, paper: dict) -> str:
    rows = paper_rows(paper, table)
    # the biased tables' point is the held-out attribute, so the paper's value of it sits beside the total
    key = KEY_COLUMN.get(table, "total_acc")
    extra = [key] if key != "total_acc" else []
    cols = columns(table)
    head = ["model", "seeds", *[c.removesuffix("_acc") for c in cols], "paper total",
            *[f"paper {c.removesuffix('_acc')}" for c in extra], "judge (gen)", "domain FID", "paper FID"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    chance = res.chance(table)
    labels = res.labels(table)
    spaces = {output_space(label) for label in labels} - {None}
    judged = {space: res.judge_baselines(space, dataset_of(table)) for space in spaces}
    if chance:
        for kind, name in (("random", "random answer"), ("constant", "best constant answer")):
            gen = {(b or {}).get(name, {}).get("total_acc") for b in judged.values()} - {None}
            gen_cell = " / ".join(f"{v:.1f}" for v in sorted(gen)) or "-"  # the same prompts for every space
            lines.append("| " + " | ".join([f"*chance: {name}*", "", *[_fmt(chance[kind][c]) for c in cols], "",
                                            *["" for _ in extra], gen_cell, "", ""]) + " |")
    for label in labels:
        n = len(res.groups[(table, label)])
        cells = [_cell(res.vqa_scores(table, label, c), chance["constant"][c] if chance else None) for c in cols]
        ref = rows.get(label, {})
        fids = res.values(table, label, ("gen", "fid"))
        space = output_space(label)
        if space is None:
            gen_cell = "-"
        elif not res.gen_valid(table, label):
            gen_cell = INVALID
        else:
            gen_cell = _cell(res.gen_scores(table, label), res.bar(table, label, "gen"))
        lines.append("| " + " | ".join([label, str(n), *cells, _fmt(ref.get("total_acc")),
                                        *[_fmt(ref.get(c)) for c in extra], gen_cell,
                                        f"{np.mean(fids):.1f}" if fids else "-", _fmt(ref.get("fid"))]) + " |")
    return "\n".join(lines)


def _baselines_section(res: Results) -> list[str]:
    """The judge's reading of images no model drew, per output space: the scale for `judge (gen)`."""
    names = {"real": "real test images (the judge's ceiling)",
             "reconstructed": "real images through the VQ (a VQ-output model's ceiling)",
             "shuffled": "real images of other prompts", "constant": "one image for every prompt (the mean)",
             "best constant answer": "best constant answer", "random answer": "random answer"}
    lines = []
    for dataset, table in (("smartwatch", "A3"), ("celeba", "T1-celeba")):
        cols, rows = columns(table), []
        for space in ("vq", "siglip"):
            if not any(output_space(label) == space and dataset_of(t) == dataset for t, label in res.groups):
                continue
            base = res.judge_baselines(space, dataset)
            if not base:
                rows.append(f"| {space} | not recorded: evaluate one run of this output space with `uvlm eval` | "
                            + " | ".join("" for _ in cols) + " |")
                continue
            for key, text in names.items():
                if key in base:
                    rows.append(f"| {space} | {text} | " + " | ".join(_fmt(base[key].get(c)) for c in cols) + " |")
        if rows:
            head = ["output space", "images", *[c.removesuffix("_acc") for c in cols]]
            lines += [f"**{'CelebA' if dataset == 'celeba' else 'SmartWatch'}**", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows, ""]
    if not lines:
        return []
    return ["## The judge's baselines", "",
            "What the judge gives images that no model drew, on the same generation prompts and attributes as "
            "`judge (gen)`. A generated image follows its prompt only where its score clears the best of the "
            "constant answer, the constant image and the shuffled real images (a cell marked " + AT_CHANCE + " does "
            "not). CelebA's judge is trained on the run's own training faces; CelebA's labels are noisy, so its "
            "ceiling (real images) sits below 100.", "", *lines]


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _probe_section(res: Results, out: Path, paper: dict) -> tuple[list[str], list[str]]:
    """Fig 7: linear-probe accuracy of the weather at the icon's adapter output, and t-SNE."""
    rows, points = [], {}
    for label in res.labels("fig7"):
        for k in res.groups[("fig7", label)]:
            tsne = probe_folder(res.root / "runs" / k) / "tsne.npy"
            if label not in points and res.probe(k) is not None and tsne.exists():
                points[label] = np.load(tsne)
        scores = res.probe_scores("fig7", label)
        if scores is not None:
            ref = paper["fig7_probe"]["rows"].get(label)
            rows.append(f"| {label} | {len(scores)} | {_cell(scores, 100 / len(WEATHERS))} | {_fmt(ref)} |")
    if not rows:
        return [], []
    figs = []
    if points:
        from uvlm.suites.probe import tsne_figure

        tsne_figure(points, out / "fig-7-tsne.png")
        figs.append("fig-7-tsne.png")
    lines = ["## Fig 7: weather in the understanding adapter's output (weather-biased models)", "",
             "Linear probe, 4,000 train / 1,000 test adapter outputs at the weather icon's token; accuracy "
             f"over seeds with its 95% interval ({AT_CHANCE}: not shown to clear chance, "
             f"{100 / len(WEATHERS):.1f}).", "",
             "| model | seeds | probe accuracy (ours) | paper |", "|---|---|---|---|", *rows, ""]
    return lines, figs


@dataclass(frozen=True)
class SuiteCost:
    """One suite's time in a results folder: what its finished runs spent, and what its grid at 3
    seeds would cost at the median seconds per training record of those runs."""

    name: str
    done: int  # finished runs (wall.json written)
    spent_hours: float  # one-core hours those runs took, train + eval
    planned: int  # runs in its grid at 3 seeds
    estimate_hours: float  # one-core hours of the whole grid at 3 seeds


def suite_costs(res: Results, core: dict[str, float], variants=None) -> tuple[list[SuiteCost], int, float | None]:
    """Each suite's cost in `res` (the folder's preset), and the full SmartWatch grid's run count and
    estimated one-core hours (None before any run has finished). A suite's grid is the rows this
    folder's suites were run with (all of them unless `--rows` chose some), with the folder's
    `variants`; a suite with no finished run yet is priced at the median rate of every run. The
    full grid is the paper's alone. `core`: each finished run's one-core seconds (core_seconds)."""
    from uvlm.suites.runner import with_folders
    from uvlm.suites.spec import CELEBA_SUITES, SUITES, expand

    rates = record_rates(res.root, core)  # each run's files read once, for every suite's estimate
    every: dict[str, int] = {}
    costs = []
    preset, overrides, copy = preset_of(res.root), tuple(overrides_of(res.root)), _celeba_copy(res)
    celeba_halves = [(f"{s} (CelebA)", s, copy) for s in CELEBA_SUITES] if copy else []
    for name, suite, celeba in [(s, s, None) for s in SUITES] + celeba_halves:
        try:
            jobs = expand(suite, preset, 3, overrides, celeba=celeba, variants=variants)
            jobs = with_folders(jobs, res.root)
            records = {j.key: j.records for j in jobs}  # each job's config is read here
        except UvlmError:  # overrides only CelebA's datasets take (a CelebA-only folder): no SmartWatch grid
            continue
        if celeba is None:  # `suite run all` is SmartWatch's grid
            every |= {j.identity: records[j.key] for j in jobs if not j.variant}  # a run suites share: once
        grid = {j.key: records[j.key] for j in jobs if (j.table, j.label) in res.planned}
        tables = {j.table for j in jobs}
        done = [k for k in {k for (t, _), keys in res.groups.items() if t in tables for k in keys} if k in core]
        if not grid and not done:
            continue
        if done_rates := [rates[k] for k in done if k in rates] or list(rates.values()):
            costs.append(SuiteCost(name, len(done), sum(core[k] for k in done) / 3600, len(grid),
                                   sum(grid.values()) * float(np.median(done_rates)) / 3600))
    full = sum(every.values()) * float(np.median(list(rates.values()))) / 3600 if rates else None
    return costs, len(every), full


def _cost_section(res: Results, wall: dict[str, float], variants=None) -> list[str]:
    """Wall time spent per suite, and what each suite's grid at 3 seeds would cost (suite_costs), in
    one-core hours: a run's wall time times the threads it trained on."""
    threads = {k: run_threads(res.root, k) for k in wall}
    core = {k: wall[k] * threads[k] for k in wall}
    costs, n_every, full = suite_costs(res, core, variants)
    rows = ["| suite | runs done | one-core hours spent | runs at 3 seeds | estimated one-core hours at 3 seeds "
            "(2 cores) |", "|---|---|---|---|---|"]
    rows += [f"| {c.name} | {c.done} | {c.spent_hours:.1f} | {c.planned} | {c.estimate_hours:.1f} "
             f"({c.estimate_hours / 2:.1f}) |" for c in costs]
    median = float(np.median(list(wall.values())))
    missing = len(res.finished()) - len(wall)
    untimed = f" ({missing} finished run{'s' * (missing > 1)} recorded no wall time and count nowhere here)" \
        if missing else ""
    on = " or ".join("one thread" if n == 1 else f"{n} threads" for n in sorted(set(threads.values())))
    lines = ["## Cost", "", f"Wall time per run (train + eval, {on}): median {median / 60:.1f} min; "
             f"{sum(core.values()) / 3600:.2f} h of one core for these {len(wall)} runs{untimed}. A suite's runs fill "
             "2 cores (two one-thread runs at a time, or one on two threads), so its wall-clock time is about "
             "half its one-core hours. Estimates "
             "scale each run by its training records (epochs included) at the median seconds per record. "
             "A run two suites share (SigLIP_u is in A3 and Table 1; Fig 7's runs are A5's) counts in "
             "both, so the rows do not add up.", "",
             *rows, ""]
    if full is not None:
        preset = preset_of(res.root)
        flag = "" if preset == "cpu" else f" --preset {preset}"
        flag += "".join(f" --set {o}" for o in overrides_of(res.root))  # the grid counted is this folder's
        lines += [f"The full {preset} grid (`uvlm suite run all{flag} --seeds 3`) is {n_every} runs: about "
                  f"{full:.0f} h of one core, {full / 2:.0f} h on 2 cores.", ""]
    return lines


def _celeba_copy(res: Results) -> str | None:
    """The copy of CelebA this folder's CelebA runs were made from (their configs name it), if any."""
    import yaml

    for (table, _), keys in sorted(res.groups.items()):
        if dataset_of(table) == "celeba":
            try:
                train = yaml.safe_load((res.root / "configs" / f"{keys[0]}.yaml").read_text())["data"]["train"]
            except (OSError, yaml.YAMLError, KeyError, TypeError):  # no config to read: priced as before
                return None
            return train.get("celeba") if isinstance(train, dict) else None
    return None


def _record_baselines(res: Results) -> None:
    """Judge baselines for output spaces whose runs were all evaluated before metrics.json held
    them: computed once from a run's config (cached encoders and judge) into baselines.json."""
    for space in ("vq", "siglip"):
        keys = [k for (table, label), ks in res.groups.items()
                if output_space(label) == space and dataset_of(table) == "smartwatch" for k in ks]
        if not keys or res.judge_baselines(space) is not None:
            continue
        run = res.root / "runs" / keys[0]
        if (run / "config.yaml").exists():
            from uvlm.eval.evaluate import run_judge_baselines  # transformers: only when there is work

            res.store_baselines(space, run_judge_baselines(run))


REPORT_TITLE = "# uvlm report"
# Written before anything else, so that a folder a killed `uvlm report` left half-written
# (figures but no README yet) is still recognised as a report on the rerun.
REPORT_MARKER = ".uvlm-report"


def _check_report_folder(out: Path) -> None:
    """A report goes to a new or empty folder, or replaces an earlier report: never over a
    project's own README or into a results or dataset folder."""
    if not out.is_dir() or not holds_files(out):
        return
    readme = out / "README.md"
    try:
        ours = (out / REPORT_MARKER).is_file() or readme.read_text(encoding="utf-8").startswith(REPORT_TITLE)
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise UvlmError(f"--out {out} holds files that are not a uvlm report; give a new or empty folder "
                        "(e.g. --out report)")


def write_report(results: Path, out: Path, samples: Path | None = None, variants: Path | None = None) -> Path:
    """Write out/README.md and the figures; return the README's path. A folder of Table 2's runs
    alone (RESULTS/llava/, no suite) gets a report of Table 2 alone. `samples`: a sheet of generated
    images (uvlm.eval.sheet.draw_sheet) shown under its own heading. `variants`: a variants file
    whose rows and comparisons join the folder's record of its suites' variants."""
    from uvlm.suites.variants import merged_variants

    only_table2 = not (Path(results) / "jobs.json").exists() and (Path(results) / "llava").is_dir()
    res = None if only_table2 else Results(results)
    own = None
    if res is not None:
        preset = preset_of(results)
        own = merged_variants(results, variants, preset)
    out = Path(out)
    make_folder(out, "report")
    with exclusive(out, "`uvlm report`"):
        _check_report_folder(out)
        sweep_temporaries(out)
        atomic_write_text(out / REPORT_MARKER, "written by `uvlm report`\n")
        if only_table2:
            lines = [f"{REPORT_TITLE} (generated by `uvlm report`; do not edit by hand)", "",
                     f"Results: `{results}`: Table 2's runs only.", "", *table2_section(results, paper_tables())]
            atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
            return out / "README.md"
        if samples is not None:
            shutil.copyfile(samples, out / "samples.png")
        return _write_report(res, results, out, samples is not None, own)


def _encoders_section(res: Results) -> list[str]:
    """How many finished runs read each encoder's weights (the fingerprints in final.json). Stand-ins
    are rebuilt on each machine and may differ in their last bits, so a study run across machines
    says here which runs shared them."""
    seen: Counter[str] = Counter()
    unrecorded = 0
    for key in sorted(res.finished()):
        encoders = (run_summary(res.root, key) or {}).get("encoders") or {}
        unrecorded += not encoders
        seen.update(set(encoders.values()))
    if not seen:
        return []
    lines = ["## Encoder weights", "", "Fingerprints of the encoder weights the finished runs read (`encoders` in "
             "each run's final.json). Stand-ins are rebuilt on each machine, not always to the same bits.", "",
             "| encoder | runs |", "|---|---|", *[f"| `{f}` | {n} |" for f, n in sorted(seen.items())]]
    if unrecorded:
        lines.append(f"| *not recorded (runs from before the record)* | {unrecorded} |")
    return [*lines, ""]


def _write_report(res: Results, results: Path, out: Path, samples: bool = False, variants=None) -> Path:
    """The report of a suites' folder; `variants`: its Variants (uvlm.suites.variants), if any."""
    paper = paper_tables()
    wall = res.wall()
    _record_baselines(res)
    lines = [f"{REPORT_TITLE} (generated by `uvlm report`; do not edit by hand)", "",
             f"Results: `{results}`, preset `{preset_of(results)}`. {len(res.finished())} runs. "
             "Cells: mean over seeds with a 95% interval that counts both the seeds (the unit of replication, "
             "at seed-level degrees of freedom: with 3 seeds, t with 2 df) and the test questions, built as an "
             "exact binomial interval on the cell's effective number of answers, so it lies inside 0-100 and "
             "narrows as the seeds agree; percent (uvlm.suites.stats). A row whose seeds disagree gets a wide "
             "one. The paper reports one seed per cell; a row with one seed has no seed variance to estimate, so "
             "its interval covers test questions only and it gets no verdict.", "",
             "Chance sits above every table, computed from the test questions' true answers: a random answer "
             "(time scores exactly 50, battery about 66) and the best constant answer (one answer per "
             f"attribute, e.g. always the most common weather). {AT_CHANCE}: the cell's interval does not "
             "clear the best constant answer, so the model has not been shown to read that attribute.", "",
             "`judge (gen)`: the judge's score of each generated image on the attributes its prompt named, "
             "pooled over every attribute of every prompt as the judge's baselines are (a prompt with no complete "
             "image scores 0; the paper has no such column); "
             f"{AT_CHANCE} when it does not clear the best of a constant answer, a constant image and real "
             f"images of other prompts (see the judge's baselines). {INVALID}: SigLIP-output generations judged "
             "before generated vectors were rescaled and judged by direction; such runs must be retrained "
             "(weights are not committed) and evaluated again. `domain FID`: FID in the judge's feature space "
             "(not comparable to the paper's Inception FID).", ""]
    if overrides := overrides_of(results):
        lines += [f"Every run here changes its preset with {', '.join(f'`--set {o}`' for o in overrides)}.", ""]
    for table in res.tables():
        if table != "fig7":  # the probe's runs are A5's; the probe section below shows what is new
            lines += [f"## {TITLES.get(table, table)}", "", _table(res, table, paper), ""]
    primary, secondary, own = findings(res, paper, variants.comparisons if variants else ())
    if primary or secondary or own:
        lines += ["## The paper's findings, tested on our numbers", "",
                  "Each effect is a contrast of row means in points (a difference, a mean of differences, a "
                  "difference of differences, or a slope), paired over test questions, with seeds as the unit of "
                  "replication. `p` is two-sided and unadjusted; `Holm p` is adjusted within the finding's family, "
                  "and the verdict is called on it: **holds** (Holm p < 0.05, effect > 0), **against the paper** "
                  "(Holm p < 0.05, effect < 0), otherwise **inconclusive**, or **both at chance** (**all at "
                  "chance**) where no row it compares clears its chance bar. A finding with a one-seed row gets no "
                  "verdict. `seeds`: the fewest seeds of any row in it. `detectable`: the smallest true effect its "
                  "test finds with 80% power at Holm's first level of its family (0.05 / the family's size), at "
                  "its seeds and its rows' measured seed SDs (uvlm.suites.stats).", ""]
    if primary:
        lines += ["### Primary family: the paper's headline claims", "",
                  "One finding per claim that the paper states as a headline in its abstract and introduction, "
                  "quoted, declared in `uvlm.suites.findings` before any result and Holm-adjusted as one family. "
                  "Where a claim covers several architectures, the finding is the mean over the rows the paper's "
                  "table gives for it. `paper`: the same contrast on the paper's one-seed numbers (none for "
                  "generation, which the paper scores by FID); `seeds for the paper's effect`: the seeds per row "
                  "at which the test finds an effect of the paper's size with 80% power at this family's first "
                  "Holm level, given our rows' measured seed SDs.", "", *primary, ""]
    if secondary:
        lines += ["### Secondary family: every other finding", "",
                  "Single pairs of rows, step-matched controls, doses, slopes per model and CelebA halves: Holm-"
                  "adjusted as a family of their own, so they never dilute the primary family.", "",
                  *secondary, ""]
    if own:
        lines += ["### Your variants' comparisons", "",
                  "The comparisons of this folder's variants file (`uvlm suite run --variants`, docs/variants.md): "
                  "Holm-adjusted as a family of their own, so the paper's findings above keep their families and "
                  "their p.", "", *own, ""]
    lines += _baselines_section(res)
    lines += table2_section(results, paper)
    probe_lines, probe_fig = _probe_section(res, out, paper)
    lines += probe_lines
    made = figures(res, out, paper) + probe_fig
    if made:
        lines += ["## Figures", "", *[f"![{f}]({f})" for f in made], ""]
    if samples:
        lines += ["## Generated images", "", "What a unified model draws for test prompts, each under its prompt "
                  "(greedy; a grey tile: the model did not open an image).", "", "![samples](samples.png)", ""]
    if wall:
        lines += _cost_section(res, wall, variants)
    lines += _encoders_section(res)
    path = out / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
