"""Records of a SmartWatch mixture: which images, which tasks, which text, which bias.

A mixture is fully described by `MixtureConfig`. Everything random is drawn from a numpy
Generator seeded by (seed, split, stream, index), so record j of a task is the same whatever
the size of the set, the number of workers or the order of work.

Splits are disjoint by construction: every image's content (`Attributes.visual_key`) hashes
to one of three pools (train, test, pretrain) and a split only keeps images of its own pool.
No test image can equal a training image, whatever seeds the two sets use.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from uvlm.data import text
from uvlm.data.smartwatch import HOUR_RANGES, Attributes, RenderStyle, sample_attributes
from uvlm.errors import UvlmError
from uvlm.identity import without_neutral

SPLITS = ("train", "test", "pretrain")
TASKS = ("vqa", "caption", "generation")
BIASES = ("weather", "battery")
# Settings added after datasets were cached, with the value that builds exactly as before them.
LATER_FIELDS = {"hand_scale": 1.0}

_ATTRIBUTE_STREAM = 0
_TASK_STREAM = {"vqa": 1, "caption": 2, "generation": 3}


class RecordCounts:
    """How a mixture's records map to images, for any config with n_vqa, n_caption,
    n_generation and share_images (SmartWatch's here, CelebA's in uvlm.data.faces)."""

    n_vqa: int
    n_caption: int
    n_generation: int
    share_images: bool

    @property
    def counts(self) -> dict[str, int]:
        return {"vqa": self.n_vqa, "caption": self.n_caption, "generation": self.n_generation}

    @property
    def n_images(self) -> int:
        """Shared images: record j of every task shows image j. Otherwise one image a record."""
        c = self.counts.values()
        return max(c) if self.share_images else sum(c)

    def image_index(self, task: str, j: int) -> int:
        if self.share_images:
            return j
        return sum(self.counts[t] for t in TASKS[: TASKS.index(task)]) + j


@dataclass(frozen=True)
class MixtureConfig(RecordCounts):
    """Everything that decides a dataset's bytes."""

    seed: int = 0
    split: str = "train"
    n_vqa: int = 1000
    n_caption: int = 1000
    n_generation: int = 1000
    size: int = 224
    detail_scale: float = 1.0
    face_radius: float = 0.4
    hand_scale: float = 1.0
    hours: str = "1-12"
    bias: str | None = None
    bias_vqa_prob: float = 0.05
    extra_turn_prob: float = 0.4
    max_extra_turns: int = 3
    share_images: bool = True

    def _check_types(self) -> None:
        """Each setting of the type it is declared with (YAML and flags can give any): a whole number,
        a finite number, text, true/false."""
        for f in fields(self):
            value, kinds = getattr(self, f.name), [k.strip() for k in str(f.type).split("|")]
            if value is None and "None" in kinds:
                continue
            ok = {"int": isinstance(value, int) and not isinstance(value, bool),
                  "float": isinstance(value, int | float) and not isinstance(value, bool)
                  and math.isfinite(value),
                  "str": isinstance(value, str), "bool": isinstance(value, bool)}[kinds[0]]
            if not ok:
                wanted = {"int": "a whole number", "float": "a finite number", "str": "text",
                          "bool": "true or false"}[kinds[0]]
                raise UvlmError(f"dataset setting {f.name} must be {wanted}, got {value!r}")

    def __post_init__(self) -> None:
        self._check_types()
        for f in fields(self):  # 3 and 3.0 build the same bytes: one config, one cache key
            if str(f.type).startswith("float") and isinstance(getattr(self, f.name), int):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        if self.split not in SPLITS:
            raise UvlmError(f"unknown split {self.split!r}; use one of {', '.join(SPLITS)}")
        if self.seed < 0:
            raise UvlmError(f"--seed {self.seed} must be >= 0")
        for name in ("n_vqa", "n_caption", "n_generation"):
            if getattr(self, name) < 0:
                raise UvlmError(f"{name} = {getattr(self, name)} is negative; counts must be >= 0")
        if self.n_vqa + self.n_caption + self.n_generation == 0:
            raise UvlmError("the dataset would hold no records; give a positive count")
        if self.bias is not None and self.bias not in BIASES:
            raise UvlmError(f"unknown bias {self.bias!r}; use one of {', '.join(BIASES)}")
        if not 0.0 <= self.bias_vqa_prob <= 1.0:
            raise UvlmError(f"--bias-vqa-prob {self.bias_vqa_prob} is outside [0, 1]")
        if not 0.0 <= self.extra_turn_prob <= 1.0:
            raise UvlmError(f"extra turn probability {self.extra_turn_prob} is outside [0, 1]")
        if not 0 <= self.max_extra_turns <= 3:
            raise UvlmError(f"max extra turns {self.max_extra_turns} is outside 0..3")
        if self.hours not in HOUR_RANGES:
            raise UvlmError(f"unknown hour range {self.hours!r}; use one of {', '.join(HOUR_RANGES)}")
        if self.split == "test" and self.bias is not None:
            raise UvlmError("the test split is always unbiased; drop --bias for --split test")
        _ = self.style  # RenderStyle validates size, detail scale and face radius

    @property
    def style(self) -> RenderStyle:
        return RenderStyle(self.size, self.detail_scale, self.face_radius, self.hand_scale)


    def to_dict(self) -> dict:
        """The settings, less later fields at their neutral value: datasets built before those
        fields existed keep their cache keys and build markers."""
        return without_neutral(asdict(self), LATER_FIELDS)

    @classmethod
    def from_dict(cls, d: dict) -> MixtureConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UvlmError(f"unknown dataset config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def _rng(cfg: MixtureConfig, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, SPLITS.index(cfg.split), stream, index])


def pool_of(attrs: Attributes) -> str:
    """The split that owns an image's content (a stable hash, a third each)."""
    digest = hashlib.blake2b(repr(attrs.visual_key()).encode(), digest_size=8).digest()
    return SPLITS[int.from_bytes(digest, "little") % len(SPLITS)]


def image_attributes(cfg: MixtureConfig, index: int) -> Attributes:
    """Attributes of image `index`: uniform draws, redrawn until they fall in the split's pool."""
    rng = _rng(cfg, _ATTRIBUTE_STREAM, index)
    while True:
        attrs = sample_attributes(rng, cfg.hours)
        if pool_of(attrs) == cfg.split:
            return attrs


def _human(value: str) -> dict:
    return {"from": "human", "value": value}


def _gpt(value: str) -> dict:
    return {"from": "gpt", "value": value}


def vqa_turns(cfg: MixtureConfig, rng: np.random.Generator) -> list[str]:
    """Attributes asked by one VQA record, in order.

    Unbiased: one question, then up to `max_extra_turns` more, each w.p. `extra_turn_prob`,
    asking attributes not yet asked (test records are single-turn). Biased: the record asks
    the biased attribute (first) w.p. `bias_vqa_prob`, and never otherwise.
    """
    excluded: tuple[str, ...] = ()
    first = None
    if cfg.bias is not None:
        excluded = (cfg.bias,)
        if rng.random() < cfg.bias_vqa_prob:
            first = cfg.bias
    asked = [first or text.draw_vqa_attribute(rng, excluded)]
    if cfg.split != "test":
        for _ in range(cfg.max_extra_turns):
            if rng.random() < cfg.extra_turn_prob:
                asked.append(text.draw_vqa_attribute(rng, excluded + tuple(asked)))
    return asked


def make_record(cfg: MixtureConfig, task: str, j: int, attrs: Attributes, image: str) -> dict:
    """Record j of `task`, LLaVA-style, with its ground truth and the attributes it names."""
    rng = _rng(cfg, _TASK_STREAM[task], j)
    omit = (cfg.bias,) if cfg.bias else ()
    if task == "vqa":
        named = vqa_turns(cfg, rng)
        conversations = []
        for k, attribute in enumerate(named):
            q = text.question(rng, attribute)
            conversations += [_human(f"{text.IMAGE_TOKEN}\n{q}" if k == 0 else q),
                              _gpt(attrs.answer(attribute))]
    elif task == "caption":
        q, answer, named = text.caption(rng, attrs, omit)
        conversations = [_human(f"{text.IMAGE_TOKEN}\n{q}"), _gpt(answer)]
    else:
        instruction, reply, named = text.generation(rng, attrs)
        conversations = [_human(instruction), _gpt(reply)]
    return {
        "id": f"{cfg.split}-{task}-{j:06d}",
        "task": task,
        "image": image,
        "conversations": conversations,
        "named": named,
        "attributes": attrs.to_dict(),
    }


def image_name(index: int) -> str:
    return f"images/{index:06d}.png"
