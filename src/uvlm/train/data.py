"""Training data: datasets located or built, records tokenised once, features from the cache.

Understanding inputs and generation targets are the frozen encoders' cached outputs, indexed
by the image each record shows. Only a run that trains its encoder (`train.train_encoder`)
reads pixels: each batch loads its records' images from the dataset folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uvlm.data.folder import build_dataset, build_folder, read_manifest, read_records
from uvlm.data.mixture import MixtureConfig, RecordCounts
from uvlm.data.smartwatch import CPU_STYLE
from uvlm.errors import UvlmError
from uvlm.model.names import Architecture
from uvlm.model.prompt import GENERATE, IGNORE, UNDERSTAND, Encoded, PromptEncoder
from uvlm.model.unified import Batch, predicting_positions
from uvlm.vision.cache import cache_root, cached_features, config_hash, dataset_images
from uvlm.vision.space import load_images

TASKS_OF = {"understanding": ("vqa", "caption"), "generation": ("generation",),
            "both": ("vqa", "caption", "generation")}


def dataset_config(spec: dict, role: str = "train") -> RecordCounts:
    """The dataset config a data.train/test mapping describes: a SmartWatch mixture, or with
    `domain: celeba` (and `celeba: PATH`, the user's copy) a CelebA one (uvlm.data.faces)."""
    if not isinstance(spec, dict):
        raise UvlmError(f"bad config: data.{role} must be a dataset folder or a mixture mapping")
    try:
        if spec.get("domain") == "celeba":
            from uvlm.data.faces import FaceMixtureConfig

            return FaceMixtureConfig.from_dict({k: v for k, v in spec.items() if k != "celeba"})
        return MixtureConfig.from_dict({**CPU_STYLE, **{k: v for k, v in spec.items() if k != "domain"}})
    except TypeError as e:
        raise UvlmError(f"bad config: data.{role}: {e}") from None


def resolve_dataset(spec, role: str) -> Path:
    """A dataset folder: the path given, or the mixture described, built in the cache."""
    if isinstance(spec, str | Path):
        path = Path(spec)
        read_manifest(path)  # a clear error when missing or incomplete
        return path
    cfg = dataset_config(spec, role)
    if spec.get("domain") == "celeba":
        from uvlm.data.celeba import read_celeba
        from uvlm.data.faces import Faces

        source = Path(spec["celeba"]).resolve()
        path = cache_root() / "datasets" / config_hash({**cfg.to_dict(), "celeba": str(source)})
        build_folder(Faces.of(cfg, read_celeba(source)), path, workers=1, verify=True)
        return path
    path = cache_root() / "datasets" / config_hash(cfg.to_dict())
    build_dataset(cfg, path, workers=1, verify=True)  # ours to repair: a damaged image is rendered again
    return path


def is_celeba(spec, role: str = "train") -> bool:
    """Whether a data.train/test entry names a CelebA dataset (a mapping, or a folder `uvlm data
    celeba` built)."""
    if isinstance(spec, dict):
        return spec.get("domain") == "celeba"
    if not isinstance(spec, str | Path):
        raise UvlmError(f"bad config: data.{role} must be a dataset folder or a mixture mapping")
    return read_manifest(Path(spec))["config"].get("domain") == "celeba"


def dataset_domain(spec) -> str:
    """smartwatch, celeba or llava: what a data.train entry holds (a described mixture, or a folder)."""
    if isinstance(spec, str | Path) and read_manifest(Path(spec)).get("dataset") == "llava":
        return "llava"
    return "celeba" if is_celeba(spec) else "smartwatch"


def face_folders(train_spec, test_spec) -> tuple[Path, Path] | None:
    """The (train, test) folders of a CelebA run, built if described; None for SmartWatch. The
    stand-ins and the judge of a CelebA run are trained on these folders' faces."""
    celeba = is_celeba(train_spec, "train"), is_celeba(test_spec, "test")
    if not any(celeba):
        return None
    if not all(celeba):
        raise UvlmError("data.train and data.test must both be CelebA or both SmartWatch")
    return resolve_dataset(train_spec, "train"), resolve_dataset(test_spec, "test")


@dataclass
class RecordSet:
    """Tokenised records of one dataset and the vision tensors they index."""

    encoded: list[Encoded]
    image_rows: np.ndarray  # per record, its image's row in the feature tensors
    records: list[dict]
    und_features: torch.Tensor | None  # (n_images, N, D_in)
    gen_targets: torch.Tensor | None  # (n_images, N) ids or (n_images, N, D_out)
    image_files: list[Path] | None = None  # per image row, its file: batches carry pixels (a trained encoder)
    und_tokens: int = 0  # the input encoder's tokens per image (what a trained encoder gives)

    def __len__(self) -> int:
        return len(self.encoded)


def load_record_set(root: Path, arch: Architecture, prompts: PromptEncoder, in_space, out_space,
                    tasks: tuple[str, ...] | None = None, limit: int | None = None,
                    feature_dtype: str = "float32", max_tokens: int | None = None,
                    pixels: bool = False) -> RecordSet:
    """The records of `tasks` (the model's own by default; `limit`: an equal share of each),
    tokenised (each cut at `max_tokens`, if given), with the memory-mapped features they index
    (one cache entry when both roles use the same space, as SigLIP-SigLIP and VQ-VQ do).
    `pixels`: batches carry the images instead of the input encoder's features, for a model
    that trains its encoder."""
    tasks = tasks or TASKS_OF[arch.tasks]
    everything = read_records(root)
    per_task = None if limit is None else max(1, limit // len(tasks))  # an equal share of each task
    records = [r for t in tasks for r in [r for r in everything if r["task"] == t][:per_task]]
    if not records:
        raise UvlmError(f"{root} holds no {'/'.join(tasks)} records for {arch.name}")
    names = dataset_images(root)
    row = {name: i for i, name in enumerate(names)}
    cached = {id(space): cached_features(space, root, dtype=feature_dtype)
              for space in (None if pixels else in_space, out_space) if space is not None}
    und = cached[id(in_space)]["features"] if in_space is not None and not pixels else None
    gen = cached[id(out_space)]["targets"] if out_space is not None else None
    encoded = [prompts.encode(r["conversations"]) for r in records]
    check_vocabulary(encoded, records, prompts.tokenizer)
    encoded = [e.cut(max_tokens) for e in encoded]
    # a text-only record (LLaVA's instruction data has them) indexes no image: -1, never read
    return RecordSet(encoded, np.array([row[r["image"]] if r.get("image") else -1 for r in records]), records,
                     und, gen, [root / name for name in names] if pixels else None,
                     in_space.n_tokens if in_space is not None else 0)


def check_vocabulary(encoded: list[Encoded], records: list[dict], tokenizer) -> None:
    """Refuse records whose words the tokenizer does not know: a model cannot learn an answer
    that reaches it as <unk> (a tokenizer built for another dataset's phrases, say)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    for e, r in zip(encoded, records, strict=True):
        if (e.input_ids == unk).any():
            text = " / ".join(turn["value"] for turn in r["conversations"])
            raise UvlmError(f"the run's tokenizer has no token for words of record {r['id']} ({text[:80]!r}); "
                            "train a tokenizer that covers the dataset's text, or use a pretrained LLM's")


def micro_batches(data: RecordSet, indices: list[int], size: int, count: int) -> list[list[int]]:
    """`indices` cut into `count` micro-batches of at most `size` (empty ones at the end). Where
    there are several, they are grouped by length, longest first, so that each pads little and
    the largest comes first (an out-of-memory shows at once). A step's loss is a sum over all of
    its records, so grouping changes nothing but float rounding; a step in one micro-batch keeps
    the stream's order (every cpu-scale run: its results stay bit for bit)."""
    if count > 1:
        indices = sorted(indices, key=lambda i: -len(data.encoded[i]))
    return [indices[i:i + size] for i in range(0, count * size, size)]


def padding_share(data: RecordSet, batches: list[list[int]]) -> float:
    """The share of a step's token positions that are padding, over its micro-batches."""
    used = sum(len(data.encoded[i]) for b in batches for i in b)
    padded = sum(len(b) * max(len(data.encoded[i]) for i in b) for b in batches if b)
    return 1 - used / padded if padded else 0.0


def collate(data: RecordSet, indices: list[int], pad_id: int) -> Batch:
    """Right-padded batch; vision inputs packed in slot order."""
    items = [data.encoded[i] for i in indices]
    length = max(len(e) for e in items)
    b = len(items)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    labels = torch.full((b, length), IGNORE, dtype=torch.long)
    kinds = torch.zeros((b, length), dtype=torch.long)
    mask = torch.zeros((b, length), dtype=torch.long)
    und, gen, shown = [], [], []
    for k, (i, e) in enumerate(zip(indices, items, strict=True)):
        n = len(e)
        ids[k, :n] = torch.from_numpy(e.input_ids)
        labels[k, :n] = torch.from_numpy(e.labels)
        kinds[k, :n] = torch.from_numpy(e.kinds.astype(np.int64))
        mask[k, :n] = 1
        image = data.image_rows[i]
        # an image's slots in order (a record cut at max_tokens keeps the first ones of its last image)
        if n_und := int((e.kinds == UNDERSTAND).sum()):
            if data.image_files is not None:
                shown.append((data.image_files[image], n_und))
            else:
                und.append(data.und_features[image][:n_und])
        if n_gen := int((e.kinds == GENERATE).sum()):
            gen.append(data.gen_targets[image][:n_gen])
    scored, slots = predicting_positions(labels, kinds)
    images = keep = None
    if shown:
        images = load_images([path for path, _ in shown])
        keep = torch.arange(data.und_tokens)[None, :] < torch.tensor([count for _, count in shown])[:, None]
    return Batch(ids, mask, labels, kinds, torch.cat(und) if und else None, torch.cat(gen) if gen else None,
                 scored, slots, images, keep)
