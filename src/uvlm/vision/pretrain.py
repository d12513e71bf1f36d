"""CPU-scale stand-ins for the paper's pretrained encoders, trained on SmartWatch renders.

No weights can be downloaded here, so the CPU preset trains small versions of each encoder
on renders from the pretraining pool (its own image pool, disjoint from experiment data):
- a LlamaGen-style VQ (JanusVQVAE architecture, LlamaGen's L2-normalised codebook) with
  reconstruction + codebook + commitment losses, saved in LlamaGen's checkpoint layout;
- a real SigLIP (transformers' SiglipModel, both towers, sigmoid loss) on image-caption
  pairs whose captions name every attribute, saved as a transformers folder.
Both are then loaded through the same code as the paper's real models. Quality (PSNR,
linear probes per attribute) is measured on held-out pool renders and kept beside the weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from transformers import JanusVQVAE, SiglipConfig, SiglipModel

from uvlm.data.celeba import ATTRIBUTES as FACE_ATTRIBUTES
from uvlm.data.faces import describe
from uvlm.data.mixture import MixtureConfig, image_attributes
from uvlm.data.smartwatch import CPU_STYLE, RenderStyle, render
from uvlm.device import PRETRAIN_THREADS, cpu_threads
from uvlm.errors import UvlmError
from uvlm.eval.probe import probe_attributes
from uvlm.identity import without_neutral
from uvlm.model.tokenizer import train_tokenizer
from uvlm.vision.cache import cached_artifact
from uvlm.vision.siglip import SiglipImageProcessor, SiglipSpace
from uvlm.vision.vq import VQConfig, VQSpace, lookup

Progress = Callable[[int, int, str], None]
Pools = tuple[torch.Tensor, list[dict], torch.Tensor, list[dict]]



def render_pool(n: int, seed: int, style: dict, offset: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """n renders from the pretraining pool: uint8 (n, 3, H, W) and their attribute dicts."""
    cfg = MixtureConfig(seed=seed, split="pretrain", n_vqa=0, n_caption=n + offset, n_generation=0, **style)
    rs = RenderStyle(**style)
    attrs = [image_attributes(cfg, offset + i) for i in range(n)]
    images = np.stack([np.asarray(render(a, rs)) for a in attrs])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), [a.to_dict() for a in attrs]


def _cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _batches(n: int, batch: int, steps: int, seed: int):
    """Indices of `steps` batches, reshuffled every epoch, seeded."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    pos = 0
    for _ in range(steps):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=g), 0
        yield order[pos:pos + batch]
        pos += batch


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) between uint8 image batches."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


def _probe(features: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, attrs: list[dict],
           n_train: int) -> dict:
    with torch.no_grad():
        x = torch.cat([features(images[i:i + 128]) for i in range(0, len(images), 128)]).numpy()
    return probe_attributes(x[:n_train], attrs[:n_train], x[n_train:], attrs[n_train:])


@dataclass(frozen=True)
class VQPretrainConfig:
    style: dict = field(default_factory=lambda: dict(CPU_STYLE))
    seed: int = 0
    pool: int = 12000  # training renders
    held_out: int = 2500  # quality renders: the probe trains on the first `probe_train`
    probe_train: int = 2000
    steps: int = 800  # about 8 minutes on 2 cores, inside the 10-minute budget
    batch: int = 24
    lr: float = 2e-3
    beta: float = 0.25  # commitment weight (LlamaGen's)
    base_channels: int = 32
    channel_multiplier: tuple[int, ...] = (1, 1, 2, 2)  # 3 halvings: 64 px -> 8 x 8 tokens
    latent_channels: int = 64
    embed_dim: int = 8
    num_embeddings: int = 512
    restart_every: int = 25  # steps between dead-code restarts (first three quarters only)
    # Reconstruction weight on detail: 1 + detail_weight x (how much a pixel differs from its
    # neighbourhood, relative to the batch's mean), so thin hands and digits are not averaged away.
    detail_weight: float = 0.0

    def vq_config(self) -> VQConfig:
        return VQConfig(self.style["size"], self.base_channels, tuple(self.channel_multiplier), 1,
                        self.latent_channels, self.embed_dim, self.num_embeddings)


