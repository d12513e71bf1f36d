"""LlamaGen's VQ tokenizer as a vision space, on transformers' JanusVQVAE.

LlamaGen publishes `vq_ds16_c2i.pt` / `vq_ds16_t2i.pt`: a dict whose "model" entry is the
state dict of its VQModel. JanusVQVAE has the same architecture under other parameter
names; `llamagen_to_janus` renames them. Janus's quantizer forward does not L2-normalise,
but LlamaGen's codebook lookup does, so ids come from our own `lookup`, which normalises
both the encoder output and the codebook, as LlamaGen does.

A checkpoint may carry a sidecar `<name>.json` with its architecture (our CPU stand-ins do);
without one, the published VQ-16 architecture is assumed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import JanusVQVAE, JanusVQVAEConfig

from uvlm.errors import UvlmError
from uvlm.io import atomic_write_bytes, atomic_write_json
from uvlm.vision.space import VisionSpace, file_digest, hash_weights, resize_normalise, to_uint8


@dataclass(frozen=True)
class VQConfig:
    """Architecture of a LlamaGen-style VQ model (defaults: the published VQ-16)."""

    image_size: int = 256
    base_channels: int = 128
    channel_multiplier: tuple[int, ...] = field(default=(1, 1, 2, 2, 4))
    num_res_blocks: int = 2
    latent_channels: int = 256
    embed_dim: int = 8
    num_embeddings: int = 16384

    @property
    def grid(self) -> int:
        """Tokens per side: each level but the last halves the resolution."""
        return self.image_size // 2 ** (len(self.channel_multiplier) - 1)

    def janus(self) -> JanusVQVAEConfig:
        return JanusVQVAEConfig(
            embed_dim=self.embed_dim, num_embeddings=self.num_embeddings,
            latent_channels=self.latent_channels, base_channels=self.base_channels,
            channel_multiplier=list(self.channel_multiplier), num_res_blocks=self.num_res_blocks,
            num_patches=self.grid, dropout=0.0)

    @classmethod
    def from_dict(cls, d: dict) -> VQConfig:
        return cls(**{**d, "channel_multiplier": tuple(d["channel_multiplier"])})


_MID = {"0": "block_1", "1": "attn_1", "2": "block_2"}


def llamagen_to_janus(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename LlamaGen VQModel parameters to JanusVQVAE's; drop the usage-tracking buffer."""
    out = {}
    for key, value in state.items():
        if key.endswith("codebook_used"):
            continue
        k = re.sub(r"^encoder\.conv_blocks\.", "encoder.down.", key)
        k = re.sub(r"^decoder\.conv_blocks\.", "decoder.up.", k)
        k = re.sub(r"\.res\.(\d+)\.", r".block.\1.", k)
        k = re.sub(r"^(encoder|decoder)\.mid\.(\d)\.", lambda m: f"{m[1]}.mid.{_MID[m[2]]}.", k)
        out[k] = value
    return out


