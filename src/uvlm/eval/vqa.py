"""VQA scoring exactly as the authors' evaluation script computes it (shared/paper/notes.md).

- time: the first HH:MM:SS in the answer; circular errors per component,
  eh = min(|dh|, 12 - |dh|), em and es likewise over 60;
  score = 1 - (eh/6 + em/30 + es/30) / 3. No parsable time -> 0.
- battery: the first NN% in the answer; score = 1 - |answer - truth| / 100. No NN% -> 0.
- weather, weather_pos, battery_pos: 1 if the true string appears in the answer, else 0.

Two guards the script lacks, which change nothing for well-formed answers: components are
reduced modulo 12 / 60 before the circular error, and the battery score is floored at 0,
so an answer like "25:00:00" or "250%" cannot push a score outside [0, 1]. Matching is
case-insensitive.

Aggregates (percent): time_acc, weather_acc, battery_acc, position_acc (weather and battery
positions pooled) and total_acc, the sum of all scores over the number of questions (not a
mean of the four). An attribute with no questions reports None.

CelebA (uvlm.data.faces; the paper gives no scoring): every question is yes/no; an answer
scores 1 when its first "yes" or "no" (a whole word, any case) is the truth, else 0. Columns:
one per attribute (`Black_Hair_acc`, ...) and total_acc. A file mixes no domains.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from uvlm.data.celeba import ATTRIBUTES as FACE_ATTRIBUTES
from uvlm.data.faces import answer as face_answer
from uvlm.data.smartwatch import Attributes

ATTRIBUTES = ("time", "weather", "weather_pos", "battery", "battery_pos")
ALL_ATTRIBUTES = ATTRIBUTES + FACE_ATTRIBUTES
# Report columns and the attributes each pools.
COLUMNS = {
    "time_acc": ("time",),
    "weather_acc": ("weather",),
    "position_acc": ("weather_pos", "battery_pos"),
    "battery_acc": ("battery",),
}

FACE_COLUMNS = {f"{a}_acc": (a,) for a in FACE_ATTRIBUTES}

_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_TIME = re.compile(r"(\d{1,2}):(\d{1,2}):(\d{1,2})")
_BATTERY = re.compile(r"(\d{1,3})\s*%")


def _circular(a: int, b: int, period: int) -> int:
    d = abs(a % period - b % period)
    return min(d, period - d)


def parse_time(text: str) -> tuple[int, int, int] | None:
    m = _TIME.search(text)
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]))


def parse_battery(text: str) -> int | None:
    m = _BATTERY.search(text)
    return None if m is None else int(m[1])


def score_time(truth: str, answer: str) -> float:
    t, a = parse_time(truth), parse_time(answer)
    if t is None:
        raise ValueError(f"ground-truth time {truth!r} is not HH:MM:SS")
    if a is None:
        return 0.0
    eh = _circular(a[0], t[0], 12)
    em = _circular(a[1], t[1], 60)
    es = _circular(a[2], t[2], 60)
    return 1.0 - (eh / 6 + em / 30 + es / 30) / 3


def score_battery(truth: str, answer: str) -> float:
    t, a = parse_battery(truth), parse_battery(answer)
    if t is None:
        raise ValueError(f"ground-truth battery {truth!r} is not NN%")
    if a is None:
        return 0.0
    return max(0.0, 1.0 - abs(a - t) / 100)


def check_truth(attribute: str, truth: str) -> None:
    """Raise ValueError unless `truth` is a true answer of `attribute` as the data spells them:
    a weather kind, a corner, HH:MM:SS (hours 0-12) or NN% (0-100). An empty truth would
    otherwise be found in every answer and score 100%."""
    from uvlm.data.smartwatch import POSITIONS, WEATHERS

    value = truth.strip().lower()
    if not value:
        raise ValueError(f"the ground truth of a {attribute} question is empty")
    if attribute in FACE_ATTRIBUTES and value not in ("yes", "no"):
        raise ValueError(f"ground-truth {attribute} {truth!r} is not Yes or No")
    if attribute == "weather" and value not in WEATHERS:
        raise ValueError(f"ground-truth weather {truth!r} is not one of {', '.join(WEATHERS)}")
    if attribute in ("weather_pos", "battery_pos") and value not in POSITIONS:
        raise ValueError(f"ground-truth position {truth!r} is not one of {', '.join(POSITIONS)}")
    if attribute == "time":
        t = parse_time(truth)
        if t is None or not re.fullmatch(r"\d{1,2}:\d{2}:\d{2}", value) or \
                not (0 <= t[0] <= 12 and t[1] < 60 and t[2] < 60):
            raise ValueError(f"ground-truth time {truth!r} is not HH:MM:SS")
    if attribute == "battery":
        b = parse_battery(truth)
        if b is None or not re.fullmatch(r"\d{1,3}%", value) or b > 100:
            raise ValueError(f"ground-truth battery {truth!r} is not NN% (0-100)")


def true_answer(attributes: dict, attribute: str) -> str:
    """The answer a record's image truly gives to the question about `attribute`, from the
    record's attribute values (SmartWatch's, or CelebA's booleans)."""
    if attribute in FACE_ATTRIBUTES:
        return face_answer(attribute, bool(attributes[attribute]))
    return Attributes.from_dict(attributes).answer(attribute)


def score_answer(attribute: str, truth: str, answer: str) -> float:
    """Score of one answer in [0, 1]."""
    if attribute == "time":
        return score_time(truth, answer)
    if attribute == "battery":
        return score_battery(truth, answer)
    if attribute in ("weather", "weather_pos", "battery_pos"):
        return float(truth.strip().lower() in answer.lower())
    if attribute in FACE_ATTRIBUTES:
        m = _YES_NO.search(answer)
        return float(m is not None and m[1].lower() == truth.strip().lower())
    raise ValueError(f"unknown attribute {attribute!r}; use one of {', '.join(ALL_ATTRIBUTES)}")


def aggregate(scored: Iterable[tuple[str, float]]) -> dict:
    """Table columns (percent, None when empty) and counts from (attribute, score) pairs."""
    sums = dict.fromkeys(ALL_ATTRIBUTES, 0.0)
    counts = dict.fromkeys(ALL_ATTRIBUTES, 0)
    for attribute, score in scored:
        sums[attribute] += score
        counts[attribute] += 1
    faces = any(counts[a] for a in FACE_ATTRIBUTES)
    if faces and any(counts[a] for a in ATTRIBUTES):
        raise ValueError("SmartWatch and CelebA answers are mixed; score each dataset's answers on their own")
    result: dict = {}
    n: dict = {}
    for column, pooled in (FACE_COLUMNS if faces else COLUMNS).items():
        k = sum(counts[a] for a in pooled)
        result[column] = 100 * sum(sums[a] for a in pooled) / k if k else None
        n[column.removesuffix("_acc")] = k
    total = sum(counts.values())
    result["total_acc"] = 100 * sum(sums.values()) / total if total else None
    n["total"] = total
    result["n"] = n
    return result


def score_items(items: Iterable[dict]) -> dict:
    """Score dicts with `attribute`, `ground_truth` and `answer`; return `aggregate`'s table.
    Every ground truth is checked first (`check_truth`)."""
    items = list(items)
    for it in items:
        check_truth(it["attribute"], it["ground_truth"])
    return aggregate((it["attribute"], score_answer(it["attribute"], it["ground_truth"], it["answer"]))
                     for it in items)