@torch.no_grad()
def _restart_dead_codes(codebook: torch.Tensor, used: torch.Tensor, z: torch.Tensor,
                        g: torch.Generator) -> None:
    """Move codes no input chose since the last restart onto random recent encoder outputs.

    Without this a small L2-normalised codebook collapses onto a handful of codes.
    """
    dead = (~used).nonzero().flatten()
    if len(dead) == 0:
        return
    pool = z.reshape(-1, z.shape[-1])
    pick = torch.randint(len(pool), (len(dead),), generator=g)
    codebook[dead] = pool[pick] + 0.01 * torch.randn(len(dead), pool.shape[-1], generator=g)


def _reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, detail_weight: float) -> torch.Tensor:
    """L1 + MSE, weighted towards detail when `detail_weight` > 0 (see VQPretrainConfig)."""
    if detail_weight == 0:
        return F.l1_loss(recon, x) + F.mse_loss(recon, x)
    detail = (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)).abs().sum(1, keepdim=True)
    w = 1 + detail_weight * detail / (detail.mean() + 1e-6)
    err = recon - x
    return ((err.abs() + err ** 2) * w).mean() / w.mean()


# Pretraining fields added after stand-ins were cached, with the value that trains exactly as
# before them: left out of the cache key at that value, so cached stand-ins stay valid.
LATER_FIELDS = {"detail_weight": 0.0}


def cache_key(cfg) -> dict:
    """What a stand-in's cache entry is keyed by: its config, less later fields left neutral."""
    return without_neutral(asdict(cfg), LATER_FIELDS)


def _pools(cfg, given: Pools | None) -> Pools:
    """The images a stand-in trains on and is judged on: given (a CelebA dataset folder's), or
    SmartWatch renders of the config's pool and held-out seeds."""
    if given is not None:
        return given
    return (*render_pool(cfg.pool, cfg.seed, cfg.style), *render_pool(cfg.held_out, cfg.seed + 1, cfg.style,
                                                                     offset=cfg.pool))


