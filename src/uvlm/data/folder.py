"""Dataset folders: build one (in parallel, resumable, atomic) and read one back.

Layout:
    images/NNNNNN.png   the images (SmartWatch renders, or CelebA crops: uvlm.data.faces)
    records.jsonl       one record a line (see `uvlm.data.mixture.make_record`)
    manifest.json       config, counts, package version, sha256 of records.jsonl and images;
                        written last, so its presence means the folder is complete

While a build runs, `.uvlm-build.json` holds its config: a re-run with the same config
resumes (images already written are kept), any other config is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from uvlm import __version__
from uvlm.data.mixture import TASKS, MixtureConfig, image_attributes, image_name, make_record
from uvlm.data.smartwatch import render
from uvlm.errors import UvlmError
from uvlm.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    die_with_parent,
    exclusive,
    holds_files,
    make_folder,
    sweep_temporaries,
)
from uvlm.resources import check_dataset

MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
BUILD_MARKER = ".uvlm-build.json"
_CHUNK = 128


def png_ok(data: bytes) -> bool:
    """Whether bytes are a whole, uncorrupted PNG (chunk CRCs and the image data are checked)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:  # any decoding failure is the same answer
        return False


@dataclass(frozen=True)
class SmartWatch:
    """The SmartWatch domain of a dataset folder: rendered images, mixture records."""

    cfg: MixtureConfig
    name: str = "smartwatch"

    def image_png(self, i: int) -> bytes:
        buf = io.BytesIO()
        render(image_attributes(self.cfg, i), self.cfg.style).save(buf, format="PNG")
        return buf.getvalue()

    def records(self) -> list[dict]:
        attrs = [image_attributes(self.cfg, i) for i in range(self.cfg.n_images)]
        return [make_record(self.cfg, task, j, attrs[self.cfg.image_index(task, j)],
                            image_name(self.cfg.image_index(task, j)))
                for task in TASKS for j in range(self.cfg.counts[task])]

    def extra(self) -> dict:
        """What the manifest records beyond the config (nothing here)."""
        return {}


class Domain(Protocol):
    """What a dataset folder is built from (SmartWatch here, CelebA in uvlm.data.faces): a config
    (`to_dict`, `counts`, `n_images`, `size`), image i's PNG bytes, the records, manifest extras.
    The same config gives the same bytes."""

    cfg: Any
    name: str

    def image_png(self, i: int) -> bytes: ...

    def records(self) -> list[dict]: ...

    def extra(self) -> dict: ...


_WORKER: dict = {}


def _set_worker_domain(domain: Domain) -> None:
    die_with_parent()
    _WORKER["domain"] = domain


def _image_chunk(args: tuple[Path, list[int], bool]) -> list[str]:
    """Make, write (atomically) and hash a chunk of images; existing whole files are kept, a
    truncated or corrupt one is made again (deterministic: the same bytes). `compare`: every
    image is made again and replaces a file that differs (one swapped for another image)."""
    root, indices, compare = args
    domain = _WORKER["domain"]
    digests = []
    for i in indices:
        path = root / image_name(i)
        data = path.read_bytes() if path.exists() else None
        made = domain.image_png(i) if compare or data is None or not png_ok(data) else data
        if made != data:
            data = made
            atomic_write_bytes(path, data, durable=False)
        digests.append(hashlib.sha256(data).hexdigest())
    return digests


def _check_folder(out: Path, cfg) -> bool:
    """True when the folder `out` already holds this exact dataset, complete. Raise if it holds
    another (or anything else)."""
    for marker in (MANIFEST, BUILD_MARKER):
        path = out / marker
        if path.exists():
            try:
                found = json.loads(path.read_text())["config"]
            except (ValueError, KeyError):
                raise UvlmError(f"{path} is unreadable; delete {out} and build again") from None
            if found != cfg.to_dict():
                diff = sorted(k for k in cfg.to_dict() if found.get(k) != cfg.to_dict()[k])
                raise UvlmError(f"{out} holds a different dataset (differs in {', '.join(diff)}); "
                                "choose another --out or delete it")
            return marker == MANIFEST
    if holds_files(out):
        raise UvlmError(f"{out} is not empty and holds no uvlm dataset; choose another --out")
    return False


def _records_digest(out: Path) -> str | None:
    """The manifest's records_sha256 recomputed from the file, or None if it is missing."""
    path = out / RECORDS
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _images_digest(out: Path, n: int) -> str | None:
    """The manifest's images_sha256 recomputed from the files, or None if one is missing."""
    digests = []
    for i in range(n):
        path = out / image_name(i)
        if not path.exists():
            return None
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def build_dataset(cfg: MixtureConfig, out: Path, workers: int = 1,
                  progress: Callable[[int, int], None] | None = None, verify: bool = False) -> dict:
    """Write the SmartWatch dataset of `cfg` to `out` and return its manifest (see build_folder)."""
    return build_folder(SmartWatch(cfg), out, workers, progress, verify)


