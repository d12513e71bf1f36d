"""Chance: what answering without looking at the image scores on a test set.

Two baselines per attribute, computed exactly from the test questions' true answers under
the scoring rules of uvlm.eval.vqa:
- `random`: the expected score of an answer drawn uniformly from the answer space (weather:
  3 kinds; positions: 4 corners; time: 12 hours x 60 x 60; battery: 0..100%; a CelebA
  attribute: yes or no, so 50). A random time
  scores exactly 50: the mean circular error is half its maximum in every component.
- `constant`: the best single answer per attribute for this test set (the most frequent
  weather or corner; for time the hour, minute and second that minimise the summed circular
  errors; for battery the level that minimises the summed absolute error). It is what a
  model that reads the question but not the image can reach, and it is at least `random`.

Columns pool attributes as the tables do (positions pool both corners; total pools every
question), so a table cell is compared with the chance of the same questions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from uvlm.data.smartwatch import POSITIONS, WEATHERS
from uvlm.eval.vqa import FACE_ATTRIBUTES, aggregate, parse_battery, parse_time

CATEGORIES = {"weather": WEATHERS, "weather_pos": POSITIONS, "battery_pos": POSITIONS,
              **dict.fromkeys(FACE_ATTRIBUTES, ("yes", "no"))}  # CelebA: every question is yes/no
_PERIODS = (12, 60, 60)  # hour, minute, second
_WEIGHTS = (6, 30, 30)  # the scorer's divisors


def _circular_errors(truths: np.ndarray, period: int) -> np.ndarray:
    """(candidates, truths) circular distances of every candidate value to every truth."""
    d = np.abs(np.arange(period)[:, None] - truths[None] % period)
    return np.minimum(d, period - d)


def _time_components(truths: list[str]) -> list[np.ndarray]:
    parsed = [parse_time(t) for t in truths]
    if any(p is None for p in parsed):
        raise ValueError("a ground-truth time is not HH:MM:SS")
    return [np.array([p[i] for p in parsed]) for i in range(3)]


def _time_scores(truths: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Per question: the expected score of a random time, the score of the best constant time,
    and that time."""
    random, constant, best = np.ones(len(truths)), np.ones(len(truths)), []
    for values, period, weight in zip(_time_components(truths), _PERIODS, _WEIGHTS, strict=True):
        errors = _circular_errors(values, period)  # (period, questions)
        random -= errors.mean(axis=0) / weight / 3
        choice = int(errors.sum(axis=1).argmin())
        constant -= errors[choice] / weight / 3
        best.append(choice)
    hour = best[0] or 12  # hour 0 reads 12 on a watch face
    return random, constant, f"{hour:02d}:{best[1]:02d}:{best[2]:02d}"


def _battery_scores(truths: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    levels = np.array([parse_battery(t) for t in truths])
    if any(v is None for v in levels):
        raise ValueError("a ground-truth battery is not NN%")
    scores = np.maximum(0.0, 1 - np.abs(np.arange(101)[:, None] - levels[None].astype(float)) / 100)
    choice = int(scores.sum(axis=1).argmax())
    return scores.mean(axis=0), scores[choice], f"{choice}%"


def _category_scores(attribute: str, truths: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    values = [t.strip().lower() for t in truths]
    choice, _ = Counter(values).most_common(1)[0]
    return (np.full(len(values), 1 / len(CATEGORIES[attribute])),
            np.array([float(v == choice) for v in values]), choice)


def chance(items: Iterable[tuple[str, str]]) -> dict:
    """Chance of (attribute, true answer) pairs: {"random": columns, "constant": columns,
    "constant_answers": {attribute: answer}}, columns as `aggregate` gives them (percent)."""
    by_attribute: dict[str, list[str]] = {}
    for attribute, truth in items:
        by_attribute.setdefault(attribute, []).append(truth)
    random, constant, answers = [], [], {}
    for attribute, truths in by_attribute.items():
        if attribute == "time":
            r, c, answers[attribute] = _time_scores(truths)
        elif attribute == "battery":
            r, c, answers[attribute] = _battery_scores(truths)
        elif attribute in CATEGORIES:
            r, c, answers[attribute] = _category_scores(attribute, truths)
        else:
            raise ValueError(f"unknown attribute {attribute!r}")
        random += [(attribute, float(x)) for x in r]
        constant += [(attribute, float(x)) for x in c]
    return {"random": aggregate(random), "constant": aggregate(constant), "constant_answers": answers}
