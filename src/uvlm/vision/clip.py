"""CLIP as a vision space: LLaVA-1.5's encoder (openai/clip-vit-large-patch14-336) for Table 2.

As LLaVA takes them: the second-to-last layer's patch tokens (576 at 336 px; the class token
left out), from an image first padded to a square with the processor's mean colour, so that
nothing of a wide or tall image is cropped away. As an output space (CLIP-CLIP) the generation
head predicts these features, as the SigLIP space's does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPVisionModel

try:  # the PIL-backed processor needs no torchvision; we only read its settings anyway
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # older transformers
    from transformers import CLIPImageProcessor

from uvlm.data.llava_folder import pad_to_square
from uvlm.vision.siglip import SiglipSpace


class ClipSpace(SiglipSpace):
    """A transformers CLIP vision tower; loading, fingerprint and encoding as the SigLIP space's."""

    name = "clip"
    label = "CLIP"
    model_class = CLIPVisionModel
    processor_class = CLIPImageProcessor
    leading_tokens = 1

    def pad_colour(self) -> tuple[int, int, int]:
        """The processor's mean colour in 0-255: padding that normalises to zero."""
        return tuple(int(m * 255) for m in self.processor.image_mean)

    def square(self, image: Image.Image) -> Image.Image:
        """`image` centred on a square of the mean colour, its side the longer edge (LLaVA's "pad")."""
        return pad_to_square(image.convert("RGB"), self.pad_colour())


# `tiny-clip`: a CLIP vision tower of LLaVA's layout at a tiny size, random weights: the tiny
# preset's input space (it carries the pixels through random projections: plumbing, not CLIP).
TINY_CLIP = {"image_size": 56, "patch_size": 14, "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 128, "seed": 0}


def tiny_clip() -> Path:
    """The `tiny-clip` tower's folder in the cache (built on first use, the same bytes every time)."""
    from uvlm.vision.cache import cached_artifact

    def build(folder: Path) -> dict:
        save_random_tower(folder, {k: v for k, v in TINY_CLIP.items() if k != "seed"}, TINY_CLIP["seed"])
        return {"random": True}

    return cached_artifact("tiny-clip", TINY_CLIP, build)[0]


def save_random_tower(folder: Path, settings: dict, seed: int) -> None:
    """A CLIP vision tower of `settings` (CLIPVisionConfig fields) with seeded random weights and
    CLIP's processor at its image size, saved in `folder` as `clip:` loads it."""
    from transformers import CLIPVisionConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    CLIPVisionModel(CLIPVisionConfig(**settings)).save_pretrained(folder)
    size = settings["image_size"]
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(folder)


def clip_geometry(spec: str) -> tuple[int, tuple[int, int, int]]:
    """(input size, padding colour) of a CLIP spec, from its processor's settings (no weights read)."""
    from uvlm.errors import UvlmError
    from uvlm.vision.load import weights_path

    kind, _, source = spec.partition(":")
    folder = str(tiny_clip()) if kind == "tiny-clip" else weights_path(source)
    try:
        p = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        raise UvlmError(f"cannot read CLIP's processor settings from {spec!r}; give clip:<folder or hub id in the "
                        "HF cache> or tiny-clip") from None
    crop = p.crop_size
    return int(crop["height"] if isinstance(crop, dict) else crop.height), tuple(int(m * 255) for m in p.image_mean)


def squared_batch(space: ClipSpace, images: list[Image.Image]) -> torch.Tensor:
    """PIL images of any sizes -> uint8 (B, 3, S, S) at the encoder's resolution, each padded first."""
    import numpy as np

    size = (space.image_size, space.image_size)
    arrays = [np.asarray(space.square(im).resize(size, Image.BICUBIC)) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