def janus_to_llamagen(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming: save a JanusVQVAE in LlamaGen's published layout."""
    mid = {v: k for k, v in _MID.items()}
    out = {}
    for key, value in state.items():
        k = re.sub(r"^encoder\.down\.", "encoder.conv_blocks.", key)
        k = re.sub(r"^decoder\.up\.", "decoder.conv_blocks.", k)
        k = re.sub(r"\.block\.(\d+)\.", r".res.\1.", k)
        k = re.sub(r"^(encoder|decoder)\.mid\.(block_1|attn_1|block_2)\.",
                   lambda m: f"{m[1]}.mid.{mid[m[2]]}.", k)
        out[k] = value
    return out


def lookup(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LlamaGen's quantisation: nearest L2-normalised code to the L2-normalised vector.

    z: (..., D) encoder outputs; codebook: (K, D). Returns ids (...) and codes (..., D).
    """
    zn = F.normalize(z, dim=-1)
    en = F.normalize(codebook, dim=-1)
    # On unit vectors the nearest code is the one with the largest dot product.
    ids = torch.argmax(zn.reshape(-1, zn.shape[-1]) @ en.T, dim=-1).view(z.shape[:-1])
    return ids, en[ids]


class VQSpace(VisionSpace):
    name = "vq"
    discrete = True

    def __init__(self, model: JanusVQVAE, config: VQConfig, source: str = "", digest: str = ""):
        self.model = model.eval().requires_grad_(False)
        self.config = config
        self.source = source
        self.image_size = config.image_size
        self.n_tokens = config.grid**2
        self.feature_dim = config.embed_dim
        self.vocab_size = config.num_embeddings
        self._digest = digest

    @classmethod
    def load(cls, path: str | Path) -> VQSpace:
        """Load a LlamaGen checkpoint (dict with a "model" state dict) and its sidecar config."""
        path = Path(path)
        if not path.is_file():
            where = "" if path.is_absolute() else f" (read from {Path.cwd()}, or from $UVLM_WEIGHTS)"
            raise UvlmError(f"VQ checkpoint {path} does not exist{where}; give the path of a LlamaGen .pt file")
        sidecar = path.with_suffix(".json")
        try:
            config = VQConfig.from_dict(json.loads(sidecar.read_text())) if sidecar.exists() else VQConfig()
        except (ValueError, TypeError) as e:
            raise UvlmError(f"{sidecar} is not a valid VQ config ({e}); fix or delete it") from None
        try:
            # LlamaGen's training checkpoints carry their argparse Namespace beside the weights:
            # plain data, which the weights-only unpickler takes once it is allowed by name
            with torch.serialization.safe_globals([argparse.Namespace]):
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UvlmError(f"{path} is not a readable torch checkpoint ({first[:120]}); "
                            "re-download or rebuild it") from None
        state = None
        if isinstance(checkpoint, dict):
            state = next((checkpoint[k] for k in ("model", "ema", "state_dict") if k in checkpoint), None)
        if not isinstance(state, dict):
            raise UvlmError(f"{path} has no 'model' state dict; expected LlamaGen's layout "
                            "{'model': {...}}")
        model = JanusVQVAE(config.janus())
        mapped, expected = llamagen_to_janus(state), model.state_dict()
        missing = [k for k in expected if k not in mapped]
        unexpected = [k for k in mapped if k not in expected]
        reshaped = [k for k in expected if k in mapped and mapped[k].shape != expected[k].shape]
        if missing or unexpected or reshaped:
            example = (missing or unexpected or reshaped)[0]
            raise UvlmError(f"{path} does not match the VQ architecture {asdict(config)}: "
                            f"{len(missing)} missing, {len(unexpected)} unexpected and {len(reshaped)} "
                            f"wrongly shaped parameters (e.g. {example}); check the checkpoint and its .json")
        model.load_state_dict(mapped)
        return cls(model, config, str(path), file_digest(path, json.dumps(asdict(config))))

    def save(self, path: Path) -> None:
        """Write LlamaGen's layout: {"model": state dict} plus the sidecar config."""
        buf = io.BytesIO()
        torch.save({"model": janus_to_llamagen(self.model.state_dict())}, buf)
        atomic_write_json(Path(path).with_suffix(".json"), asdict(self.config))
        atomic_write_bytes(Path(path), buf.getvalue())

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        return resize_normalise(images, self.image_size, (0.5,) * 3, (0.5,) * 3)

    @torch.no_grad()
    def quantize(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, N) and L2-normalised code vectors (B, N, D), row-major over the grid."""
        h = self.model.quant_conv(self.model.encoder(self._pixels(images.to(self.device))))
        z = h.permute(0, 2, 3, 1).flatten(1, 2)  # (B, N, D)
        ids, codes = lookup(z, self.model.quantize.embedding.weight)
        return ids.cpu(), codes.float().cpu()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantize(images)[1]

    def encode_with_targets(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, codes = self.quantize(images)
        return codes, ids

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantize(images)[0]

    @property
    def codebook(self) -> torch.Tensor:
        return self.model.quantize.embedding.weight.detach().float().cpu()

    def embed_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.quantize.embedding.weight, dim=-1)[targets.to(self.device)].cpu()

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        codes = F.normalize(self.model.quantize.embedding.weight, dim=-1)[ids.to(self.device)]  # (B, N, D)
        g = self.config.grid
        codes = codes.view(ids.shape[0], g, g, -1).permute(0, 3, 1, 2)
        return to_uint8(self.model.decoder(self.model.post_quant_conv(codes))).cpu()

    @property
    def fingerprint(self) -> str:
        if not self._digest:
            h = hashlib.sha256(json.dumps(asdict(self.config)).encode())
            hash_weights(h, self.model)
            self._digest = h.hexdigest()
        return "vq-" + self._digest[:16]


# `tiny-vq`: a VQ of LlamaGen's layout at 32 px (16 ids of a 256-code book), random weights: the
# LLaVA tiny preset's output space (plumbing: its decoded images are noise, not pictures).
TINY_VQ = {"image_size": 32, "base_channels": 32, "channel_multiplier": [1, 2, 2, 2], "num_res_blocks": 1,
           "latent_channels": 32, "embed_dim": 8, "num_embeddings": 256, "seed": 0}


def tiny_vq() -> Path:
    """The `tiny-vq` checkpoint in the cache (built on first use, the same bytes every time)."""
    from uvlm.vision.cache import cached_artifact

    def build(folder: Path) -> dict:
        config = VQConfig.from_dict({k: v for k, v in TINY_VQ.items() if k != "seed"})
        torch.manual_seed(TINY_VQ["seed"])
        VQSpace(JanusVQVAE(config.janus()), config).save(folder / "vq.pt")
        return {"random": True}

    return cached_artifact("tiny-vq", TINY_VQ, build)[0] / "vq.pt"
