"""SigLIP as a vision space: transformers' SiglipVisionModel and its image processor.

Loads a hub id or a local folder (the paper: google/siglip-base-patch16-224). Features are
the second-to-last layer's hidden states, every patch token, as the authors take them.
As an output space SigLIP has no pixel decoder: generated features are fed back as they are.
The CPU stand-in (`uvlm pretrain siglip`) is saved in the same folder format and loaded here.
"""

from __future__ import annotations

import hashlib
import json

import torch
from transformers import SiglipVisionModel
from transformers.utils import logging as hf_logging

try:  # the PIL-backed processor needs no torchvision; we only read its settings anyway
    from transformers import SiglipImageProcessorPil as SiglipImageProcessor
except ImportError:  # older transformers
    from transformers import SiglipImageProcessor

from uvlm.errors import UvlmError
from uvlm.vision.space import VisionSpace, hash_weights, resize_normalise


class SiglipSpace(VisionSpace):
    name = "siglip"
    label = "SigLIP"
    discrete = False
    model_class = SiglipVisionModel
    processor_class = SiglipImageProcessor
    leading_tokens = 0  # tokens before the patches that features leave out (CLIP's class token)

    def __init__(self, model, processor, source: str):
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.source = source
        cfg = model.config
        self.image_size = cfg.image_size
        self.n_tokens = (cfg.image_size // cfg.patch_size) ** 2
        self.feature_dim = cfg.hidden_size
        self._fingerprint: str | None = None

    @classmethod
    def load(cls, name_or_path: str, local_only: bool = True) -> SiglipSpace:
        """From a local folder, or a hub id already in the local HF cache (no downloads)."""
        # A full SiglipModel folder also holds the text tower: not needed, not worth a report.
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            model = cls.model_class.from_pretrained(name_or_path, local_files_only=local_only)
            processor = cls.processor_class.from_pretrained(name_or_path, local_files_only=local_only)
        except (OSError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UvlmError(f"cannot load {cls.label} from {name_or_path!r} ({first}); give a folder saved "
                            "by transformers (config.json, weights, preprocessor_config.json)") from None
        return cls(model, processor, str(name_or_path))

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        p = self.processor
        return resize_normalise(images, self.image_size, p.image_mean, p.image_std)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`encode`'s features, on the space's device and with gradients where the tower's weights
        take them (uvlm.model.encoder trains it)."""
        out = self.model(pixel_values=self._pixels(images.to(self.device)), output_hidden_states=True)
        return out.hidden_states[-2][:, self.leading_tokens:]

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).float().cpu()

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)

    def embed_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return targets

    def weights_changed(self) -> None:
        """Its tower's weights were replaced (a run trained them): the fingerprint, and so the
        key of every feature cached from now on, is computed anew."""
        self._fingerprint = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(json.dumps(self.model.config.to_dict(), sort_keys=True, default=str).encode())
            hash_weights(h, self.model)
            h.update(json.dumps(self.processor.to_dict(), sort_keys=True, default=str).encode())
            self._fingerprint = f"{self.name}-" + h.hexdigest()[:16]
        return self._fingerprint

