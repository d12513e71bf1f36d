"""Records of a CelebA mixture (the paper's second dataset, section 3.1), in the folder format of
uvlm.data.folder.

The paper gives the recipe: sample the seven attributes' values, write the text from templates,
then pick at random a CelebA image that has those values; train and test images come from
disjoint pools. What it leaves open is decided here, and configurable:

- pools: the official partition (train images for --split train, test images for --split
  test; the valid partition is left unused), so no test image is a training image;
- values: `sampling: uniform` draws each attribute yes/no with probability 1/2, independently
  (the attribute's base rate no longer predicts the answer); `sampling: data` picks a random
  image of the pool (its values follow CelebA's). A uniform draw that no image of the pool
  has is drawn again; the manifest reports how often that happened;
- answers: every question is a yes/no question ("Does the person have a beard?": No_Beard is
  asked positively), answered "Yes" or "No"; scored on the first yes/no word (uvlm.eval.vqa);
- captions and generation prompts name a random subset of the attributes (at least three;
  Fig 2b's example names five of seven), in a sentence built from per-attribute phrases;
- images: the aligned 178 x 218 photo, cropped to the 178 x 178 square 20 px from the top (the
  usual CelebA face crop; `crop: full` keeps the whole photo, squashed), resized to `size`.

Bias: like SmartWatch's, `bias: ATTRIBUTE` asks that attribute in a share `bias_vqa_prob` of
VQA records only, and never names it in captions; generation prompts still name it.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image

from uvlm.data.celeba import ATTRIBUTES, CelebA
from uvlm.data.mixture import TASKS, RecordCounts, image_name
from uvlm.errors import UvlmError

SPLITS = ("train", "test")
SAMPLINGS = ("uniform", "data")
CROPS = ("face", "full")
IMAGE_TOKEN = "<image>"

# Per attribute: the question, the phrase for yes and for no in a description, and whether
# "yes" means the CelebA value is 1 (No_Beard is asked as "a beard", so yes means -1).
_TEXT = {
    "Black_Hair": ("Does the person have black hair?", "with black hair", "whose hair is not black", True),
    "Eyeglasses": ("Is the person wearing eyeglasses?", "wearing eyeglasses", "without eyeglasses", True),
    "No_Beard": ("Does the person have a beard?", "with a beard", "without a beard", False),
    "Male": ("Is the person a man?", None, None, True),  # the subject: "a man" / "a woman"
    "Wearing_Hat": ("Is the person wearing a hat?", "wearing a hat", "without a hat", True),
    "Wearing_Necklace": ("Is the person wearing a necklace?", "wearing a necklace", "without a necklace", True),
    "Wearing_Necktie": ("Is the person wearing a necktie?", "wearing a necktie", "without a necktie", True),
}
_CAPTION_ASKS = ("Describe the person in the image.", "What does this person look like?",
                 "Write a short description of the person.")
_GENERATE = ("Generate an image of {}", "Draw {}", "Create a photo of {}")


@dataclass(frozen=True)
class FaceMixtureConfig(RecordCounts):
    """Everything that decides a CelebA dataset's bytes, given the same copy of CelebA."""

    seed: int = 0
    split: str = "train"
    n_vqa: int = 1000
    n_caption: int = 1000
    n_generation: int = 1000
    size: int = 64
    crop: str = "face"
    sampling: str = "uniform"
    bias: str | None = None
    bias_vqa_prob: float = 0.05
    extra_turn_prob: float = 0.4
    max_extra_turns: int = 3
    share_images: bool = True
    min_named: int = 3

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise UvlmError(f"unknown split {self.split!r} for CelebA; use one of {', '.join(SPLITS)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UvlmError(f"--seed {self.seed!r} must be a whole number >= 0")
        for name in ("n_vqa", "n_caption", "n_generation"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise UvlmError(f"{name} = {getattr(self, name)!r} must be a whole number >= 0")
        if self.n_vqa + self.n_caption + self.n_generation == 0:
            raise UvlmError("the dataset would hold no records; give a positive count")
        if not isinstance(self.size, int) or not 16 <= self.size <= 1024:
            raise UvlmError(f"--size {self.size!r} must be a whole number of pixels in 16..1024")
        if self.crop not in CROPS:
            raise UvlmError(f"unknown crop {self.crop!r}; use one of {', '.join(CROPS)}")
        if self.sampling not in SAMPLINGS:
            raise UvlmError(f"unknown sampling {self.sampling!r}; use one of {', '.join(SAMPLINGS)}")
        if self.bias is not None and self.bias not in ATTRIBUTES:
            raise UvlmError(f"unknown bias {self.bias!r}; use one of {', '.join(ATTRIBUTES)}")
        if self.split == "test" and self.bias is not None:
            raise UvlmError("the test split is always unbiased; drop --bias for --split test")
        for name in ("bias_vqa_prob", "extra_turn_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UvlmError(f"{name} {getattr(self, name)} is outside [0, 1]")
        if not 0 <= self.max_extra_turns <= 3 or not 1 <= self.min_named <= len(ATTRIBUTES):
            raise UvlmError("max_extra_turns must be in 0..3 and min_named in 1..7")


    def to_dict(self) -> dict:
        return {"domain": "celeba", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> FaceMixtureConfig:
        d = {k: v for k, v in d.items() if k != "domain"}
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise UvlmError(f"unknown CelebA dataset config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def answer(attribute: str, value: bool) -> str:
    """The true answer to the attribute's question for a CelebA value."""
    return "Yes" if value == _TEXT[attribute][3] else "No"


def face_corpus() -> list[str]:
    """Every phrase the CelebA templates can produce (questions, answers, descriptions with every
    value of every attribute, caption questions, requests): what a tokenizer trained from scratch
    for CelebA runs must know."""
    every = {a: True for a in ATTRIBUTES}
    descriptions = [describe({**every, **{a: value for a in ATTRIBUTES}}, list(ATTRIBUTES)) for value in (True, False)]
    subjects = ["a man", "a woman", "a person"]
    captions = [d[0].upper() + d[1:] + "." for d in (*descriptions, *subjects)]  # a caption starts a sentence
    return [*(q for q, *_ in _TEXT.values()), "Yes", "No", *_CAPTION_ASKS, *descriptions, *subjects, *captions,
            *(g.format("a person") + "." for g in _GENERATE), IMAGE_TOKEN]


def describe(values: dict[str, bool], named: list[str]) -> str:
    """A description naming `named` attributes (in ATTRIBUTES order), e.g. "a man with black
    hair, wearing eyeglasses and without a hat"."""
    subject = ("a man" if values["Male"] else "a woman") if "Male" in named else "a person"
    parts = [_TEXT[a][1] if values[a] else _TEXT[a][2] for a in ATTRIBUTES if a in named and a != "Male"]
    if len(parts) > 1:
        parts = [", ".join(parts[:-1]) + " and " + parts[-1]]
    return " ".join([subject, *parts])


def _rng(cfg: FaceMixtureConfig, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 10 + SPLITS.index(cfg.split), stream, index])


def pick_images(cfg: FaceMixtureConfig, celeba: CelebA) -> tuple[np.ndarray, int]:
    """For each image of the dataset, the CelebA index it shows, and how many uniform draws had
    no image in the pool and were drawn again."""
    pool = celeba.pool(cfg.split)
    if len(pool) == 0:
        raise UvlmError(f"the CelebA copy at {celeba.root} has no {cfg.split} images")
    codes = celeba.attributes[pool] @ (1 << np.arange(len(ATTRIBUTES)))
    by_code: dict[int, np.ndarray] = {int(c): pool[codes == c] for c in np.unique(codes)}
    picks, redrawn = np.empty(cfg.n_images, dtype=np.int64), 0
    for i in range(cfg.n_images):
        rng = _rng(cfg, 0, i)
        if cfg.sampling == "data":
            picks[i] = pool[rng.integers(len(pool))]
            continue
        while True:
            code = int(rng.integers(2, size=len(ATTRIBUTES)) @ (1 << np.arange(len(ATTRIBUTES))))
            if code in by_code:
                break
            redrawn += 1
        candidates = by_code[code]
        picks[i] = candidates[rng.integers(len(candidates))]
    return picks, redrawn


def make_face_record(cfg: FaceMixtureConfig, task: str, j: int, values: dict[str, bool], image: str) -> dict:
    """Record j of `task`, LLaVA-style, with its ground truth and the attributes it names."""
    rng = _rng(cfg, 1 + TASKS.index(task), j)
    omit = [cfg.bias] if cfg.bias else []
    if task == "vqa":
        if cfg.bias is not None:
            named = [cfg.bias] if rng.random() < cfg.bias_vqa_prob else \
                [str(rng.choice([a for a in ATTRIBUTES if a not in omit]))]
        else:
            named = [str(rng.choice(ATTRIBUTES))]
        if cfg.split != "test":
            for _ in range(cfg.max_extra_turns):
                left = [a for a in ATTRIBUTES if a not in named and a not in omit]
                if left and rng.random() < cfg.extra_turn_prob:
                    named.append(str(rng.choice(left)))
        conversations = []
        for k, a in enumerate(named):
            q = _TEXT[a][0]
            conversations += [{"from": "human", "value": f"{IMAGE_TOKEN}\n{q}" if k == 0 else q},
                              {"from": "gpt", "value": answer(a, values[a])}]
    else:
        allowed = [a for a in ATTRIBUTES if task == "generation" or a not in omit]
        k = int(rng.integers(min(cfg.min_named, len(allowed)), len(allowed) + 1))
        named = sorted((str(a) for a in rng.choice(allowed, size=k, replace=False)), key=ATTRIBUTES.index)
        text = describe(values, named)
        if task == "caption":
            ask = _CAPTION_ASKS[rng.integers(len(_CAPTION_ASKS))]
            conversations = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{ask}"},
                             {"from": "gpt", "value": text[0].upper() + text[1:] + "."}]
        else:
            prompt = _GENERATE[rng.integers(len(_GENERATE))].format(text) + "."
            conversations = [{"from": "human", "value": prompt}, {"from": "gpt", "value": IMAGE_TOKEN}]
    return {"id": f"{cfg.split}-{task}-{j:06d}", "task": task, "image": image, "conversations": conversations,
            "named": named, "attributes": dict(values), "domain": "celeba"}


@dataclass(frozen=True)
class Faces:
    """The CelebA domain of a dataset folder (see uvlm.data.folder.Domain)."""

    cfg: FaceMixtureConfig
    celeba: CelebA
    picks: np.ndarray
    redrawn: int
    name: str = "celeba"

    @classmethod
    def of(cls, cfg: FaceMixtureConfig, celeba: CelebA) -> Faces:
        picks, redrawn = pick_images(cfg, celeba)
        return cls(cfg, celeba, picks, redrawn)

    def values(self, i: int) -> dict[str, bool]:
        row = self.celeba.attributes[self.picks[i]]
        return {a: bool(v) for a, v in zip(ATTRIBUTES, row, strict=True)}

    def image_png(self, i: int) -> bytes:
        img = self.celeba.image(int(self.picks[i]))
        if self.cfg.crop == "face":
            side = min(img.size)
            top = min(20, img.size[1] - side)
            img = img.crop((0, top, side, top + side))
        img = img.resize((self.cfg.size, self.cfg.size), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    def records(self) -> list[dict]:
        return [make_face_record(self.cfg, task, j, self.values(self.cfg.image_index(task, j)),
                                 image_name(self.cfg.image_index(task, j)))
                for task in TASKS for j in range(self.cfg.counts[task])]

    def extra(self) -> dict:
        """The source images (by CelebA name) and how often a uniform draw was redrawn."""
        draws = self.cfg.n_images + self.redrawn
        return {"celeba": {"layout": self.celeba.layout, "images": [self.celeba.names[k] for k in self.picks],
                           "redrawn": self.redrawn, "redrawn_share": round(self.redrawn / max(draws, 1), 4)}}
