"""The paper's findings as contrasts of row means, each tested with uvlm.suites.stats.

Two families, each Holm-adjusted on its own. The primary family holds one finding per claim
the paper states as a headline in its abstract and introduction, in the paper's words: it is
fixed by the paper's text, before and whatever our results, so that no result can choose what
is tested first. Where a headline covers several architectures ("across various
architectures", "all unified VLMs"), its finding is the mean over the rows the paper's table
gives for it (a mean, so it can hold while one architecture falls short; the secondary family
tests each pair). Every other finding (one pair of rows, a step-matched control, a dose, a
CelebA half) is secondary: shown and labelled as such, with its own Holm family. A primary
finding whose rows have no runs yet is listed as not run; Holm counts the findings tested.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

import numpy as np

from uvlm.data.smartwatch import WEATHERS
from uvlm.suites.presets import BIAS_VQA_PROB
from uvlm.suites.results import Results, paper_rows
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
)
from uvlm.suites.stats import (
    ALPHA,
    Comparison,
    adjust,
    cell_interval,
    contrast,
    fmt_p,
    minimum_detectable_effect,
    question_variance,
    seed_sd,
    seeds_for_power,
)
from uvlm.suites.words import phrase


class Finding(NamedTuple):
    """A claim of the paper as a contrast: sum of weight x row mean, minus baseline, > 0."""

    text: str
    table: str
    column: str  # a VQA column, "gen" (judged generation) or "probe" (Fig 7 probe accuracy)
    terms: list[tuple[float, str]]  # (weight, row label), each label once
    baseline: float = 0.0
    quote: str = ""  # a primary finding: the paper's words, with where they stand


def mean_terms(plus: list[str], minus: list[str]) -> list[tuple[float, str]]:
    """Weights of mean(plus) - mean(minus), a label listed twice weighing twice."""
    weights: dict[str, float] = defaultdict(float)
    for labels, sign in ((plus, 1.0), (minus, -1.0)):
        for label in labels:
            weights[label] += sign / len(labels)
    return [(w, label) for label, w in weights.items() if w]


UNIFIED_A3 = ("SigLIP-SigLIP", "SigLIP-VQ", "VQ-SigLIP", "VQ-VQ")
UNIFIED_A5 = ("SigLIP-SigLIP", "SigLIP-SigLIP-D", "SigLIP-VQ", "VQ-VQ", "VQ-VQ-D", "VQ-SigLIP")


def _understanding_only(name: str) -> str:
    return name.split("-")[0] + "_u"


def primary_findings() -> list[Finding]:
    """The paper's headline claims (abstract and section 1), one finding each."""
    affine = [(0.5 * w, label) for f in FINDINGS if f.table == "T1" for w, label in f.terms]
    slope = defaultdict(float)
    for name in SCALING_ROWS:
        for w, label in _slope(scaling_curves(name)["gen"]):
            slope[label] += w / len(SCALING_ROWS)
    return [
        Finding("mutual benefit, understanding: the four unified models vs their understanding-only models "
                "(A3 VQA total, mean over architectures)", "A3", "total_acc",
                mean_terms(list(UNIFIED_A3), [_understanding_only(n) for n in UNIFIED_A3]),
                quote="\"unified VLMs trained with mixed data exhibit mutual benefits in understanding and "
                      "generation tasks across various architectures\" (abstract)"),
        Finding("mutual benefit, generation: the VQ-output unified models vs VQ_g (A3 judge score, mean over "
                "SigLIP-VQ and VQ-VQ)", "A3", "gen", mean_terms(["SigLIP-VQ", "VQ-VQ"], ["VQ_g"]),
                quote="\"unified VLMs trained with mixed data exhibit mutual benefits in understanding and "
                      "generation tasks\" (abstract)"),
        Finding("benefits scale with data: VQA total per 100K generation records, mean slope of VQ-VQ and "
                f"SigLIP-VQ (A4, understanding fixed at {PAPER_UND}K)", "A4", "total_acc",
                [(w, label) for label, w in slope.items()],
                quote="\"this mutual benefits can scale up with increased data\" (abstract)"),
        Finding("alignment: aligned unified models (SigLIP-SigLIP, VQ-VQ) vs misaligned ones (SigLIP-VQ, "
                "VQ-SigLIP) (A3 VQA total)", "A3", "total_acc",
                mean_terms(["SigLIP-SigLIP", "VQ-VQ"], ["SigLIP-VQ", "VQ-SigLIP"]),
                quote="\"Better alignment will lead to more significant mutual benefits\" (abstract)"),
        Finding("the affine map reduces unified models' VQA more than understanding-only models' (Table 1 "
                "SmartWatch, mean of the SigLIP and VQ differences of differences)", "T1", "total_acc", affine,
                quote="\"such disruptions significantly reduce the mutual benefits in unified VLMs\" (section 1)"),
        Finding("knowledge transfer: the six unified models vs SigLIP_u and VQ_u on the weather (A5, weather "
                "in 5% of VQA records)", "A5", "weather_acc",
                mean_terms(list(UNIFIED_A5), [_understanding_only(n) for n in UNIFIED_A5]),
                quote="\"the knowledge acquired during generation tasks can transfer to understanding tasks\" "
                      "(abstract)"),
        Finding(f"beyond the adapters: the weather probe's accuracy in the understanding-only models' (SigLIP_u, "
                f"VQ_u) adapter output, mean, minus chance ({100 / len(WEATHERS):.1f}): the adapters of the "
                "models that fail the weather question already hold it", "fig7", "probe",
                mean_terms(["SigLIP_u", "VQ_u"], []), 100 / len(WEATHERS),
                quote="\"this cross-task generalization occurs within the base language model, beyond modality "
                      "adapters\" (abstract)"),
    ]


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
# Table 1's claims hold per dataset, and the paper draws Fig 3 and Fig 4 on CelebA too: the same
# contrasts on each CelebA half
FINDINGS += [Finding(f"CelebA: {f.text}", f"{f.table}-celeba", f.column, f.terms) for f in FINDINGS
             if f.table in ("T1", "A3")]


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


