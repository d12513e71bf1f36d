"""What a CelebA run costs against the SmartWatch run of the same row, measured in one go.

Trains the cpu-preset VQ-VQ twice at the same record counts (1,500 per task, one thread, the
preset's VQ stand-in for both, so only the data differs): on SmartWatch, and on CelebA from a
fake copy (uvlm.data.fake_celeba, 3,000 images). Records/s is the median after the first
steps; the ratio says how the CelebA affine suite's cost compares with SmartWatch's.

    python benchmarks/bench_celeba.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import ROOT, markdown_table, record

from uvlm.data.fake_celeba import write_fake_celeba
from uvlm.suites.presets import celeba_data, row_config
from uvlm.vision.cache import cached_artifact
from uvlm.vision.pretrain import VQPretrainConfig, cache_key, train_vq

PER_TASK = 1500


def run(tmp: Path, name: str, celeba: Path | None, vq: str) -> float:
    cfg = row_config("cpu", "VQ-VQ")
    if celeba:
        cfg["data"].update(celeba_data("cpu", str(celeba)))
    cfg["data"]["train"].update({"n_vqa": PER_TASK, "n_caption": PER_TASK, "n_generation": PER_TASK})
    cfg["data"]["test"].update({"n_vqa": 50, "n_generation": 20})
    cfg["data"]["vq"] = vq
    cfg["train"].update({"eval_points": 0, "threads": 1})
    config, out = tmp / f"{name}.yaml", tmp / name
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-m", "uvlm.cli", "train", "--config", str(config), "--out", str(out)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([x["samples_per_s"] for x in lines if x["event"] == "train"][5:])


def main() -> None:
    preset = VQPretrainConfig()  # the cpu preset's SmartWatch stand-in, by path: cpu-vq means the faces' on CelebA
    entry, _ = cached_artifact("pretrained-vq", cache_key(preset), lambda d: train_vq(preset, d))
    vq = f"vq:{entry / 'vq.pt'}"
    tmp = Path(tempfile.mkdtemp(prefix="uvlm-bench-celeba-"))
    try:
        smartwatch = run(tmp, "smartwatch", None, vq)
        celeba = run(tmp, "celeba", write_fake_celeba(tmp / "copy", "official", 2 * PER_TASK), vq)
    finally:
        shutil.rmtree(tmp)
    rows = [["SmartWatch", f"{smartwatch:.1f}", "1.00"], ["CelebA (fake copy)", f"{celeba:.1f}",
                                                          f"{celeba / smartwatch:.2f}"]]
    body = (f"cpu-preset VQ-VQ, {PER_TASK:,} records per task, one thread, the same VQ stand-in; records/s is the "
            "median after 5 steps.\n\n" + markdown_table(["data", "records/s", "ratio"], rows))
    record("bench_celeba", "python benchmarks/bench_celeba.py", body)


if __name__ == "__main__":
    main()
