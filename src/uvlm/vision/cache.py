"""Caches under $UVLM_CACHE (default ~/.cache/uvlm), keyed by a hash of what made them.

An entry is a folder written whole: built in a temporary folder, then renamed into place,
with `meta.json` listing the sha256 of every file. An entry whose files do not match its
meta (a partial copy, a flipped bit) is treated as absent and rebuilt.

Two kinds of entries: pretrained stand-ins (`cached_artifact`) and frozen-encoder features
of a dataset (`cached_features`), so training reads features, not pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from uvlm.data.folder import read_manifest, read_records
from uvlm.errors import UvlmError
from uvlm.vision.space import VisionSpace, file_digest, load_images


def cache_root() -> Path:
    return Path(os.environ.get("UVLM_CACHE", Path.home() / ".cache" / "uvlm"))


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _verified(entry: Path) -> dict | None:
    """The entry's meta when every listed file is present and intact, else None."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        for name, digest in meta["files"].items():
            if file_digest(entry / name) != digest:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_artifact(kind: str, config: dict, build: Callable[[Path], dict],
                    rebuild: bool = False) -> tuple[Path, dict]:
    """Folder of the artifact for `config`, built by `build(folder) -> info` when missing.

    Returns (folder, meta) where meta holds the config, build info and file digests.
    """
    entry = cache_root() / kind / config_hash(config)
    if not rebuild:
        meta = _verified(entry)
        if meta is not None:
            return entry, meta
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    try:
        info = build(tmp)
        files = {p.name: file_digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        meta = {"kind": kind, "config": config, "info": info, "files": files}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        if not rebuild and (done := _verified(entry)) is not None:
            # Another process built the same entry meanwhile (suites run jobs side by side): use it.
            shutil.rmtree(tmp)
            return entry, done
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (done := _verified(entry)) is not None:  # lost a race to an identical build
            return entry, done
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry, meta


def dataset_key(root: Path) -> str:
    """What a dataset's features depend on: its records and its images."""
    m = read_manifest(root)
    return hashlib.sha256((m["records_sha256"] + m["images_sha256"]).encode()).hexdigest()[:16]


def dataset_images(root: Path) -> list[str]:
    """The distinct image files of a dataset, in index order."""
    return sorted({r["image"] for r in read_records(root)})


def cached_features(space: VisionSpace, root: Path, batch_size: int = 64,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Frozen-encoder outputs for every image of a dataset, computed once.

    Returns {"features": (n, N, D), "targets": (n, N) ids or (n, N, D)} in the order of
    `dataset_images(root)`. Keyed by the encoder's fingerprint and the dataset's hash.
    """
    root = Path(root)
    names = dataset_images(root)
    config = {"encoder": space.fingerprint, "dataset": dataset_key(root), "n": len(names)}

    def build(folder: Path) -> dict:
        feats, targets = [], []
        for start in range(0, len(names), batch_size):
            images = load_images([root / n for n in names[start:start + batch_size]])
            f, t = space.encode_with_targets(images)
            feats.append(f)
            targets.append(t)
            if progress:
                progress(min(start + batch_size, len(names)), len(names))
        tensors = {"features": torch.cat(feats).contiguous()}
        if space.discrete:
            tensors["targets"] = torch.cat(targets).contiguous()
        save_file(tensors, str(folder / "features.safetensors"))
        return {"images": len(names)}

    entry, _ = cached_artifact("features", config, build)
    try:
        tensors = load_file(str(entry / "features.safetensors"))
    except Exception:  # a file that verified but will not parse: rebuild once
        entry, _ = cached_artifact("features", config, build, rebuild=True)
        tensors = load_file(str(entry / "features.safetensors"))
    if "targets" not in tensors:
        tensors["targets"] = tensors["features"]
    if tensors["features"].shape[0] != len(names):
        raise UvlmError(f"feature cache {entry} holds {tensors['features'].shape[0]} images, "
                        f"expected {len(names)}; delete it")
    return tensors
