"""Statistics for the suites: cell means with 95% intervals, and paired comparisons.

Scores are arrays (seeds, questions): every model answers the same test questions, so
comparisons pair over questions; training seeds are independent runs, so they are
resampled per model. The bootstrap (10,000 replicates by default, seeded) resamples
question indices once per replicate, shared by both models (pairing), and each model's
seeds independently (seed-to-seed variation). This is a two-level (hierarchical) paired
bootstrap; with one seed it reduces to the usual paired bootstrap over questions.

A verdict on a claimed direction (A > B): "reproduced" when the 95% interval of A - B lies
above 0, "not reproduced" when it lies below 0, "inconclusive" when it contains 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 10_000


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n_seeds: int
    n_questions: int

    def fmt(self, digits: int = 1) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class Comparison:
    difference: Interval  # A - B, in the scores' units
    p_value: float  # two-sided, from the bootstrap distribution
    verdict: str  # reproduced | not reproduced | inconclusive


def _as_matrix(scores) -> np.ndarray:
    a = np.asarray(scores, dtype=float)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError("scores must be (seeds, questions) with at least one question")
    return a


def _resampled_means(a: np.ndarray, q_idx: np.ndarray, s_idx: np.ndarray) -> np.ndarray:
    """Mean score per replicate: seeds s_idx[r], questions q_idx[r]."""
    # (R, seeds', questions') gathered lazily, one replicate block at a time to bound memory
    out = np.empty(len(q_idx))
    block = max(1, 2_000_000 // max(1, a.shape[1] * a.shape[0]))
    for start in range(0, len(q_idx), block):
        q = q_idx[start:start + block]
        s = s_idx[start:start + block]
        out[start:start + block] = a[s[:, :, None], q[:, None, :]].mean(axis=(1, 2))
    return out


def cell_interval(scores, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Mean of a (seeds, questions) score array and its 95% bootstrap interval."""
    a = _as_matrix(scores)
    rng = np.random.default_rng(seed)
    q = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
    s = rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))
    means = _resampled_means(a, q, s)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(a.mean()), float(low), float(high), a.shape[0], a.shape[1])


def contrast(scores: list, weights: list[float], n_boot: int = N_BOOT, seed: int = 0,
             baseline: float = 0.0) -> Comparison:
    """A weighted sum of model means minus a baseline, e.g. (1, -1) for A - B, (1, -1, -1, 1)
    for a difference of differences, or (1,) with chance as the baseline; paired over
    questions, each model's seeds resampled alone."""
    mats = [_as_matrix(x) for x in scores]
    if len({m.shape[1] for m in mats}) != 1:
        raise ValueError("paired comparison needs the same questions for every model")
    n_q = mats[0].shape[1]
    rng = np.random.default_rng(seed)
    q = rng.integers(0, n_q, size=(n_boot, n_q))
    stat = np.full(n_boot, -float(baseline))
    for w, m in zip(weights, mats, strict=True):
        stat += w * _resampled_means(m, q, rng.integers(0, m.shape[0], size=(n_boot, m.shape[0])))
    observed = float(sum(w * m.mean() for w, m in zip(weights, mats, strict=True))) - baseline
    low, high = np.percentile(stat, [2.5, 97.5])
    p = float(min(1.0, 2 * min((stat <= 0).mean(), (stat >= 0).mean())))
    verdict = "reproduced" if low > 0 else "not reproduced" if high < 0 else "inconclusive"
    return Comparison(Interval(observed, float(low), float(high), min(m.shape[0] for m in mats), n_q), p, verdict)


def compare(a_scores, b_scores, n_boot: int = N_BOOT, seed: int = 0) -> Comparison:
    """Is A better than B? Paired over questions, seeds resampled per model."""
    return contrast([a_scores, b_scores], [1.0, -1.0], n_boot, seed)
