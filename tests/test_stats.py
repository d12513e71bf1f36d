"""Suite statistics on synthetic scores whose answers are known, and their calibration."""

from __future__ import annotations

import numpy as np
import pytest

from uvlm.suites.stats import (
    NO_VERDICT,
    Comparison,
    Interval,
    adjust,
    cell_interval,
    compare,
    contrast,
    fmt_p,
    holm,
)


def bernoulli(p, seeds=3, questions=1000, seed=0):
    return (np.random.default_rng(seed).random((seeds, questions)) < p).astype(float)


def null_pair(rng, seed_sd: float, seeds: int = 3, questions: int = 1000, spread: float = 0.0):
    """Two models of equal expected accuracy, in points: per-question abilities drawn around a
    shared difficulty (`spread` apart), each training seed shifting a model by N(0, seed_sd)."""
    difficulty = rng.uniform(0.2, 0.8, questions)
    profile = rng.normal(0, spread, questions)
    models = []
    for sign in (1, -1):
        shift = rng.normal(0, seed_sd / 100, seeds)
        p = np.clip(difficulty[None] + sign * profile[None] + shift[:, None], 0, 1)
        models.append(100 * (rng.random((seeds, questions)) < p))
    return models


@pytest.mark.parametrize("seed_sd", [0.0, 2.0, 6.0])
def test_false_verdicts_at_three_seeds_are_near_nominal(seed_sd):
    """Calibration: in simulated nulls at 3 seeds, a verdict (either direction) is called in
    2-8% of cases. The percentile bootstrap this replaced called 7% at SD 2 and 16% at SD 6."""
    rng = np.random.default_rng(int(seed_sd * 10) + 1)
    calls = []
    for trial in range(500):
        a, b = null_pair(rng, seed_sd, spread=0.1 * (trial % 2))  # same and different question profiles
        calls.append(compare(a, b).verdict != "inconclusive")
    rate = float(np.mean(calls))
    assert 0.02 <= rate <= 0.08, rate


def test_a_real_difference_is_found_and_seed_noise_costs_power():
    rng = np.random.default_rng(3)
    a, b = null_pair(rng, 0.0)
    better = np.where(rng.random(a.shape) < 0.15, 100, a)  # about +7.5 points, every seed
    assert compare(better, b).verdict == "reproduced"
    noisy = better + np.array([[-6.0], [0.0], [6.0]])  # seeds 6 points apart: the same gain is unsure
    assert compare(noisy, b).verdict == "inconclusive"
    assert compare(b, better).verdict == "not reproduced"


def test_cell_interval_over_questions_matches_the_binomial_standard_error():
    scores = bernoulli(0.7, seeds=1, seed=1)
    cell = cell_interval(scores)
    half = (cell.high - cell.low) / 2
    expected = 1.96 * np.sqrt(0.7 * 0.3 / 1000)
    assert abs(half - expected) < 0.05 * expected
    assert cell.low < scores.mean() < cell.high and cell.n_seeds == 1


def test_three_seed_means_use_t_quantiles():
    """Seeds 10 points apart, no answer noise: the interval is the t interval on the 3 seed means
    (t with 2 df, 4.30 standard errors), not the normal one."""
    scores = np.repeat(np.array([[40.0], [50.0], [60.0]]), 200, axis=1)
    cell = cell_interval(scores)
    se = 10 / np.sqrt(3)
    assert cell.mean == 50 and abs(cell.df - 2) < 1e-6
    assert abs((cell.high - cell.mean) - 4.303 * se) < 0.01


def test_one_seed_rows_get_numbers_but_no_verdict():
    a, b = bernoulli(0.9, seeds=1, seed=4), bernoulli(0.5, seeds=3, seed=5)
    c = compare(a, b)
    assert c.verdict == NO_VERDICT and c.p_value is None
    assert c.difference.low > 0  # the question-only interval is still shown


def test_same_numbers_every_time_and_bad_shapes():
    a, b = bernoulli(0.6, seed=7), bernoulli(0.5, seed=8)
    assert compare(a, b) == compare(a, b)
    with pytest.raises(ValueError):
        compare(a, b[:, :10])
    with pytest.raises(ValueError):
        cell_interval(np.zeros((2, 0)))


def test_difference_of_differences():
    # unified drops 0.3 under the map, _u drops nothing: (u - u*) - (v - v*) = 0.3
    u, u_star = bernoulli(0.9, seed=9), bernoulli(0.6, seed=10)
    v, v_star = bernoulli(0.7, seed=11), bernoulli(0.7, seed=12)
    c = contrast([u, u_star, v, v_star], [1, -1, -1, 1])
    assert c.verdict == "reproduced" and abs(c.difference.mean - 0.3) < 0.06


@pytest.mark.parametrize("p, verdict", [(0.45, "reproduced"), (1 / 3, "inconclusive"), (0.2, "not reproduced")])
def test_one_model_against_chance(p, verdict):
    # a probe over three weathers: chance is 1/3
    c = contrast([bernoulli(p, seed=13)], [1.0], baseline=1 / 3)
    assert c.verdict == verdict and abs(c.difference.mean - (p - 1 / 3)) < 0.03


def test_holm_adjustment_and_verdicts_on_it():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])

    def made(effect, p):
        return Comparison(Interval(effect, effect - 1, effect + 1, 3, 1000), p, "whatever")

    family = adjust([made(2.0, 0.001), made(-3.0, 0.002), made(1.0, 0.03), made(0.5, 0.04),
                     Comparison(Interval(5, 4, 6, 1, 1000), None, NO_VERDICT)])
    assert [c.verdict for c in family] == ["reproduced", "not reproduced", "inconclusive", "inconclusive",
                                           NO_VERDICT]
    assert [c.p_adjusted for c in family[:4]] == pytest.approx([0.004, 0.006, 0.06, 0.06])
    assert family[4].p_adjusted is None
    alone = adjust([made(1.0, 0.03)])  # the same p alone is significant
    assert alone[0].verdict == "reproduced"


def test_p_values_print_their_floor():
    assert fmt_p(None) == "-" and fmt_p(1e-9) == "< 0.001" and fmt_p(0.0456) == "0.046"


def test_minimum_detectable_effect_is_found_at_its_power():
    import math

    from scipy import stats as sps

    from uvlm.suites.stats import minimum_detectable_effect

    assert minimum_detectable_effect(2.0, 1) == math.inf
    mde = minimum_detectable_effect(2.0, 3)
    assert 6.0 < mde < 6.2 and minimum_detectable_effect(2.0, 10) < mde / 2  # 3.72 x 2 x sqrt(2/3)
    # simulated: two rows of 3 seeds whose true means differ by the MDE; Welch's test finds it
    # in about 80% of cases (a little less: Welch's df is below the pooled 4)
    rng = np.random.default_rng(0)
    a = rng.normal(0, 2.0, (4000, 3))
    b = rng.normal(mde, 2.0, (4000, 3))
    found = (sps.ttest_ind(b, a, axis=1, equal_var=False).pvalue < 0.05).mean()
    assert 0.65 < found < 0.85
