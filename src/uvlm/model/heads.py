"""The generation head: LLM hidden state -> the next vision token of the output space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GenerationHead(nn.Module):
    """One linear layer, as the authors use: logits over VQ ids, or a SigLIP embedding.

    VQ targets: cross-entropy over the codebook. SigLIP targets: 1 - cosine similarity.
    """

    def __init__(self, hidden: int, discrete: bool, out_dim: int):
        super().__init__()
        self.discrete = discrete
        self.proj = nn.Linear(hidden, out_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # the LLM may hold 16-bit weights while the head trains in fp32: compute in the head's dtype
        # (under autocast, autocast's dtype wins)
        return self.proj(hidden.to(self.proj.weight.dtype))

    def loss_sum(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss summed over slots (a mean is taken over the whole global batch by the caller)."""
        out = self(hidden).float()
        if self.discrete:
            return F.cross_entropy(out, targets, reduction="sum")
        return (1 - F.cosine_similarity(out, targets.float(), dim=-1)).sum()

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_sum(hidden, targets) / max(len(hidden), 1)
