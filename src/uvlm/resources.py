"""What a request needs against what the machine has, checked before anything is written.

A dataset of a billion images, a 100,000-pixel canvas or a suite of a hundred million seeds
would fill the disk or bring the out-of-memory killer down on the whole machine; each is
refused up front with one line saying what it needs and what there is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from uvlm.errors import UvlmError

GIB = 2**30


def available_memory() -> int:
    """Bytes of memory the machine can still give (MemAvailable), or a large number if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 50


def free_disk(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or would: its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def need_memory(need: float, what: str, fix: str) -> None:
    have = available_memory()
    if need > have:
        raise UvlmError(f"{what} needs about {_gib(need)} of memory, this machine has {_gib(have)} free; {fix}")


def need_disk(path: Path, need: float, what: str, fix: str) -> None:
    have = free_disk(path)
    if need > have:
        raise UvlmError(f"{what} needs about {_gib(need)} of disk at {path}, there is {_gib(have)} free; {fix}")


def check_dataset(n_images: int, n_records: int, size: int, workers: int, out: Path) -> None:
    """A dataset build: its images and records on disk, a canvas per worker and the records in memory."""
    png = max(2_000, size * size * 3 // 4)  # our renders compress about 4:1 (64 px: about 2.5 KB)
    need_disk(out, n_images * png + n_records * 1_000, f"a dataset of {n_images:,} {size}-px images",
              "build fewer images (--images) or smaller ones (--size), or free disk")
    canvas = size * size * 3 * 8  # the image, its drawing buffers and the encoded copy
    need_memory(workers * canvas + n_records * 2_000 + n_images * 200,
                f"rendering {n_images:,} images of {size} px on {workers} workers",
                "use a smaller --size, fewer --images or fewer --workers")


def check_job_count(runs: int, what: str) -> None:
    """A suite of `runs` runs: each is a config in memory and a folder on disk."""
    need_memory(runs * 20_000, f"{what} ({runs:,} runs)", "use fewer --seeds or --rows")
    if runs > 1_000_000:
        raise UvlmError(f"{what} has {runs:,} runs, more than any machine can train; use fewer --seeds or --rows")