def celeba_scaling_findings() -> list[Finding]:
    """Fig 4's CelebA panels: the A4 slopes on CelebA, and the one result the paper states for
    CelebA alone (section 4.1), as a contrast that holds if SigLIP-VQ's VQA falls."""
    out = [Finding(f"CelebA: {f.text}", "A4-celeba", f.column, f.terms) for f in scaling_findings()]
    out.append(Finding("CelebA: SigLIP-VQ's VQA total falls from 0K to 60K generation records (understanding at "
                       f"{PAPER_UND}K): \"A notable exception is SigLIP-VQ on the CelebA dataset, where performance "
                       "degrades with 60K generation samples\" (section 4.1)", "A4-celeba", "total_acc",
                       [(1, scaling_label("SigLIP-VQ", PAPER_UND, 0)),
                        (-1, scaling_label("SigLIP-VQ", PAPER_UND, 60))]))
    return out


def secondary_findings() -> list[Finding]:
    return (FINDINGS + transfer_findings() + scaling_findings() + celeba_scaling_findings() + dose_findings()
            + probe_findings())


class Tested(NamedTuple):
    """A finding with results: its comparison (None where its judged generation cannot be read:
    SigLIP outputs judged under the old protocol), Holm-adjusted within its family."""

    finding: Finding
    comparison: Comparison | None
    family: str  # "primary", "secondary", or "variants" (the researcher's own comparisons)
    family_size: int  # findings of its family that get a p-value: Holm's first step is ALPHA / this
    scores: list  # each term's (seeds, items) scores, read once for every column of its table row

    @property
    def primary(self) -> bool:
        return self.family == "primary"


def tested(res: Results, variants: tuple[Finding, ...] = ()) -> list[Tested]:
    """Every finding whose rows have results, primary family first, each family Holm-adjusted
    on its own; `variants`: the researcher's comparisons (uvlm.suites.variants), a third family."""
    out: list[Tested] = []
    for name, family in (("primary", primary_findings()), ("secondary", secondary_findings()),
                         ("variants", list(variants))):
        found: list[tuple[Finding, Comparison | None, list]] = []
        for f in family:
            mats = [res.scores(f.table, label, f.column) for _, label in f.terms]
            if any(m is None for m in mats):
                continue
            valid = f.column != "gen" or all(res.gen_valid(f.table, label) for _, label in f.terms)
            found.append((f, contrast(mats, [w for w, _ in f.terms], baseline=f.baseline) if valid else None, mats))
        adjusted = iter(adjust([c for _, c, _ in found if c is not None]))
        size = sum(c is not None and c.p_value is not None for _, c, _ in found)
        out += [Tested(f, next(adjusted) if c is not None else None, name, size, mats)
                for f, c, mats in found]
    return out


def not_run(res: Results, family: list[Finding] | None = None) -> list[Finding]:
    """The findings of a family (default: the primary) that no result of `res` tests yet (some
    row without runs)."""
    return [f for f in (primary_findings() if family is None else family)
            if any(res.scores(f.table, label, f.column) is None for _, label in f.terms)]


