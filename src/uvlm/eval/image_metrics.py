"""Image-quality metrics through torchmetrics: domain FID/KID and, optionally, Inception FID.

- Domain FID/KID use the pixel judge's 256-d penultimate features: offline, and tuned to
  what SmartWatch images are made of.
- Inception FID (the paper's metric) needs the pytorch-fid / torch-fidelity Inception
  weights file, given by path; it is never downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from uvlm.errors import UvlmError

# Each call scores the images it is given, in one process: torchmetrics would otherwise gather
# its states from every process of a distributed run, where only the main one evaluates (a hang).
LOCAL = {"sync_on_compute": False}


class _Features(nn.Module):
    """Wraps a feature function so torchmetrics can call it on uint8 image batches."""

    def __init__(self, fn, dim: int):
        super().__init__()
        self.fn = fn
        self.num_features = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images).double()


def domain_fid_kid(real: torch.Tensor, fake: torch.Tensor, features, dim: int = 256) -> dict:
    """FID and KID between uint8 image sets (B, 3, H, W) in a feature space of our own."""
    if len(real) < 2 or len(fake) < 2:
        raise UvlmError("FID needs at least 2 real and 2 generated images")
    extractor = _Features(features, dim)
    fid = FrechetInceptionDistance(feature=extractor, reset_real_features=True, **LOCAL)
    subset = min(len(real), len(fake), 100)
    kid = KernelInceptionDistance(feature=extractor, subset_size=subset, subsets=50, **LOCAL)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std),
            "n_real": len(real), "n_fake": len(fake)}


def inception_fid(real: torch.Tensor, fake: torch.Tensor, weights: Path | None) -> float:
    """The paper's FID (Inception-v3 pool features) from a local weights file."""
    if weights is None:
        raise UvlmError("Inception FID needs --inception-weights PATH (the pytorch-fid / torch-fidelity "
                        "file pt_inception-2015-12-05-6726825d.pth); uvlm never downloads it")
    weights = Path(weights)
    if not weights.is_file():
        raise UvlmError(f"Inception weights {weights} do not exist")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise UvlmError("Inception FID needs the optional extra: pip install 'uvlm[fid]'") from None
    try:
        fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights), **LOCAL)
    except Exception as e:  # torch-fidelity raises many types for a bad file
        raise UvlmError(f"cannot load Inception weights {weights} ({type(e).__name__}); "
                        "give the pytorch-fid / torch-fidelity .pth file") from None
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())
