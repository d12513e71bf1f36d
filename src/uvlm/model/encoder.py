"""The encoder, trained: the input space's vision tower inside the model, fed pixels.

Most runs never train it: their understanding inputs are the frozen encoder's cached features.
With `train.train_encoder` (the paper's LLaVA-1.5 stage 2, where "the vision encoder is
unfrozen") the tower of a continuous input space (SigLIP or CLIP) becomes part of the model:
its weights train with the LLM's learning rate, the batch carries the images' pixels, and the
features are computed in the forward pass, with the same layer and tokens as the frozen
space's `encode`. The module holds the space's own tower, so a run loaded for evaluation
encodes its test images with the weights it trained.

A generation target is never this tower's output: the output space is a separate, frozen copy
(uvlm.train.build.load_spaces), so the model cannot move its own targets.
"""

from __future__ import annotations

import torch
from torch import nn


class TrainedEncoder(nn.Module):
    """A SigLIP or CLIP space's tower as a trained module: uint8 images -> features (B, N, D)."""

    def __init__(self, space, checkpointing: bool = False):
        super().__init__()
        self.tower = space.model  # the space's own module: what it encodes with from now on
        self.tower.requires_grad_(True)
        # features are layer -2's: the last layer and what follows it never reach the loss. Frozen,
        # so that no parameter waits for a gradient that cannot come (data parallelism would)
        vision = getattr(self.tower, "vision_model", self.tower)  # transformers 5 flattened the wrapper
        for module in (vision.encoder.layers[-1], vision.post_layernorm, getattr(vision, "head", None)):
            if module is not None:
                module.requires_grad_(False)
        if checkpointing:
            self.tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._features = space.features
        self.image_size = space.image_size
        self.processor = space.processor  # saved beside the weights: the folder loads as the space does

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._features(images)
