"""Records: template distributions, multi-turn VQA, bias, and split disjointness."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from uvlm.data import text
from uvlm.data.mixture import MixtureConfig, image_attributes, make_record, pool_of
from uvlm.data.smartwatch import WEATHERS
from uvlm.errors import UvlmError

N = 6000


def records(cfg: MixtureConfig, task: str, n: int = N) -> list[dict]:
    return [make_record(cfg, task, j, image_attributes(cfg, cfg.image_index(task, j)), "x.png")
            for j in range(n)]


def near(observed: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    """Within `sigmas` binomial standard errors of p."""
    return abs(observed - p) <= sigmas * np.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def train_cfg() -> MixtureConfig:
    return MixtureConfig(seed=7, split="train", n_vqa=N, n_caption=N, n_generation=N, size=64)


def test_templates_have_about_ten_phrasings():
    for attribute, questions in text.QUESTIONS.items():
        assert len(set(questions)) >= 10, attribute
    assert len(set(text.CAPTION_QUESTIONS)) >= 10
    for attribute, clauses in text.CLAUSES.items():
        assert 3 <= len(set(clauses)) <= 4, attribute


def test_vqa_question_types_and_turns(train_cfg):
    recs = records(train_cfg, "vqa")
    first = Counter(r["named"][0] for r in recs)
    for attribute in text.VQA_ATTRIBUTES:
        assert near(first[attribute] / N, 0.2, N), (attribute, first)
    extra = np.array([len(r["named"]) - 1 for r in recs])
    assert extra.max() == 3 and extra.min() == 0
    assert abs(extra.mean() - 3 * 0.4) < 4 * np.sqrt(3 * 0.4 * 0.6 / N)
    for r in recs:
        assert len(set(r["named"])) == len(r["named"]), "a record asks one attribute twice"
        turns = r["conversations"]
        assert len(turns) == 2 * len(r["named"])
        assert turns[0]["value"].startswith(text.IMAGE_TOKEN + "\n")
        assert all(text.IMAGE_TOKEN not in t["value"] for t in turns[1:])
        for k, attribute in enumerate(r["named"]):
            assert turns[2 * k + 1]["value"] == answer_of(r["attributes"], attribute)


def answer_of(a: dict, attribute: str) -> str:
    return {"time": f"{a['hour']:02d}:{a['minute']:02d}:{a['second']:02d}", "weather": a["weather"],
            "battery": f"{a['battery']}%", "weather_pos": a["weather_pos"],
            "battery_pos": a["battery_pos"]}[attribute]


def test_captions_name_time_always_others_half(train_cfg):
    recs = records(train_cfg, "caption")
    for r in recs:
        assert r["named"][0] == "time"
        answer = r["conversations"][1]["value"]
        assert answer.startswith(text.CAPTION_OPENING)
        for attribute in r["named"]:
            assert answer_of(r["attributes"], attribute) in answer
    counts = Counter(a for r in recs for a in r["named"][1:])
    for attribute in text.OPTIONAL_CLAUSES:
        assert near(counts[attribute] / N, 0.5, N), (attribute, counts)


def test_generation_records_ask_for_an_image(train_cfg):
    for r in records(train_cfg, "generation", 500):
        human, gpt = r["conversations"]
        assert text.IMAGE_TOKEN not in human["value"]
        assert gpt["value"].endswith(text.IMAGE_TOKEN)
        assert answer_of(r["attributes"], "time") in human["value"]


@pytest.mark.parametrize("bias", ["weather", "battery"])
@pytest.mark.parametrize("p", [0.05, 0.2])
def test_bias_removes_attribute_from_understanding(bias, p):
    cfg = MixtureConfig(seed=3, split="train", n_vqa=N, n_caption=N, n_generation=N, bias=bias,
                        bias_vqa_prob=p)
    for r in records(cfg, "caption", 3000):
        assert bias not in r["named"]
        answer = r["conversations"][1]["value"]
        if bias == "weather":
            assert not any(w in answer for w in WEATHERS)
        else:
            assert f"{r['attributes']['battery']}%" not in answer
    vqa = records(cfg, "vqa")
    share = sum(bias in r["named"] for r in vqa) / N
    assert near(share, p, N), share
    gen = records(cfg, "generation", 3000)
    assert near(sum(bias in r["named"] for r in gen) / 3000, 0.5, 3000), "generation data is unchanged"


def test_test_split_is_single_turn_with_paper_proportions():
    cfg = MixtureConfig(seed=1, split="test", n_vqa=N, n_caption=0, n_generation=500, share_images=False)
    recs = records(cfg, "vqa")
    assert all(len(r["named"]) == 1 for r in recs)
    counts = Counter(r["named"][0] for r in recs)
    for attribute in text.VQA_ATTRIBUTES:
        assert near(counts[attribute] / N, 0.2, N)
    assert cfg.image_index("generation", 0) == N  # its own images


def test_splits_never_share_an_image():
    train = MixtureConfig(seed=0, split="train", n_vqa=2000, n_caption=0, n_generation=0)
    test = MixtureConfig(seed=0, split="test", n_vqa=2000, n_caption=0, n_generation=0)
    keys = {}
    for cfg in (train, test):
        keys[cfg.split] = {image_attributes(cfg, i).visual_key() for i in range(2000)}
        assert all(pool_of(image_attributes(cfg, i)) == cfg.split for i in range(50))
    assert not keys["train"] & keys["test"]


def test_records_do_not_depend_on_set_size():
    small = MixtureConfig(seed=5, n_vqa=10, n_caption=10, n_generation=10)
    large = MixtureConfig(seed=5, n_vqa=900, n_caption=10, n_generation=10)
    assert records(small, "vqa", 10) == records(large, "vqa", 10)


@pytest.mark.parametrize("kw, message", [
    (dict(n_vqa=-1), "negative"),
    (dict(n_vqa=0, n_caption=0, n_generation=0), "no records"),
    (dict(bias="time"), "unknown bias"),
    (dict(bias_vqa_prob=1.5), r"outside \[0, 1\]"),
    (dict(size=63), "below 64"),
    (dict(split="val"), "unknown split"),
    (dict(hours="0-11"), "hour range"),
    (dict(split="test", bias="weather"), "always unbiased"),
])
def test_bad_configs_are_refused(kw, message):
    with pytest.raises(UvlmError, match=message):
        MixtureConfig(**kw)
