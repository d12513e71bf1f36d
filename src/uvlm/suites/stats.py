"""Statistics for the suites: cell means with 95% intervals, contrasts, Holm-adjusted verdicts.

Scores are arrays (seeds, questions) in points (0-100): every run of a results folder answers
the same test questions, and training seeds are independent runs, the unit of replication.
A cell or a contrast (a weighted sum of row means: A - B, a difference of differences, a
slope) is generalised over the training seeds and over the test questions:

    Var(contrast) = sum_j w_j^2 s_j^2 / k_j                               the seeds
                  + max(0, Var_q(sum_j w_j ybar_j[q]) / n - sum_j w_j^2 MS_res_j / (k_j n))
                                                                          the questions, paired

s_j^2 is the variance of row j's k_j per-seed means. It already holds each seed's answer
noise, so the question term keeps only what the paired per-question means vary beyond that
noise (MS_res_j: row j's seed x question residual mean square): the test set's own draw of
questions. A cell's variance is never taken below Var_q(ybar[q]) / n, the question-only
variance one seed would get: seeds that agree by chance make the test set no more precise
(conservative for cells; contrasts, which verdicts rest on, keep the rule above, whose error
rates the simulations below measure). The degrees of freedom are the seed-level Welch-Satterthwaite df of the seed terms
alone, between min(k_j) - 1 and sum(k_j - 1); the question term, estimated from n >> k
questions, enters the variance but never raises the df. A three-seed cell therefore uses t
with 2 df (about 4.3 standard errors either side), unless its seeds score exactly alike: then
only the draw of questions varies, and the df are n - 1.

Chosen by simulation (families shaped like the report's: 25 null contrasts with seed SDs of
0.4-7.8 points, 4 true ones, 3 seeds, 1,000 shared Bernoulli questions; tests/test_stats.py):
- the previous rule subtracted the answer noise from the seed term, dropped the seed term
  whenever that went negative, and let Satterthwaite's df jump towards n: single tests at the
  0.002 level Holm asks of the first of 29 findings erred 5 times too often, and 12-26% of
  families held a false verdict;
- seed-level Welch on the per-seed means alone errs at 17% (alpha 0.05) when two rows of equal
  accuracy answer different questions well (per-question abilities 0.3 apart), since it never
  sees the test set's draw;
- Satterthwaite df over both terms (no clamp) erred 2-3 times too often in the 0.002 tail;
- this rule keeps every simulated case at or below its level (0.5-3.6% at alpha 0.05, at most
  the nominal rate at 0.002) and families at or below 5%, at the price of power when the
  question term is a large share of the variance.

A cell (one row) is a proportion, and its interval is built as one (Korn and Graubard's
effective-sample-size Clopper-Pearson interval): the variance above gives an effective number
of answers n_eff = p (1 - p) / Var, shrunk by (z / t_df)^2 for the seed-level df, and the
interval is the exact binomial (Clopper-Pearson) interval of p n_eff in n_eff. It lies inside
0-100 by construction, narrows as the seeds agree, and where every seed scores the same on
every question (a probe at 100% in all seeds) it is the exact binomial interval over the n
test items (1,000 of 1,000 correct: [99.63, 100]). A contrast of one row against a baseline
(a probe against chance) is tested on that interval, with the exact binomial p-value.

A contrast's interval is a t interval and, unlike a cell's, can widen a little as one row's
seeds come to agree: its Welch df fall towards the other row's k - 1 (never below it).

A row with one seed has no seed variance to estimate: its numbers are shown with an interval
over questions alone, and any contrast that involves it gets no verdict ("1 seed: no verdict").

Verdicts are called on Holm-adjusted p-values over a family of findings (uvlm.suites.findings
declares a primary family, the paper's headline claims, and a secondary one): "reproduced"
(adjusted p < 0.05, effect > 0), "not reproduced" (adjusted p < 0.05, effect < 0),
"inconclusive" otherwise. The report words them through uvlm.suites.words ("holds", "against
the paper", "inconclusive", "both at chance").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

ALPHA = 0.05
NO_VERDICT = "1 seed: no verdict"
FULL = 100.0  # scores are points: a proportion of 1 is 100


@dataclass(frozen=True)
class Interval:
    """A mean (or contrast) with its 95% interval; `se` and `df` of its variance estimate."""

    mean: float
    low: float
    high: float
    n_seeds: int  # the fewest seeds of any row in it
    n_questions: int
    se: float = 0.0
    df: float = math.inf

    def fmt(self, digits: int = 1) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    @property
    def has_seed_variance(self) -> bool:
        return self.n_seeds >= 2


@dataclass(frozen=True)
class Comparison:
    difference: Interval  # the contrast, in the scores' units
    p_value: float | None  # two-sided, unadjusted; None with fewer than 2 seeds
    verdict: str  # reproduced | not reproduced | inconclusive | 1 seed: no verdict
    p_adjusted: float | None = None  # Holm over a family (see `adjust`)


def _as_matrix(scores) -> np.ndarray:
    a = np.asarray(scores, dtype=float)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError("scores must be (seeds, questions) with at least one question")
    return a


@dataclass(frozen=True)
class _Variance:
    total: float  # Var of the estimate, points^2
    df: float  # its degrees of freedom (seed-level Welch; n - 1 over questions alone)
    seeds: int  # the fewest seeds of any row
    question: float = 0.0  # the part of `total` that is the test set's draw of questions


def _variance(mats: list[np.ndarray], weights: list[float]) -> _Variance:
    """The variance of sum_j w_j mean_j and its df (the module docstring's rule)."""
    n = mats[0].shape[1]
    k_min = min(m.shape[0] for m in mats)
    paired = sum(w * m.mean(axis=0) for w, m in zip(weights, mats, strict=True))
    question = float(paired.var(ddof=1)) / n if n > 1 else 0.0
    if k_min < 2:  # no seed variance to estimate: over questions alone (answer noise included)
        return _Variance(question, max(n - 1, 1), k_min)
    seed_terms, noise = [], 0.0
    for w, m in zip(weights, mats, strict=True):
        k = m.shape[0]
        seed_means = m.mean(axis=1)
        seed_terms.append((w * w * float(seed_means.var(ddof=1)) / k, k - 1))
        if n > 1:
            residual = m - seed_means[:, None] - m.mean(axis=0)[None] + m.mean()
            noise += w * w * float((residual ** 2).sum()) / ((k - 1) * (n - 1)) / (k * n)
    seed = sum(v for v, _ in seed_terms)
    # Welch-Satterthwaite over the seed terms; where every row's seeds score exactly alike, all
    # that varies is the draw of questions, and the df are the question term's
    df = seed * seed / sum(v * v / d for v, d in seed_terms) if seed > 0 else float(max(n - 1, 1))
    total = seed + max(question - noise, 0.0)
    if len(mats) == 1:
        # a cell: never below the question-only variance of its seed-averaged scores (what one
        # seed would get), since seeds that agree by chance make the test set no more precise
        total = max(total, question)
    return _Variance(total, df, k_min, max(question - noise, 0.0))


def _t(df: float) -> float:
    return float(stats.t.ppf(1 - ALPHA / 2, df))


def _proportion(mean: float, var: _Variance, n: int) -> tuple[float, float]:
    """(x, trials) of the effective binomial behind a cell: Korn and Graubard's
    n_eff = p (1 - p) / Var, scaled by (z / t_df)^2; the n items themselves where Var is 0."""
    p = min(max(mean / FULL, 0.0), 1.0)
    if var.total <= 0 or p in (0.0, 1.0):
        return p * n, float(n)
    trials = p * (1 - p) * FULL * FULL / var.total * (float(stats.norm.ppf(1 - ALPHA / 2)) / _t(var.df)) ** 2
    return p * trials, trials


def _clopper_pearson(x: float, trials: float) -> tuple[float, float]:
    """The exact binomial interval of x successes in `trials` (both may be fractional), in points."""
    low = 0.0 if x <= 0 else float(stats.beta.ppf(ALPHA / 2, x, trials - x + 1))
    high = 1.0 if x >= trials else float(stats.beta.ppf(1 - ALPHA / 2, x + 1, trials - x))
    return FULL * low, FULL * high


def _binomial_p(x: float, trials: float, baseline: float) -> float:
    """Two-sided exact binomial p-value of x in `trials` against a proportion `baseline` (points),
    the test that the Clopper-Pearson interval inverts."""
    b = baseline / FULL
    if b <= 0 or b >= 1:
        return 1.0 if (b <= 0 and x <= 0) or (b >= 1 and x >= trials) else 0.0
    upper = 1.0 if x <= 0 else float(stats.beta.cdf(b, x, trials - x + 1))  # P(X >= x)
    lower = 1.0 if x >= trials else float(stats.beta.sf(b, x + 1, trials - x))  # P(X <= x)
    return min(1.0, 2 * min(upper, lower))


def cell_interval(scores) -> Interval:
    """Mean of a (seeds, questions) score array in points and its 95% interval over seeds and
    questions: an effective-sample-size Clopper-Pearson interval, inside 0-100 by construction."""
    m = _as_matrix(scores)
    if m.min() < 0 or m.max() > FULL:
        raise ValueError(f"cell scores must be points in 0-{FULL:.0f}")
    return _cell(m)[2]


def _cell(m: np.ndarray) -> tuple[float, float, Interval]:
    """A cell's effective binomial (x, trials) and its interval."""
    var = _variance([m], [1.0])
    mean = float(m.mean())
    x, trials = _proportion(mean, var, m.shape[1])
    low, high = _clopper_pearson(x, trials)
    # the exact interval is built on the effective count; keep the mean inside it (rounding)
    cell = Interval(mean, min(low, mean), max(high, mean), var.seeds, m.shape[1], math.sqrt(var.total), var.df)
    return x, trials, cell


def contrast(scores: list, weights: list[float], baseline: float = 0.0) -> Comparison:
    """A weighted sum of row means minus a baseline, e.g. (1, -1) for A - B, (1, -1, -1, 1)
    for a difference of differences, or (1,) with chance as the baseline; paired over
    questions. The verdict here is on the unadjusted p; `adjust` redoes it over a family."""
    mats = [_as_matrix(x) for x in scores]
    if len({m.shape[1] for m in mats}) != 1:
        raise ValueError("paired comparison needs the same questions for every model")
    if len(mats) == 1 and list(weights) == [1.0] and mats[0].min() >= 0 and mats[0].max() <= FULL:
        return _against_baseline(mats[0], baseline)
    n = mats[0].shape[1]
    var = _variance(mats, list(weights))
    effect = float(sum(w * m.mean() for w, m in zip(weights, mats, strict=True))) - baseline
    total = var.total
    if total <= 0:  # every score fixed: the binomial variance of each row's rate
        total = sum(w * w * _binomial_floor(float(m.mean()), n) for w, m in zip(weights, mats, strict=True))
    se = math.sqrt(total)
    half = _t(var.df) * se
    diff = Interval(effect, effect - half, effect + half, var.seeds, n, se, var.df)
    if not diff.has_seed_variance:
        return Comparison(diff, None, NO_VERDICT)
    p = float(2 * stats.t.sf(abs(effect) / se, var.df)) if se > 0 else 1.0
    return Comparison(diff, p, _verdict(effect, p))


def _binomial_floor(mean: float, n: int) -> float:
    """Var of a rate of n items seen at `mean` points, shrunk half an item from 0 and 100."""
    p = (mean / FULL * n + 0.5) / (n + 1)
    return p * (1 - p) * FULL * FULL / n


def _against_baseline(m: np.ndarray, baseline: float) -> Comparison:
    """One row's mean against a fixed baseline (a probe against chance): the cell's interval, and
    the exact binomial test on its effective count."""
    x, trials, cell = _cell(m)
    shifted = replace(cell, mean=cell.mean - baseline, low=cell.low - baseline, high=cell.high - baseline)
    if not cell.has_seed_variance:
        return Comparison(shifted, None, NO_VERDICT)
    p = _binomial_p(x, trials, baseline)
    return Comparison(shifted, p, _verdict(shifted.mean, p))


def compare(a_scores, b_scores) -> Comparison:
    """Is A better than B? Paired over questions, seeds as the unit of replication."""
    return contrast([a_scores, b_scores], [1.0, -1.0])


def _verdict(effect: float, p: float) -> str:
    if p >= ALPHA:
        return "inconclusive"
    return "reproduced" if effect > 0 else "not reproduced"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: family-wise error at most alpha for any dependence."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def adjust(comparisons: list[Comparison]) -> list[Comparison]:
    """Holm-adjust the comparisons that have a p-value as one family; their verdicts are
    called on the adjusted p. Comparisons without a p-value pass through."""
    tested = [i for i, c in enumerate(comparisons) if c.p_value is not None]
    adjusted = holm([comparisons[i].p_value for i in tested])
    out = list(comparisons)
    for i, p in zip(tested, adjusted, strict=True):
        out[i] = replace(out[i], p_adjusted=p, verdict=_verdict(out[i].difference.mean, p))
    return out


def fmt_p(p: float | None) -> str:
    """A p-value as the report prints it ('-' where there is none)."""
    if p is None:
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def seed_sd(scores) -> tuple[float, float, float]:
    """The SD of a row's per-seed means in points and its 95% chi-square interval (3 seeds:
    x0.52 to x6.3 of the estimate); nan with one seed."""
    means = _as_matrix(scores).mean(axis=1)
    k = len(means)
    if k < 2:
        return math.nan, math.nan, math.nan
    sd = float(means.std(ddof=1))
    return (sd, sd * math.sqrt((k - 1) / stats.chi2.ppf(1 - ALPHA / 2, k - 1)),
            sd * math.sqrt((k - 1) / stats.chi2.ppf(ALPHA / 2, k - 1)))


_GRID = 2000  # quantiles of the variance estimate's chi-square in `welch_power`


def question_variance(scores: list, weights: list[float]) -> float:
    """The question part of a contrast's variance (points^2): the test set's draw of questions,
    which more seeds do not shrink."""
    return _variance([_as_matrix(x) for x in scores], list(weights)).question


def welch_power(effect: float, seed_sds: list[float], weights: list[float], seeds: int,
                alpha: float = ALPHA, question_var: float = 0.0) -> float:
    """The chance that a two-sided seed-level test at `alpha` finds a true contrast `effect`
    (points) of rows with these seed SDs (of per-seed means, answer noise included), `seeds`
    seeds each, plus the test set's `question_var`: noncentral t at the seed terms' Welch df,
    as the test itself uses."""
    if seeds < 2:
        return 0.0
    terms = [w * w * sd * sd / seeds for w, sd in zip(weights, seed_sds, strict=True)]
    var = sum(terms) + question_var
    if var <= 0:
        return 1.0 if effect else 0.0
    df = sum(terms) ** 2 / sum(v * v / (seeds - 1) for v in terms if v > 0) if sum(terms) > 0 else 1e6
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    ncp = abs(effect) / math.sqrt(var)
    # noncentral t, integrated over the chi-square of the variance estimate at fixed quantiles
    # (scipy's nct returns nan at some small df and large noncentrality)
    scale = np.sqrt(stats.chi2.ppf((np.arange(_GRID) + 0.5) / _GRID, df) / df)
    return float(np.mean(stats.norm.cdf(ncp - crit * scale) + stats.norm.cdf(-ncp - crit * scale)))


def seeds_for_power(effect: float, seed_sds: list[float], weights: list[float], alpha: float = ALPHA,
                    power: float = 0.8, most: int = 200, question_var: float = 0.0) -> int | None:
    """The fewest seeds per row (2 or more) at which `welch_power` reaches `power`; None past `most`
    (or where the question term alone keeps it below)."""
    for k in range(2, most + 1):
        if welch_power(effect, seed_sds, weights, k, alpha, question_var) >= power:
            return k
    return None


def minimum_detectable_effect(seed_sds: float | list[float], seeds: int, power: float = 0.8,
                              alpha: float = ALPHA, weights: list[float] | None = None,
                              question_var: float = 0.0) -> float:
    """The smallest true contrast (points) that a two-sided seed-level test at `alpha` finds with
    probability `power`, for rows of `seeds` seeds with these seed SDs (one SD without weights:
    two rows A - B of that SD) and the test set's `question_var`. inf at one seed."""
    if isinstance(seed_sds, (int, float)):
        seed_sds = [float(seed_sds)] * (2 if weights is None else len(weights))
        weights = weights if weights is not None else [1.0, -1.0]
    weights = weights if weights is not None else [1.0] * len(seed_sds)
    if seeds < 2:
        return math.inf
    if all(sd == 0 for sd in seed_sds):
        return 0.0
    se = math.sqrt(sum(w * w * sd * sd for w, sd in zip(weights, seed_sds, strict=True)) / seeds + question_var)
    low, high = 0.0, se * 100
    for _ in range(60):  # bisection: power grows with the effect
        mid = (low + high) / 2
        low, high = (mid, high) if welch_power(mid, seed_sds, weights, seeds, alpha, question_var) < power \
            else (low, mid)
    return high
