"""Judges: read the attributes back from a generated image, to score what it shows.

The paper scores generation by FID only. A judge answers the five VQA questions about a
generated image; its answers are scored with the same rules as the model's VQA answers,
against the attributes the prompt asked for.
- `PixelJudge`: a small CNN trained on renders, for pixel outputs (decoded VQ ids).
- `EmbeddingJudge`: linear probes on SigLIP features of real renders, applied to generated
  SigLIP embeddings (which have no pixel decoder). Every token is scaled to unit length before
  the probe reads it, so the judge reads direction (content), never length: a head trained
  with 1 - cosine leaves its outputs' length free, and a probe on raw features judged a real
  feature scaled by 0.9 as a different weather.
The pixel judge's penultimate features also give a domain FID/KID that runs offline.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from uvlm.data.celeba import ATTRIBUTES as FACE_ATTRIBUTES
from uvlm.data.smartwatch import CPU_STYLE
from uvlm.device import PRETRAIN_THREADS, cpu_threads, placement
from uvlm.errors import UvlmError
from uvlm.eval.probe import answers_from_classes, attribute_labels, fit_probe, score_against
from uvlm.io import atomic_write_json
from uvlm.vision.cache import cached_artifact
from uvlm.vision.pretrain import _batches, _cosine_lr, folder_pool, render_pool
from uvlm.vision.space import VisionSpace

# Classes of each attribute head.
HEADS = {"hour": 12, "minute": 60, "second": 60, "weather": 3, "weather_pos": 4, "battery": 101,
         "battery_pos": 4}


class JudgeCNN(nn.Module):
    """Four strided conv stages, a 256-d penultimate layer, one linear head per attribute."""

    def __init__(self, size: int, width: int = 32, penultimate: int = 256, heads: dict[str, int] | None = None):
        super().__init__()
        self.size = size
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        grid = size // 8
        self.penultimate = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * grid * grid, penultimate),
                                         nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({k: nn.Linear(penultimate, n) for k, n in (heads or HEADS).items()})

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> penultimate features (B, 256)."""
        x = images.float() / 127.5 - 1
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return self.penultimate(self.features(x))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.embed(images)
        return {k: head(h) for k, head in self.heads.items()}


