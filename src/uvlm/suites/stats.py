"""Statistics for the suites: cell means with 95% intervals, contrasts, Holm-adjusted verdicts.

Scores are arrays (seeds, questions): every run of a results folder answers the same test
questions, and training seeds are independent runs. A score y[s, q] is modelled as a
two-way layout, y = mu + seed effect + question effect + interaction, and a cell or a
contrast (a weighted sum of model means, e.g. A - B, or a difference of differences) is
generalised over both the training seeds and the test questions:

    Var(contrast) = sum_j w_j^2 (MS_seed_j - MS_res_j) / (k_j n)      the seeds (seed effect)
                  + Var_q(sum_j w_j ybar_j[q]) / n                     the questions, paired

MS_seed_j is n times the variance of model j's per-seed means (k_j - 1 degrees of
freedom), MS_res_j its seed x question residual mean square ((k_j - 1)(n - 1) df), and
ybar_j[q] its seed-averaged score on question q. The question term pairs the models over
questions and already holds the interaction (per-answer noise), so the seed term carries only
what the per-seed means vary beyond it; it is clamped at 0 when the seeds vary less than
answer noise alone explains. The interval is t-based, with Welch-Satterthwaite degrees of
freedom: about k - 1 when the seeds dominate (a 3-seed mean then needs about +-4.3 standard
errors, not the normal 1.96), about n - 1 when they agree.

Why this and not a bootstrap: resampling 3 seeds with replacement sees about 2/3 of their
variance and its percentile interval keeps the normal width, so at 3 seeds it called false
verdicts in 7-16% of null cases (seed SD 2-6 points). Simulated here (two models of equal
expected accuracy, 1,000 Bernoulli questions, 3 seeds; tests/test_stats.py): false verdicts
in 2-5% of cases at seed SDs 0 to 8 points, for models with the same or different
per-question abilities. A single model's cell interval misses its true accuracy in 3-8% of
cases (Satterthwaite's df is slightly optimistic when the seed term dominates).

A row with one seed has no seed variance to estimate: its numbers are shown with an interval
over questions alone, and any contrast that involves it gets no verdict ("1 seed: no verdict").

A verdict on a claimed direction (effect > 0) is called on the Holm-adjusted p-value over the
report's family of contrasts: "reproduced" (adjusted p < 0.05, effect > 0), "not reproduced"
(adjusted p < 0.05, effect < 0), "inconclusive" otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

ALPHA = 0.05
NO_VERDICT = "1 seed: no verdict"


@dataclass(frozen=True)
class Interval:
    """A mean (or contrast) with its 95% interval; `se` and `df` of the t-interval."""

    mean: float
    low: float
    high: float
    n_seeds: int  # the fewest seeds of any model in it
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


def _seed_terms(m: np.ndarray, w: float) -> list[tuple[float, float]]:
    """(variance, df) pieces of one model's seed term: w^2 (MS_seed - MS_res) / (k n)."""
    k, n = m.shape
    seed_means = m.mean(axis=1)
    ms_seed = n * seed_means.var(ddof=1)
    residual = m - seed_means[:, None] - m.mean(axis=0)[None] + m.mean()
    ms_res = float((residual ** 2).sum()) / ((k - 1) * max(n - 1, 1))
    c = w * w / (k * n)
    return [(c * ms_seed, k - 1), (-c * ms_res, (k - 1) * max(n - 1, 1))]


def _estimate(mats: list[np.ndarray], weights: list[float], baseline: float) -> Interval:
    n = mats[0].shape[1]
    k_min = min(m.shape[0] for m in mats)
    observed = float(sum(w * m.mean() for w, m in zip(weights, mats, strict=True))) - baseline
    paired = sum(w * m.mean(axis=0) for w, m in zip(weights, mats, strict=True))
    terms = [(float(paired.var(ddof=1)) / n if n > 1 else 0.0, max(n - 1, 1))]
    if k_min >= 2:
        seed = [t for w, m in zip(weights, mats, strict=True) for t in _seed_terms(m, w)]
        if sum(v for v, _ in seed) > 0:  # clamped: seeds that vary less than answer noise add nothing
            terms += seed
    variance = sum(v for v, _ in terms)
    if variance <= 0:  # every score identical: no uncertainty left to show
        return Interval(observed, observed, observed, k_min, n, 0.0, math.inf)
    df = variance ** 2 / sum(v * v / d for v, d in terms)
    se = math.sqrt(variance)
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * se
    return Interval(observed, observed - half, observed + half, k_min, n, se, df)


def cell_interval(scores) -> Interval:
    """Mean of a (seeds, questions) score array and its 95% interval over seeds and questions."""
    return _estimate([_as_matrix(scores)], [1.0], 0.0)


def contrast(scores: list, weights: list[float], baseline: float = 0.0) -> Comparison:
    """A weighted sum of model means minus a baseline, e.g. (1, -1) for A - B, (1, -1, -1, 1)
    for a difference of differences, or (1,) with chance as the baseline; paired over
    questions. The verdict here is on the unadjusted p; `adjust` redoes it over a family."""
    mats = [_as_matrix(x) for x in scores]
    if len({m.shape[1] for m in mats}) != 1:
        raise ValueError("paired comparison needs the same questions for every model")
    diff = _estimate(mats, list(weights), baseline)
    if not diff.has_seed_variance:
        return Comparison(diff, None, NO_VERDICT)
    exact = 1.0 if diff.mean == 0 else 0.0  # every score identical: the effect is known exactly
    p = float(2 * stats.t.sf(abs(diff.mean) / diff.se, diff.df)) if diff.se > 0 else exact
    return Comparison(diff, p, _verdict(diff.mean, p))


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


def minimum_detectable_effect(seed_sd: float, seeds: int, power: float = 0.8) -> float:
    """The smallest true difference between two rows of `seeds` seeds each (seed SD `seed_sd`
    points) that a two-sided test at ALPHA finds with probability `power`: (t_{1-ALPHA/2} +
    t_power) x seed_sd x sqrt(2 / seeds), t with 2 (seeds - 1) degrees of freedom. Question
    noise is left out: with 1,000 test questions it is small beside seed noise. No estimate
    exists at one seed (inf)."""
    if seeds < 2:
        return math.inf
    df = 2 * (seeds - 1)
    return float((stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(power, df)) * seed_sd * math.sqrt(2 / seeds))
