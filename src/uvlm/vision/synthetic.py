"""Synthetic vision spaces: the paper encoders' output shapes with no encoder behind them.

`synthetic:siglip-base` gives 196 features of 768 per image (SigLIP-base-patch16-224's second-
to-last layer), `synthetic:clip-l336` 576 of 1,024 (CLIP ViT-L/14-336, Table 2),
`synthetic:vq16` 256 ids of a 16,384-code, 8-d codebook (LlamaGen's VQ-16). Each image's outputs
are seeded by a hash of its pixels, so an image always gets the same outputs and two images
different ones. They carry no information about the picture: they exist to measure training
speed and memory at the paper's shapes without downloading anything (benchmarks/bench_train.py
--random-weights), and to test the paper-sized code path.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from uvlm.vision.space import VisionSpace

SHAPES = {"siglip-base": (196, 768, None), "vq16": (256, 8, 16384), "clip-l336": (576, 1024, None),
          "siglip-tiny": (16, 32, None), "vq-tiny": (16, 8, 64)}


class SyntheticSpace(VisionSpace):
    def __init__(self, kind: str):
        n_tokens, dim, vocab = SHAPES[kind]
        self.kind = kind
        self.name = "vq" if vocab else kind.split("-")[0]  # siglip or clip
        self.discrete = vocab is not None
        self.n_tokens, self.feature_dim, self.vocab_size = n_tokens, dim, vocab
        self.image_size = 224
        g = torch.Generator().manual_seed(0)
        self.model = nn.Module()  # nothing to compute: `to()` has nothing to move
        self._codes = F.normalize(torch.randn(vocab, dim, generator=g), dim=-1) if vocab else None

    def _generator(self, image: torch.Tensor) -> torch.Generator:
        digest = hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images.cpu():
            g = self._generator(image)
            if self.discrete:
                out.append(torch.randint(0, self.vocab_size, (self.n_tokens,), generator=g))
            else:  # SigLIP-like: a shared direction plus per-image variation
                out.append(torch.randn(self.n_tokens, self.feature_dim, generator=g) + 2.0)
        return torch.stack(out)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_targets(self.targets(images)) if self.discrete else self.targets(images)

    def encode_with_targets(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.targets(images)
        return (self.embed_targets(t) if self.discrete else t), t

    def embed_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return self._codes[targets.cpu()] if self.discrete else targets

    @property
    def codebook(self) -> torch.Tensor:
        return self._codes

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """A grey image per id sequence (brightness from the ids): the pixel path runs, shows nothing."""
        level = (ids.float().mean(dim=-1) / self.vocab_size * 255).to(torch.uint8)
        return level.view(-1, 1, 1, 1).expand(-1, 3, 64, 64).contiguous()

    @property
    def fingerprint(self) -> str:
        return f"synthetic-{self.kind}"