class PixelJudge:
    """A trained JudgeCNN: answers for pixel images and features for the domain FID."""

    def __init__(self, model: JudgeCNN):
        self.model = model.eval().requires_grad_(False)
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> PixelJudge:
        """Judge on `device` (images are moved there; answers and features come back on the CPU)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @classmethod
    def load(cls, folder: Path) -> PixelJudge:
        try:
            state = load_file(str(Path(folder) / "judge.safetensors"))
            size = int(state.pop("_size").item())
            with safe_open(str(Path(folder) / "judge.safetensors"), "pt") as f:
                heads = json.loads((f.metadata() or {}).get("heads", "null"))  # judges saved before: HEADS
        except Exception as e:  # any unreadable file is the same user problem
            raise UvlmError(f"judge weights in {folder} are missing or corrupt ({type(e).__name__}); "
                            "run `uvlm pretrain judge --rebuild`") from None
        model = JudgeCNN(size, heads=heads)
        model.load_state_dict(state)
        return cls(model)

    def save(self, folder: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        state["_size"] = torch.tensor(self.model.size)
        heads = {k: head.out_features for k, head in self.model.heads.items()}
        save_file(state, str(Path(folder) / "judge.safetensors"), metadata={"heads": json.dumps(heads)})

    @torch.no_grad()
    def classes(self, images: torch.Tensor, batch: int = 256) -> dict[str, np.ndarray]:
        outs: dict[str, list] = {k: [] for k in self.model.heads}
        for i in range(0, len(images), batch):
            for k, logits in self.model(images[i:i + batch].to(self.device)).items():
                outs[k].append(logits.argmax(-1).cpu())
        return {k: torch.cat(v).numpy() for k, v in outs.items()}

    def answers(self, images: torch.Tensor) -> list[dict[str, str]]:
        return answers_from_classes(self.classes(images))

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        return torch.cat([self.model.embed(images[i:i + batch].to(self.device)).float().cpu()
                          for i in range(0, len(images), batch)])


@dataclass(frozen=True)
class JudgeConfig:
    style: dict = field(default_factory=lambda: dict(CPU_STYLE))
    seed: int = 100  # a pool seed of its own: the judge never sees the encoders' renders
    pool: int = 20000
    held_out: int = 2000
    steps: int = 1200  # 99.996 total_acc on held-out renders at 1,500 steps; ~6 min on 2 cores
    batch: int = 64
    lr: float = 2e-3


def _fit(model: JudgeCNN, images: torch.Tensor, attrs: list[dict], cfg, device: torch.device,
         progress: Callable[[int, int, str], None] | None) -> JudgeCNN:
    """Train a judge's heads on images and their attributes (cfg: steps, batch, lr, seed):
    AdamW, cosine schedule, the heads' cross-entropies summed."""
    labels = {k: torch.from_numpy(v).to(device) for k, v in attribute_labels(attrs).items()}
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    for step, idx in enumerate(_batches(len(images), cfg.batch, cfg.steps, cfg.seed)):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, cfg.steps, cfg.lr, cfg.steps // 20)
        logits = model(images[idx].to(device))
        loss = sum(F.cross_entropy(logits[k], labels[k][idx.to(device)]) for k in model.heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress(step + 1, cfg.steps, f"loss {loss.item():.3f}")
    return model


@cpu_threads(PRETRAIN_THREADS)
def train_judge(cfg: JudgeConfig, out: Path, progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Train the pixel judge on this process's device (uvlm.device); save it to
    out/judge.safetensors; return its held-out scores."""
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    device = placement().device
    images, attrs = render_pool(cfg.pool, cfg.seed, cfg.style)
    model = _fit(JudgeCNN(cfg.style["size"]), images, attrs, cfg, device, progress)
    judge = PixelJudge(model).to(device)
    judge.save(out)
    held, held_attrs = render_pool(cfg.held_out, cfg.seed + 1, cfg.style, offset=cfg.pool)
    scores = score_against(judge.answers(held), held_attrs)
    return {"train_seconds": round(time.perf_counter() - start, 1), "held_out": scores,
            "n_held_out": cfg.held_out}


def pretrained_judge(cfg: JudgeConfig | None = None, progress=None,
                     rebuild: bool = False) -> tuple[PixelJudge, dict]:
    """The cached pixel judge for `cfg` (trained on first use) and its held-out scores."""
    cfg = cfg or JudgeConfig()
    entry, meta = cached_artifact("judge", asdict(cfg), lambda d: train_judge(cfg, d, progress), rebuild)
    return PixelJudge.load(entry), meta["info"]


@dataclass(frozen=True)
class FaceJudgeConfig:
    """The CelebA judge: the same CNN with one yes/no head per attribute, trained on the images
    of a CelebA dataset folder (uvlm data celeba, train split) and their attributes."""

    seed: int = 100
    pool: int = 20000  # training faces, at most (the SmartWatch judge's pool)
    held_out: int = 2000
    steps: int = 1200
    batch: int = 64
    lr: float = 2e-3


@cpu_threads(PRETRAIN_THREADS)
def train_face_judge(cfg: FaceJudgeConfig, train_root: Path, test_root: Path, out: Path,
                     progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Train the CelebA judge on `train_root`'s images, save it to `out`, return its accuracy on
    `test_root`'s images per attribute (CelebA's labels are noisy: read them per attribute)."""
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    device = placement().device
    images, attrs = folder_pool(train_root, cfg.pool)
    model = _fit(JudgeCNN(images.shape[-1], heads=dict.fromkeys(FACE_ATTRIBUTES, 2)), images, attrs, cfg, device,
                 progress)
    judge = PixelJudge(model).to(device)
    judge.save(out)
    held, held_attrs = folder_pool(test_root, cfg.held_out)
    return {"train_seconds": round(time.perf_counter() - start, 1), "n_train": len(images),
            "held_out": score_against(judge.answers(held), held_attrs), "n_held_out": len(held)}


def face_judge(train_root: Path, test_root: Path, cfg: FaceJudgeConfig | None = None,
               progress=None) -> tuple[PixelJudge, dict]:
    """The cached CelebA judge of a train dataset folder (trained on first use) and its scores."""
    from uvlm.vision.cache import dataset_key

    cfg = cfg or FaceJudgeConfig()
    key = {**asdict(cfg), "train": dataset_key(train_root), "test": dataset_key(test_root)}
    entry, meta = cached_artifact("face-judge", key, lambda d: train_face_judge(cfg, train_root, test_root, d,
                                                                                 progress))
    return PixelJudge.load(entry), meta["info"]


def unit_tokens(features: torch.Tensor | np.ndarray) -> np.ndarray:
    """(images, tokens, D) features with every token scaled to length 1, flattened per image."""
    x = np.asarray(features, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x.reshape(len(x), -1)


class EmbeddingJudge:
    """Attribute probes on unit-length SigLIP tokens of real renders, applied to generated
    embeddings: invariant to each token's length."""

    def __init__(self, probes: dict):
        self.probes = probes

    @classmethod
    def fit(cls, features: np.ndarray, attributes: list[dict], seed: int = 0) -> EmbeddingJudge:
        labels = attribute_labels(attributes)  # SmartWatch's probe targets, or CelebA's seven
        x = unit_tokens(features)
        return cls({k: fit_probe(x, y, seed) for k, y in labels.items()})

    def answers(self, embeddings: torch.Tensor | np.ndarray) -> list[dict[str, str]]:
        x = unit_tokens(embeddings)
        return answers_from_classes({k: p.predict(x) for k, p in self.probes.items()})


def _encoded(space: VisionSpace, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([space.encode(images[i:i + 128]) for i in range(0, len(images), 128)]).numpy()


def _cached_embedding_judge(config: dict, pools: Callable[[], tuple[np.ndarray, list[dict], np.ndarray, list[dict]]],
                            seed: int) -> tuple[EmbeddingJudge, dict]:
    """Fit (once, cached under `config`) probes on the train features of `pools()`, scored on its held-out ones."""
    def build(folder: Path) -> dict:
        x_train, attrs_train, x_held, attrs_held = pools()
        judge = EmbeddingJudge.fit(x_train, attrs_train, seed)
        (folder / "probes.pkl").write_bytes(pickle.dumps(judge.probes))
        scores = score_against(judge.answers(x_held), attrs_held)
        atomic_write_json(folder / "scores.json", scores)
        return {"held_out": scores, "n_held_out": len(x_held)}

    entry, meta = cached_artifact("embedding-judge", config, build)
    # Our own cache entry, verified by sha256 before this load.
    return EmbeddingJudge(pickle.loads((entry / "probes.pkl").read_bytes())), meta["info"]


def embedding_judge(space: VisionSpace, style: dict | None = None, n_train: int = 3000,
                    n_held_out: int = 500, seed: int = 200) -> tuple[EmbeddingJudge, dict]:
    """The cached embedding judge for a SigLIP space, fitted on pool renders, and its scores."""
    style = style or dict(CPU_STYLE)
    config = {"encoder": space.fingerprint, "style": style, "n_train": n_train,
              "n_held_out": n_held_out, "seed": seed, "tokens": "unit length"}

    def pools():
        images, attrs = render_pool(n_train + n_held_out, seed, style)
        x = _encoded(space, images)
        return x[:n_train], attrs[:n_train], x[n_train:], attrs[n_train:]

    return _cached_embedding_judge(config, pools, seed)


def face_embedding_judge(space: VisionSpace, train_root: Path, test_root: Path, n_train: int = 3000,
                         n_held_out: int = 500, seed: int = 200) -> tuple[EmbeddingJudge, dict]:
    """The embedding judge of a CelebA run: probes for the seven attributes fitted on the SigLIP
    features of (at most n_train of) its train folder's faces, scored on its test folder's."""
    from uvlm.vision.cache import dataset_key

    config = {"encoder": space.fingerprint, "train": dataset_key(train_root), "test": dataset_key(test_root),
              "n_train": n_train, "n_held_out": n_held_out, "seed": seed, "tokens": "unit length"}

    def pools():
        (train, attrs_train), (held, attrs_held) = folder_pool(train_root, n_train), folder_pool(test_root, n_held_out)
        return _encoded(space, train), attrs_train, _encoded(space, held), attrs_held

    return _cached_embedding_judge(config, pools, seed)


def output_judge(space: VisionSpace, style: dict | None = None, faces: tuple[Path, Path] | None = None):
    """The judge of generations in an output space, loaded (or trained and cached on first use): the
    pixel judge of the test renders' `style` for a discrete (VQ) space, probes on a SigLIP space;
    for a CelebA run (`faces`: its train and test folders), both are fitted on its faces."""
    if space.discrete:
        return (face_judge(*faces) if faces else pretrained_judge(JudgeConfig(style=style or dict(CPU_STYLE))))[0]
    return (face_embedding_judge(space, *faces) if faces else embedding_judge(space, style))[0]
