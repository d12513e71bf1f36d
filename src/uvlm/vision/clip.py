"""CLIP as a vision space: LLaVA-1.5's encoder (openai/clip-vit-large-patch14-336) for Table 2.

As LLaVA takes them: the second-to-last layer's patch tokens (576 at 336 px; the class token
left out), from an image first padded to a square with the processor's mean colour, so that
nothing of a wide or tall image is cropped away. As an output space (CLIP-CLIP) the generation
head predicts these features, as the SigLIP space's does.
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import CLIPVisionModel

try:  # the PIL-backed processor needs no torchvision; we only read its settings anyway
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:  # older transformers
    from transformers import CLIPImageProcessor

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


def pad_to_square(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    """`image` centred on a `colour` square whose side is its longer edge."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def squared_batch(space: ClipSpace, images: list[Image.Image]) -> torch.Tensor:
    """PIL images of any sizes -> uint8 (B, 3, S, S) at the encoder's resolution, each padded first."""
    import numpy as np

    size = (space.image_size, space.image_size)
    arrays = [np.asarray(space.square(im).resize(size, Image.BICUBIC)) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
