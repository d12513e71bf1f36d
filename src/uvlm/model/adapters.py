"""Vision adapters (encoder space -> LLM space) and the affine distortion of the input space."""

from __future__ import annotations

import torch
from torch import nn

ADAPTER_KINDS = ("linear", "mlp2")


def make_adapter(kind: str, in_dim: int, hidden: int) -> nn.Module:
    """`linear` (the paper's VQ adapter) or `mlp2`, two layers with GELU (its SigLIP adapter)."""
    if kind == "linear":
        return nn.Linear(in_dim, hidden)
    if kind == "mlp2":
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
    raise ValueError(f"unknown adapter kind {kind!r}; use one of {ADAPTER_KINDS}")


def default_adapter(space: str) -> str:
    """The paper's choice: an MLP for SigLIP features, a linear map for 8-d VQ codes."""
    return "mlp2" if space == "siglip" else "linear"


class Standardize(nn.Module):
    """A fixed per-dimension standardisation of a vision space, (x - mean) / std.

    Fitted once on the training set's features before training (buffers, never trained), so
    every space enters its adapter at unit scale: our SigLIP stand-in's tokens have norm ~50
    and share one dominant direction, against unit-norm VQ codes. Identity until fitted.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, chunk: int = 1 << 16) -> None:
        """Two passes over `chunk` rows at a time, in float64: memory stays O(chunk x dim),
        where a float64 copy of the paper's SigLIP features (60K x 196 x 768) would be 72 GB."""
        x = x.reshape(-1, x.shape[-1])
        n = x.shape[0]
        total = sum(x[i:i + chunk].double().sum(0) for i in range(0, n, chunk))
        mean = total / n
        squares = sum(((x[i:i + chunk].double() - mean) ** 2).sum(0) for i in range(0, n, chunk))
        self.mean.copy_(mean.float())
        self.std.copy_((squares / max(n - 1, 1)).sqrt().clamp_min(1e-6).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class AffineDistortion(nn.Module):
    """A fixed, seeded, invertible affine map x -> x A^T + t (the paper's "*" models).

    A = Q S: Q orthogonal (QR of a uniform random matrix), S diagonal with entries uniform in
    [1 - s, 1 + s]; t uniform in [-s, s]. Nothing here is trained: buffers, not parameters.
    """

    def __init__(self, dim: int, strength: float, seed: int = 0):
        super().__init__()
        if not 0 < strength < 1:
            raise ValueError(f"affine strength {strength} must be in (0, 1) to keep the map invertible")
        g = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.rand(dim, dim, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # a unique Q for the draw
        scale = 1 - strength + 2 * strength * torch.rand(dim, generator=g, dtype=torch.float64)
        shift = strength * (2 * torch.rand(dim, generator=g, dtype=torch.float64) - 1)
        self.register_buffer("matrix", (q * scale).float())  # Q @ diag(scale)
        self.register_buffer("shift", shift.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T.to(x.dtype) + self.shift.to(x.dtype)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(self.matrix.double(), (y.double() - self.shift.double()).T).T.to(y.dtype)
