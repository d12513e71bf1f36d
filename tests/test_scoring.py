"""VQA scoring on hand-computed cases (shared/paper/notes.md, "Scoring")."""

from __future__ import annotations

import pytest

from uvlm.eval.vqa import aggregate, score_answer, score_items


@pytest.mark.parametrize("truth, answer, expected", [
    ("03:15:30", "03:15:30", 1.0),
    ("11:59:59", "00:00:00", 1 - (1 / 6 + 1 / 30 + 1 / 30) / 3),  # wraps: 1 h, 1 min, 1 s apart
    ("12:00:00", "00:00:00", 1.0),                                 # 12 and 0 are one hour mark
    ("01:00:00", "07:30:30", 1 - (6 / 6 + 30 / 30 + 30 / 30) / 3),  # the farthest answer
    ("02:07:00", "It shows 02:10:00 now", 1 - (0 + 3 / 30 + 0) / 3),
    ("02:07:00", "02:07:00 or 05:00:00", 1.0),                     # the first time wins
    ("02:07:00", "two past seven", 0.0),
    ("02:07:00", "", 0.0),
])
def test_time(truth, answer, expected):
    assert score_answer("time", truth, answer) == pytest.approx(expected)


@pytest.mark.parametrize("truth, answer, expected", [
    ("51%", "51%", 1.0), ("51%", "40%", 0.89), ("0%", "100%", 0.0), ("51%", "it is 60 %", 0.91),
    ("51%", "51", 0.0), ("51%", "20% then 51%", 0.69), ("10%", "250%", 0.0),
])
def test_battery(truth, answer, expected):
    assert score_answer("battery", truth, answer) == pytest.approx(expected)


@pytest.mark.parametrize("attribute, truth, answer, expected", [
    ("weather", "sunny", "sunny", 1.0), ("weather", "sunny", "It is Sunny today", 1.0),
    ("weather", "rainy", "cloudy", 0.0), ("weather_pos", "top-left", "the top-left corner", 1.0),
    ("battery_pos", "top-left", "top-right", 0.0), ("battery_pos", "bottom-left", "bottom left", 0.0),
])
def test_matching(attribute, truth, answer, expected):
    assert score_answer(attribute, truth, answer) == expected


def test_total_pools_questions_not_columns():
    # 3 weather questions all right, 1 time question all wrong:
    # mean of columns would be 50; pooled total is 3/4.
    result = aggregate([("weather", 1.0)] * 3 + [("time", 0.0)])
    assert result["weather_acc"] == 100.0 and result["time_acc"] == 0.0
    assert result["total_acc"] == 75.0
    assert result["position_acc"] is None and result["battery_acc"] is None
    assert result["n"] == {"time": 1, "weather": 3, "position": 0, "battery": 0, "total": 4}


def test_positions_are_pooled():
    result = score_items([
        {"attribute": "weather_pos", "ground_truth": "top-left", "answer": "top-left"},
        {"attribute": "battery_pos", "ground_truth": "top-right", "answer": "bottom-right"},
    ])
    assert result["position_acc"] == 50.0 and result["n"]["position"] == 2


def test_unknown_attribute():
    with pytest.raises(ValueError, match="unknown attribute"):
        score_answer("colour", "red", "red")


def test_chance_is_exact_against_brute_force():
    """Random and best-constant scores equal the scorer's own numbers over the answer space."""
    import itertools

    import numpy as np

    from uvlm.eval.chance import chance
    from uvlm.eval.vqa import score_answer

    rng = np.random.default_rng(0)
    items = [("time", f"{rng.integers(1, 13):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}")
             for _ in range(25)]
    items += [("battery", f"{b}%") for b in rng.integers(30, 101, 40)]
    items += [("weather", w) for w in ["sunny"] * 5 + ["rainy"] * 9 + ["cloudy"] * 6]
    items += [("weather_pos", "top-left")] * 3 + [("battery_pos", "bottom-right")] * 2 + \
        [("battery_pos", "top-left")]
    result = chance(items)
    assert result["random"]["time_acc"] == pytest.approx(50.0)  # exactly half, whatever the truths
    times = [t for a, t in items if a == "time"]
    hours = [(h, m, s) for h, m, s in itertools.product(range(1, 13), range(0, 60, 7), range(0, 60, 7))]
    best = max(np.mean([score_answer("time", t, f"{h:02d}:{m:02d}:{s:02d}") for t in times]) for h, m, s in hours)
    assert 100 * best <= result["constant"]["time_acc"] + 1e-9  # a coarse search cannot beat the exact best
    mine = result["constant_answers"]["time"]
    mine_score = 100 * np.mean([score_answer("time", t, mine) for t in times])
    assert mine_score == pytest.approx(result["constant"]["time_acc"])
    levels = [t for a, t in items if a == "battery"]
    per_answer = [np.mean([score_answer("battery", t, f"{a}%") for t in levels]) for a in range(101)]
    assert result["random"]["battery_acc"] == pytest.approx(100 * np.mean(per_answer))
    assert result["constant"]["battery_acc"] == pytest.approx(100 * max(per_answer))
    assert result["constant"]["weather_acc"] == pytest.approx(45.0) and result["constant_answers"]["weather"] == "rainy"
    assert result["random"]["weather_acc"] == pytest.approx(100 / 3)
    assert result["constant"]["position_acc"] == pytest.approx(100 * 5 / 6)  # top-left x3, bottom-right x2
    for column in ("time_acc", "battery_acc", "weather_acc", "position_acc", "total_acc"):
        assert result["constant"][column] >= result["random"][column] - 1e-9