def build_folder(domain: Domain, out: Path, workers: int = 1,
                 progress: Callable[[int, int], None] | None = None, verify: bool = False) -> dict:
    """Write the dataset of `domain` to `out` and return its manifest. Resumes a partial build.

    verify: on a complete folder, check every image against the manifest and make again
    (the same bytes) any that is missing, truncated or corrupt."""
    if workers < 1:
        raise UvlmError(f"--workers {workers} must be >= 1")
    out, cfg = Path(out), domain.cfg
    check_dataset(cfg.n_images, sum(cfg.counts.values()), cfg.size, workers, out)
    make_folder(out, "dataset")
    # One builder at a time; another (a suite's job side by side) waits, then finds it built.
    # The folder is judged only under the lock: a builder that ends writes its manifest, then
    # removes its marker, and a look without the lock could miss both and refuse the folder.
    with exclusive(out, "dataset build", wait=True):
        fresh = not holds_files(out)
        # judged before anything in it is touched: a folder not ours is refused as it stands
        manifest = read_manifest(out) if _check_folder(out, cfg) else None
        if manifest and (not verify or (_records_digest(out) == manifest["records_sha256"]
                                        and _images_digest(out, cfg.n_images) == manifest["images_sha256"])):
            return manifest
        sweep_temporaries(out)
        if manifest:
            # A repair: every image made again and compared, the manifest written again. The marker
            # goes first and says so, so that a repair killed mid-way resumes as one.
            _write_marker(out, cfg, repair=True)
            (out / MANIFEST).unlink()
            return _build(domain, out, workers, progress, compare=True)
        try:
            return _build(domain, out, workers, progress, compare=_repairing(out))
        except UvlmError:
            if fresh:  # bad input (a damaged source image) found: leave no half-built folder to refuse the fix
                for path in sorted(out.iterdir(), key=lambda p: p.name == BUILD_MARKER):  # the marker last
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            raise


def _write_marker(out: Path, cfg, repair: bool) -> None:
    atomic_write_json(out / BUILD_MARKER, {"config": cfg.to_dict(), **({"repair": True} if repair else {})})


def _repairing(out: Path) -> bool:
    """Whether the build `out` holds unfinished is a repair (see build_folder)."""
    path = out / BUILD_MARKER
    return path.exists() and json.loads(path.read_text()).get("repair", False)


def _build(domain: Domain, out: Path, workers: int, progress: Callable[[int, int], None] | None,
           compare: bool = False) -> dict:
    """Make the images that are missing (with `compare`, every image, replacing any that differs:
    a repair), then write the records and the manifest (last)."""
    cfg = domain.cfg
    # The marker before anything else: a build killed at any moment leaves a folder a rerun resumes.
    _write_marker(out, cfg, compare)
    (out / "images").mkdir(parents=True, exist_ok=True)

    n = cfg.n_images
    jobs = [(out, list(range(s, min(s + _CHUNK, n))), compare) for s in range(0, n, _CHUNK)]
    digests: list[str] = []
    done = 0
    results: Iterable[list[str]]
    if workers == 1:
        _WORKER["domain"] = domain
        results = map(_image_chunk, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_set_worker_domain, initargs=(domain,))
        results = pool.map(_image_chunk, jobs)
    try:
        for chunk_digests in results:  # map keeps chunk order, so digests stay in index order
            digests += chunk_digests
            done += len(chunk_digests)
            if progress:
                progress(done, n)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    records_text = "\n".join(json.dumps(r, sort_keys=True) for r in domain.records()) + "\n"
    atomic_write_text(out / RECORDS, records_text)

    manifest = {
        "dataset": domain.name,
        "config": cfg.to_dict(),
        "counts": {**cfg.counts, "images": n},
        "uvlm_version": __version__,
        "records_sha256": hashlib.sha256(records_text.encode()).hexdigest(),
        "images_sha256": hashlib.sha256("".join(digests).encode()).hexdigest(),
        **domain.extra(),
    }
    atomic_write_json(out / MANIFEST, manifest)
    (out / BUILD_MARKER).unlink(missing_ok=True)
    return manifest


def read_manifest(root: Path) -> dict:
    """The manifest of a complete dataset folder, or a clear error."""
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        hint = "the build was interrupted; re-run the same command" if (root / BUILD_MARKER).exists() \
            else "build it with `uvlm data smartwatch --out DIR ...`"
        raise UvlmError(f"no dataset at {root} (missing {MANIFEST}); {hint}")
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UvlmError(f"{path} is corrupt; delete {root} and build it again") from None


def read_records(root: Path, task: str | None = None) -> list[dict]:
    """All records of a dataset folder (optionally one task's), checked against the manifest."""
    root = Path(root)
    manifest = read_manifest(root)
    data = (root / RECORDS).read_bytes() if (root / RECORDS).exists() else b""
    if hashlib.sha256(data).hexdigest() != manifest["records_sha256"]:
        raise UvlmError(f"{root / RECORDS} does not match its manifest; delete {root} and rebuild")
    records = [json.loads(line) for line in data.decode().splitlines()]
    return [r for r in records if task is None or r["task"] == task]


def export_llava(root: Path, out: Path) -> int:
    """Write the single-JSON-list layout LLaVA-derived trainers read; return the record count."""
    if Path(out).resolve().is_relative_to(Path(root).resolve()):
        raise UvlmError(f"{out} is inside the dataset folder {root}; write the export elsewhere")
    records = read_records(root)
    image_root = Path(root).resolve()
    items = [{"id": r["id"], "task": r["task"], "image": str(image_root / r["image"]),
              "conversations": r["conversations"]} for r in records]
    atomic_write_text(Path(out), json.dumps(items, indent=1) + "\n")
    return len(items)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