@cpu_threads(PRETRAIN_THREADS)
def train_vq(cfg: VQPretrainConfig, out: Path, progress: Progress | None = None, pools: Pools | None = None) -> dict:
    """Train the VQ stand-in, save it in LlamaGen's layout to out/vq.pt, return its quality.
    `pools`: (train images, their attributes, held-out images, theirs) instead of renders."""
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    images, _, held, held_attrs = _pools(cfg, pools)
    vq_cfg = cfg.vq_config()
    model = JanusVQVAE(vq_cfg.janus()).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    x_all = images.float() / 127.5 - 1
    history = []
    used = torch.zeros(cfg.num_embeddings, dtype=torch.bool)
    g = torch.Generator().manual_seed(cfg.seed)
    for step, idx in enumerate(_batches(len(images), cfg.batch, cfg.steps, cfg.seed)):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.steps, cfg.lr, cfg.steps // 20)
        x = x_all[idx]
        z = model.quant_conv(model.encoder(x)).permute(0, 2, 3, 1)
        zn = F.normalize(z, dim=-1)
        ids, codes = lookup(z, model.quantize.embedding.weight)
        used[ids.flatten()] = True
        codebook_loss = F.mse_loss(codes, zn.detach())
        commit_loss = F.mse_loss(zn, codes.detach())
        zq = zn + (codes - zn).detach()  # straight-through
        recon = model.decoder(model.post_quant_conv(zq.permute(0, 3, 1, 2)))
        recon_loss = _reconstruction_loss(recon, x, cfg.detail_weight)
        loss = recon_loss + codebook_loss + cfg.beta * commit_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % cfg.restart_every == 0 and step < cfg.steps * 3 // 4:
            _restart_dead_codes(model.quantize.embedding.weight, used, zn.detach(), g)
            used.zero_()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": loss.item(), "recon": recon_loss.item()})
        if progress:
            progress(step + 1, cfg.steps, f"loss {loss.item():.3f}")
    train_time = time.perf_counter() - start

    space = VQSpace(model, vq_cfg)
    space.save(out / "vq.pt")
    with torch.no_grad():
        ids = torch.cat([space.targets(held[i:i + 128]) for i in range(0, len(held), 128)])
        recon = torch.cat([space.decode(ids[i:i + 128]) for i in range(0, len(ids), 128)])
    usage = len(torch.unique(ids)) / vq_cfg.num_embeddings
    probe = _probe(space.encode, held, held_attrs, min(cfg.probe_train, len(held) * 4 // 5))
    return {"train_seconds": round(train_time, 1), "psnr_db": round(psnr(recon, held), 2),
            "codebook_usage": round(usage, 3), "probe": probe, "history": history,
            "tokens": space.n_tokens}


def siglip_caption(a: dict) -> str:
    """A caption naming every attribute, for contrastive pretraining."""
    if "Male" in a:  # CelebA
        return describe(a, list(FACE_ATTRIBUTES))
    return (f"a watch at {a['hour']:02d}:{a['minute']:02d}:{a['second']:02d} with {a['weather']} weather "
            f"at the {a['weather_pos']} and battery {a['battery']}% at the {a['battery_pos']}")


@dataclass(frozen=True)
class SiglipPretrainConfig:
    style: dict = field(default_factory=lambda: dict(CPU_STYLE))
    seed: int = 0
    pool: int = 20000
    held_out: int = 2500
    probe_train: int = 2000
    steps: int = 1200
    batch: int = 64
    lr: float = 1e-3
    patch_size: int = 8  # 64 px -> 8 x 8 = 64 tokens
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    text_layers: int = 2


@cpu_threads(PRETRAIN_THREADS)
def train_siglip(cfg: SiglipPretrainConfig, out: Path, progress: Progress | None = None,
                 pools: Pools | None = None) -> dict:
    """Train the SigLIP stand-in, save it as a transformers folder in `out`, return its quality.
    `pools`: as for train_vq."""
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    images, attrs, held, held_attrs = _pools(cfg, pools)
    captions = [siglip_caption(a) for a in attrs]
    tokenizer = train_tokenizer(captions)
    encoded = tokenizer(captions, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    size = cfg.style["size"]
    vision = dict(image_size=size, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size,
                  num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                  intermediate_size=4 * cfg.hidden_size)
    text = dict(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.heads, intermediate_size=4 * cfg.hidden_size,
                max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision)).train()
    processor = SiglipImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3,
                                     image_std=[0.5] * 3)
    pixels = images.float() / 127.5 - 1
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    history = []
    for step, idx in enumerate(_batches(len(images), cfg.batch, cfg.steps, cfg.seed)):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.steps, cfg.lr, cfg.steps // 20)
        # SigLIP's text tower reads the last position; captions are padded to a fixed length.
        result = model(input_ids=encoded["input_ids"][idx], pixel_values=pixels[idx], return_loss=True)
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": result.loss.item()})
        if progress:
            progress(step + 1, cfg.steps, f"loss {result.loss.item():.3f}")
    train_time = time.perf_counter() - start

    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    space = SiglipSpace.load(str(out))
    probe = _probe(space.encode, held, held_attrs, min(cfg.probe_train, len(held) * 4 // 5))
    return {"train_seconds": round(train_time, 1), "probe": probe, "history": history,
            "tokens": space.n_tokens}


def quality_summary(info: dict) -> dict:
    """The figures worth printing: everything but the loss history."""
    return {k: v for k, v in info.items() if k != "history"}


def quality_line(info: dict) -> str:
    """One readable line of a stand-in's or the judge's recorded quality: what a linear probe
    (encoders) or the judge itself reads from held-out renders, per attribute, and the rest."""
    scores = info.get("probe", {}).get("vqa") or info.get("held_out") or {}
    reads = ", ".join(f"{k.removesuffix('_acc')} {v:.1f}" for k, v in scores.items() if k.endswith("_acc"))
    extra = [f"{info['tokens']} tokens"] if "tokens" in info else []
    extra += [f"PSNR {info['psnr_db']:.1f} dB"] if "psnr_db" in info else []
    extra += [f"codebook {100 * info['codebook_usage']:.0f}% used"] if "codebook_usage" in info else []
    return f"reads held-out renders: {reads}" + (f"; {', '.join(extra)}" if extra else "")


def pretrained_vq(cfg: VQPretrainConfig | None = None, progress: Progress | None = None,
                  rebuild: bool = False) -> tuple[VQSpace, dict]:
    """The cached VQ stand-in for `cfg` (trained on first use) and its recorded quality."""
    cfg = cfg or VQPretrainConfig()
    entry, meta = cached_artifact("pretrained-vq", cache_key(cfg), lambda d: train_vq(cfg, d, progress), rebuild)
    return VQSpace.load(entry / "vq.pt"), meta["info"]


def pretrained_siglip(cfg: SiglipPretrainConfig | None = None, progress: Progress | None = None,
                      rebuild: bool = False) -> tuple[SiglipSpace, dict]:
    """The cached SigLIP stand-in for `cfg` (trained on first use) and its recorded quality."""
    cfg = cfg or SiglipPretrainConfig()
    entry, meta = cached_artifact("pretrained-siglip", cache_key(cfg),
                                  lambda d: train_siglip(cfg, d, progress), rebuild)
    return SiglipSpace.load(str(entry)), meta["info"]


STAND_INS = {"cpu-vq": VQPretrainConfig, "cpu-siglip": SiglipPretrainConfig}


def stand_in_config(spec: str) -> VQPretrainConfig | SiglipPretrainConfig:
    """The pretraining config a stand-in spec names: `cpu-vq` / `cpu-siglip` (the preset's), or
    with fields changed by a YAML mapping after a colon, e.g. `cpu-vq:{detail_weight: 4}`."""
    name, _, settings = spec.partition(":")
    if name not in STAND_INS:
        raise UvlmError(f"unknown stand-in {name!r}; use {' or '.join(STAND_INS)}")
    try:
        changes = yaml.safe_load(settings) if settings else {}
    except yaml.YAMLError:
        changes = None
    if not isinstance(changes, dict):
        raise UvlmError(f"{spec!r}: write the changed fields as a YAML mapping, e.g. {name}:{{steps: 1600}}")
    return changed_config(STAND_INS[name], changes, repr(spec))


def changed_config(cls: type, changes: dict, where: str):
    """cls's defaults with `changes` applied, each checked against its default's type (lists become
    tuples, whole numbers of float fields floats, a style its RenderStyle.to_dict, so that one
    config has one cache key); `where` names the source in the one-line error."""
    defaults = {f.name: getattr(cls(), f.name) for f in fields(cls)}
    out = dict(defaults)
    for key, value in changes.items():
        if key not in defaults:
            raise UvlmError(f"{where}: {cls.__name__} has no field {key!r}; fields: {', '.join(defaults)}")
        kind = type(defaults[key])
        if kind is tuple:
            ok = isinstance(value, list) and value and all(type(v) is int and v >= 1 for v in value)
        elif kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        elif kind is int:
            ok = type(value) is int and value >= (0 if key == "seed" else 1)
        else:
            ok = isinstance(value, kind)
        if not ok:
            hint = " (write exponents with a dot: 1.0e-3)" if isinstance(value, str) and "e" in value else ""
            raise UvlmError(f"{where}: {key} must be like {defaults[key]!r}, got {value!r}{hint}")
        out[key] = tuple(value) if kind is tuple else float(value) if kind is float else value
    if "style" in changes:
        try:
            out["style"] = RenderStyle(**changes["style"]).to_dict()  # a bad style stops here, not minutes later
        except TypeError as e:
            raise UvlmError(f"{where}: bad style {changes['style']!r} ({e})") from None
    cfg = cls(**out)
    size = cfg.style["size"]
    if getattr(cfg, "patch_size", 1) > size or size % getattr(cfg, "patch_size", 1):
        raise UvlmError(f"{where}: patch_size {cfg.patch_size} must divide the image size {size}")
    if size % 2 ** (len(getattr(cfg, "channel_multiplier", (1,))) - 1):
        raise UvlmError(f"{where}: {len(cfg.channel_multiplier) - 1} halvings do not divide the image size {size}")
    return cfg



def folder_pool(root: Path, limit: int | None = None) -> tuple[torch.Tensor, list[dict]]:
    """A dataset folder's distinct images (uint8; the first `limit` by name) and each one's
    attributes (CelebA's stand-ins and judge train on the user's images, not on renders)."""
    from uvlm.data.folder import read_records
    from uvlm.vision.space import load_images

    first: dict[str, dict] = {}
    for r in read_records(root):
        first.setdefault(r["image"], r["attributes"])
    names = sorted(first)[:limit]
    return load_images([Path(root) / n for n in names]), [first[n] for n in names]


def _face_key(train_root: Path, test_root: Path) -> dict:
    from uvlm.vision.cache import dataset_key

    return {"train": dataset_key(train_root), "test": dataset_key(test_root)}


def _face_pools(train_root: Path, test_root: Path, cfg) -> Pools:
    """Train and held-out images of two CelebA folders, as many as the config's pools (a paper-size
    folder at 224 px would not fit in memory whole): read only when a stand-in is built."""
    return (*folder_pool(train_root, cfg.pool), *folder_pool(test_root, cfg.held_out))


def _folder_size(root: Path) -> int:
    from uvlm.data.folder import read_manifest

    return int(read_manifest(root)["config"]["size"])


def face_vq(train_root: Path, test_root: Path, cfg: VQPretrainConfig | None = None,
            progress: Progress | None = None) -> tuple[VQSpace, dict]:
    """The VQ stand-in pretrained on a CelebA dataset folder's images (its quality judged on a
    held-out folder's), cached by the folders' keys like the SmartWatch one."""
    cfg = replace(cfg or VQPretrainConfig(), style={"size": _folder_size(train_root)})  # faces: no render style
    entry, meta = cached_artifact("pretrained-vq", {**cache_key(cfg), **_face_key(train_root, test_root)},
                                  lambda d: train_vq(cfg, d, progress, _face_pools(train_root, test_root, cfg)))
    return VQSpace.load(entry / "vq.pt"), meta["info"]


def face_siglip(train_root: Path, test_root: Path, cfg: SiglipPretrainConfig | None = None,
                progress: Progress | None = None) -> tuple[SiglipSpace, dict]:
    """The SigLIP stand-in pretrained on a CelebA dataset folder's images and captions (as face_vq)."""
    cfg = replace(cfg or SiglipPretrainConfig(), style={"size": _folder_size(train_root)})
    entry, meta = cached_artifact("pretrained-siglip", {**cache_key(cfg), **_face_key(train_root, test_root)},
                                  lambda d: train_siglip(cfg, d, progress, _face_pools(train_root, test_root, cfg)))
    return SiglipSpace.load(str(entry)), meta["info"]


def face_standins(train_root: Path, test_root: Path, vq: VQPretrainConfig | None = None,
                  siglip: SiglipPretrainConfig | None = None,
                  progress: Progress | None = None) -> tuple[VQSpace, dict, SiglipSpace, dict]:
    """Both CelebA stand-ins and their quality (face_vq and face_siglip)."""
    return (*face_vq(train_root, test_root, vq, progress), *face_siglip(train_root, test_root, siglip, progress))
