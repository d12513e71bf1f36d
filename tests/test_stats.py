"""Suite statistics on synthetic scores whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from uvlm.suites.stats import cell_interval, compare, contrast


def bernoulli(p, seeds=3, questions=1000, seed=0):
    return (np.random.default_rng(seed).random((seeds, questions)) < p).astype(float)


def test_cell_interval_matches_the_binomial_standard_error():
    scores = bernoulli(0.7, seeds=1, seed=1)
    cell = cell_interval(scores, n_boot=4000)
    half = (cell.high - cell.low) / 2
    expected = 1.96 * np.sqrt(0.7 * 0.3 / 1000)
    assert abs(half - expected) < 0.2 * expected
    assert cell.low < scores.mean() < cell.high and cell.n_seeds == 1


def test_seed_to_seed_variation_widens_the_interval():
    rng = np.random.default_rng(2)
    steady = bernoulli(0.6, seeds=3, seed=3)
    noisy = np.stack([(rng.random(1000) < p).astype(float) for p in (0.4, 0.6, 0.8)])
    assert (cell_interval(noisy, 3000).high - cell_interval(noisy, 3000).low) > \
        2 * (cell_interval(steady, 3000).high - cell_interval(steady, 3000).low)


@pytest.mark.parametrize("pa, pb, verdict", [(0.9, 0.5, "reproduced"), (0.5, 0.9, "not reproduced"),
                                             (0.7, 0.7, "inconclusive")])
def test_compare_verdicts(pa, pb, verdict):
    a, b = bernoulli(pa, seed=4), bernoulli(pb, seed=5)
    c = compare(a, b, n_boot=3000)
    assert c.verdict == verdict
    assert c.difference.low <= c.difference.mean <= c.difference.high
    assert abs(c.difference.mean - (pa - pb)) < 0.05
    if verdict != "inconclusive":
        assert c.p_value < 0.01


def test_pairing_over_questions_detects_small_consistent_gains():
    # One seed: A is B plus a gain on 3% of the questions (about 1.5 points). Pairing over
    # questions sees it; the binomial noise of an unpaired comparison (about 2.2 points) would not.
    rng = np.random.default_rng(6)
    base = (rng.random((1, 1000)) < 0.5).astype(float)
    better = base.copy()
    better[:, :30] = 1.0
    c = compare(better, base, n_boot=3000)
    assert c.verdict == "reproduced" and c.difference.mean > 0


def test_same_seed_same_numbers_and_bad_shapes():
    a, b = bernoulli(0.6, seed=7), bernoulli(0.5, seed=8)
    assert compare(a, b, 2000, seed=1) == compare(a, b, 2000, seed=1)
    with pytest.raises(ValueError):
        compare(a, b[:, :10])
    with pytest.raises(ValueError):
        cell_interval(np.zeros((2, 0)))


def test_difference_of_differences():
    # unified drops 0.3 under the map, _u drops nothing: (u - u*) - (v - v*) = 0.3
    u, u_star = bernoulli(0.9, seed=9), bernoulli(0.6, seed=10)
    v, v_star = bernoulli(0.7, seed=11), bernoulli(0.7, seed=12)
    c = contrast([u, u_star, v, v_star], [1, -1, -1, 1], n_boot=3000)
    assert c.verdict == "reproduced" and abs(c.difference.mean - 0.3) < 0.06


@pytest.mark.parametrize("p, verdict", [(0.45, "reproduced"), (1 / 3, "inconclusive"), (0.2, "not reproduced")])
def test_one_model_against_chance(p, verdict):
    # a probe over three weathers: chance is 1/3
    c = contrast([bernoulli(p, seed=13)], [1.0], n_boot=3000, baseline=1 / 3)
    assert c.verdict == verdict and abs(c.difference.mean - (p - 1 / 3)) < 0.03
