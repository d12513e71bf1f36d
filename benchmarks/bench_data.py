"""Rendering throughput: SmartWatch images per second, PNG writes included.

Sizes 64 (the CPU preset's style) and 224 (the paper's), 1 and 2 workers.
Target on 2 cores: >= 300 images/s at 224 px.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from common import markdown_table, record

from uvlm.data.folder import build_dataset
from uvlm.data.mixture import MixtureConfig

N_IMAGES = 2000


def rate(size: int, workers: int, detail: float, face: float) -> float:
    cfg = MixtureConfig(seed=0, n_vqa=N_IMAGES, n_caption=N_IMAGES, n_generation=N_IMAGES,
                        size=size, detail_scale=detail, face_radius=face)
    tmp = Path(tempfile.mkdtemp(prefix="uvlm-bench-"))
    try:
        start = time.perf_counter()
        build_dataset(cfg, tmp / "ds", workers)
        return N_IMAGES / (time.perf_counter() - start)
    finally:
        shutil.rmtree(tmp)


def main() -> None:
    rows = []
    for size, detail, face in ((64, 2.0, 0.32), (224, 1.0, 0.4)):
        one = rate(size, 1, detail, face)
        two = rate(size, 2, detail, face)
        rows.append([size, f"{one:.0f}", f"{two:.0f}", f"{two / one:.2f}"])
    body = (f"{N_IMAGES} images per cell, each with its VQA, caption and generation records "
            "(records.jsonl and manifest included). Target: >= 300 images/s at 224 px on 2 workers.\n\n"
            + markdown_table(["size (px)", "1 worker (img/s)", "2 workers (img/s)", "speed-up"], rows))
    record("bench_data", "python benchmarks/bench_data.py", body)


if __name__ == "__main__":
    main()
