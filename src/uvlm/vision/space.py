"""One interface for the two vision spaces of the paper: SigLIP features and VQ codes.

A `VisionSpace` turns images into
- `encode(images)`: understanding input features (B, N, D_in);
- `targets(images)`: what the generation head predicts (VQ ids (B, N) or SigLIP features);
- `embed_targets(targets)`: what a generated token feeds back to the LLM (B, N, D_in);
- `decode(ids)`: pixels, where the space has a decoder (VQ only).

Images come in as uint8 tensors (B, 3, H, W); each space resizes and normalises them itself.
A space computes on the device given to `to()` (the CPU by default) and hands every result
back on the CPU: its outputs go to caches, judges and files, and the model moves what it needs.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from uvlm.errors import UvlmError


class VisionSpace(ABC):
    """A frozen vision encoder seen through the paper's two roles: input and output space."""

    name: str  # "siglip" or "vq"
    n_tokens: int  # vision tokens per image
    feature_dim: int  # width of `encode` and `embed_targets`
    image_size: int  # the resolution the encoder works at
    discrete: bool  # True when targets are ids (cross-entropy), False for embeddings (cosine)
    vocab_size: int | None = None  # number of ids when discrete
    model: torch.nn.Module
    device: torch.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> VisionSpace:
        """Compute on `device` from now on (the encoder's weights move there)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def targets(self, images: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def embed_targets(self, targets: torch.Tensor) -> torch.Tensor: ...

    def encode_with_targets(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both roles in one pass: (features, targets)."""
        features = self.encode(images)
        return features, (self.targets(images) if self.discrete else features)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) from generated ids."""
        raise NotImplementedError(f"the {self.name} space has no pixel decoder")

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors of a discrete space (K, D), as its ids are embedded (on the CPU)."""
        raise NotImplementedError(f"the {self.name} space has no codebook")

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the weights and settings: feature caches are keyed by it."""


def resize_normalise(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, size, size), scaled to [0, 1] then normalised."""
    x = images.float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (B, 3, H, W) -> uint8 images."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def load_images(paths: list[Path]) -> torch.Tensor:
    """PNG files -> uint8 (B, 3, H, W); an unreadable or odd-sized file is one clear error."""
    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                arrays.append(np.array(im.convert("RGB")))
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for missing, truncated, corrupt files
            root = Path(p).parent.parent
            raise UvlmError(f"image {p} is missing or corrupt ({type(e).__name__}); re-run the `uvlm data "
                            f"smartwatch` command that built {root} to repair it, or delete that folder") from None
    if len({a.shape for a in arrays}) > 1:
        raise UvlmError(f"images of {Path(paths[0]).parent.parent} differ in size; rebuild the dataset")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def file_digest(path: Path, extra: str = "") -> str:
    """sha256 of a file's bytes (and of `extra` settings), for cache keys."""
    h = hashlib.sha256(extra.encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_weights(h, module: torch.nn.Module) -> None:
    """Feed every tensor of `module`'s state dict, in name order, into the hash `h` (a fingerprint's
    part). Read through the CPU: the encoder may already sit on a GPU."""
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
