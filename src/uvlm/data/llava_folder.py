"""A stage's training file as a uvlm dataset folder: what `uvlm train` reads.

Each image that a record of stage1.json or stage2.json shows is padded to a square of the CLIP
processor's mean colour (LLaVA-1.5's "pad") and resized to the encoder's input size, once;
the encoders' features are then cached from these files as for every other dataset. Records
keep their conversations; their task says what they train: `caption` (stage 1's image
records), `vqa` (stage 2's, text-only conversations among them) or `generation`.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from uvlm.data.folder import build_folder
from uvlm.data.llava_sources import MANIFEST, read_records
from uvlm.data.mixture import image_name
from uvlm.errors import UvlmError
from uvlm.io import read_json

STAGES = ("stage1", "stage2")


def pad_to_square(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """`image` centred on a `colour` square whose side is its longer edge."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


@dataclass(frozen=True)
class StageConfig:
    """What a stage's folder is made from: the stage file (by digest) and the image geometry."""

    stage: str
    records_sha256: str
    size: int  # the encoder's input resolution
    pad_colour: tuple[int, int, int]
    n_images: int
    counts: dict  # records per task

    def to_dict(self) -> dict:
        return {**asdict(self), "pad_colour": list(self.pad_colour)}


class LlavaStage:
    """A dataset-folder domain (uvlm.data.folder.Domain) over one stage of `uvlm llava data`'s output."""

    name = "llava"

    def __init__(self, data: Path, stage: str, size: int, pad_colour: tuple[int, int, int]):
        if stage not in STAGES:
            raise UvlmError(f"unknown stage {stage!r}; use stage1 or stage2")
        read_json(Path(data) / MANIFEST, "LLaVA data manifest", f"build {data} with `uvlm llava data` first")
        path = Path(data) / f"{stage}.json"
        self.data, self.stage = Path(data), stage
        self.source = read_records(path, f"{stage} file")
        self.images = list(dict.fromkeys(r["image"] for r in self.source if r.get("image")))  # first-seen order
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.cfg = StageConfig(stage, digest, size, tuple(pad_colour), len(self.images), {})
        tasks = [r["task"] for r in self.records()]
        self.cfg.counts.update({task: tasks.count(task) for task in ("caption", "vqa", "generation")})

    def image_png(self, i: int) -> bytes:
        path = self.data / "images" / self.images[i]
        try:
            with Image.open(path) as im:
                square = pad_to_square(im.convert("RGB"), self.cfg.pad_colour)
        except OSError as e:
            raise UvlmError(f"image {path} is missing or unreadable ({type(e).__name__}); rebuild the data with "
                            "`uvlm llava data --skip-bad-images`") from None
        buf = io.BytesIO()
        square.resize((self.cfg.size, self.cfg.size), Image.BICUBIC).save(buf, format="PNG")
        return buf.getvalue()

    def records(self) -> list[dict]:
        index = {name: i for i, name in enumerate(self.images)}
        understanding = "caption" if self.stage == "stage1" else "vqa"
        out = []
        for r in self.source:
            record = {"id": r.get("id", ""), "task": r.get("task", understanding),
                      "conversations": r["conversations"]}
            if r.get("image"):
                record["image"] = image_name(index[r["image"]])
            out.append(record)
        return out

    def extra(self) -> dict:
        # the data folder: a tiny LLM's tokenizer is trained on both stages' text (llava_corpus)
        return {"text_only": sum(not r.get("image") for r in self.source), "llava_data": str(self.data.resolve())}


def llava_corpus(folder: Path) -> list[str]:
    """Every turn of both stage files behind a stage's dataset folder (one tokenizer for both stages)."""
    from uvlm.data.folder import read_manifest

    data = Path(read_manifest(folder)["llava_data"])
    return [turn["value"] for stage in STAGES for r in read_records(data / f"{stage}.json", f"{stage} file")
            for turn in r["conversations"]]


def stage_folder(data: Path, stage: str, size: int, pad_colour: tuple[int, int, int], workers: int = 1) -> Path:
    """The dataset folder of `stage` at `size` px (built under DATA/folders/ on first use; resumed if cut)."""
    domain = LlavaStage(data, stage, size, pad_colour)
    key = hashlib.sha256(json.dumps(domain.cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    out = Path(data) / "folders" / f"{stage}-{size}px-{key}"
    build_folder(domain, out, workers=workers)
    return out