def _sds(t: Tested) -> list[float]:
    return [seed_sd(m)[0] for m in t.scores]


def _question_var(t: Tested) -> float:
    return question_variance(t.scores, [w for w, _ in t.finding.terms])


def detectable(res: Results, t: Tested, power: float = 0.8) -> float:
    """The smallest true effect (points) its test finds with probability `power` at Holm's first
    level of its family (ALPHA / family size), its rows' seeds and measured seed SDs, and its test
    set's question variance; nan where no row's seeds vary."""
    seeds = min(len(res.groups[(t.finding.table, label)]) for _, label in t.finding.terms)
    sds = _sds(t)
    if not any(sd > 0 for sd in sds):  # seeds that agree exactly (or one seed): no seed-level estimate
        return math.nan
    return minimum_detectable_effect(sds, seeds, power, ALPHA / max(t.family_size, 1), [w for w, _ in t.finding.terms],
                                     _question_var(t))


def paper_effect(f: Finding, paper: dict) -> float | None:
    """The same contrast on the paper's one-seed numbers; None where the paper has no such cell
    (its generation is FID, not our judge)."""
    if f.column == "probe":
        rows = {k: {"probe": v} for k, v in paper["fig7_probe"]["rows"].items()}
    else:
        rows = paper_rows(paper, f.table)
    values = [(rows.get(label) or {}).get(f.column) for _, label in f.terms]
    if any(v is None for v in values):
        return None
    return sum(w * v for (w, _), v in zip(f.terms, values, strict=True)) - f.baseline


def seeds_needed(res: Results, t: Tested, effect: float, power: float = 0.8) -> int | None:
    """Seeds per row for `power` to find `effect` at Holm's first level of its family, with the
    rows' measured seed SDs (None past 200)."""
    sds = _sds(t)
    if any(np.isnan(sds)):
        return None
    return seeds_for_power(effect, sds, [w for w, _ in t.finding.terms], ALPHA / max(t.family_size, 1), power,
                           question_var=_question_var(t))


def rows_clear(res: Results, t: Tested) -> list[bool] | None:
    """Whether each row the finding compares clears its chance bar (None where a bar is unknown)."""
    out = []
    for (_, label), scores in zip(t.finding.terms, t.scores, strict=True):
        bar = res.bar(t.finding.table, label, t.finding.column)
        if bar is None:
            return None
        out.append(cell_interval(scores).low > bar)
    return out


def _fmt(x: float | int | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def findings(res: Results, paper: dict, variants: tuple[Finding, ...] = ()) -> tuple[list[str], list[str], list[str]]:
    """The primary, the secondary and the variants' family as markdown table lines (none where a
    family has no finding with results)."""
    primary = ["| claim (the paper's words) | our contrast | paper | effect (points) [95% CI] | seeds | p | Holm p "
               "| detectable | seeds for the paper's effect | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    head = ["| finding | effect (points) [95% CI] | seeds | p | Holm p | detectable | verdict |",
            "|---|---|---|---|---|---|---|"]
    secondary, own = list(head), list(head)
    for t in tested(res, variants):
        other = own if t.family == "variants" else secondary
        f, c = t.finding, t.comparison
        if c is None:
            invalid = "- | - | - | - | - | **invalid: SigLIP outputs judged by the old judge**"
            if t.primary:
                primary.append(f"| {f.quote} | {f.text} | - | {invalid.replace('| **', '| - | **')} |")
            else:
                other.append(f"| {f.text} | {invalid} |")
            continue
        seeds = min(len(res.groups[(f.table, label)]) for _, label in f.terms)
        words = phrase(c, rows_clear=rows_clear(res, t))
        common = (f"{c.difference.fmt()} | {seeds} | {fmt_p(c.p_value)} | {fmt_p(c.p_adjusted)} | "
                  f"{_fmt(detectable(res, t))}")
        if t.primary:
            effect = paper_effect(f, paper)
            need = seeds_needed(res, t, effect) if effect is not None and seeds >= 2 else None
            primary.append(f"| {f.quote} | {f.text} | {_fmt(effect)} | {common} | {_fmt(need)} | **{words}** |")
        else:
            other.append(f"| {f.text} | {common} | **{words}** |")
    if len(primary) > 2:
        primary += [f"| {f.quote} | {f.text} | {_fmt(paper_effect(f, paper))} | not run | - | - | - | - | - | - |"
                    for f in not_run(res)]
    if variants:
        own += [f"| {f.text} | not run | - | - | - | - | - |" for f in not_run(res, list(variants))]
    return tuple(lines if len(lines) > 2 else [] for lines in (primary, secondary, own))
