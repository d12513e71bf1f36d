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
from uvlm.suites.presets import MEASURED_SECONDS_PER_RECORD, celeba_data, row_config
from uvlm.suites.spec import CELEBA_SUITES, expand
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


def suite_costs(ratio: float) -> str:
    """The CelebA halves' runs and one-core hours at 3 seeds, per from-scratch cpu preset: each run's training
    records at the preset's measured SmartWatch seconds per record (evaluation included), divided
    by the CelebA/SmartWatch speed ratio just measured."""
    rows = []
    # the ratio is measured on the cpu preset's tiny LLM: it carries over to cpu2's, not to SmolLM2's
    for preset in ("cpu2", "cpu"):
        seconds = MEASURED_SECONDS_PER_RECORD[preset]
        for suite in CELEBA_SUITES:
            jobs = {j.identity: j for j in expand(suite, preset, 3, celeba="/your/celeba")}.values()
            records = sum(j.records for j in jobs)
            hours = records * seconds / ratio / 3600
            command = f"`uvlm suite run {suite} --dataset celeba --celeba PATH --preset {preset} --seeds 3`"
            rows.append([command, str(len(jobs)), f"{records / 1e6:.2f}M", f"{hours:.1f}", f"{hours / 2:.1f}"])
    return ("The CelebA halves at 3 seeds: runs, training records, and one-core hours at each cpu preset's measured "
            "SmartWatch seconds per record (`MEASURED_SECONDS_PER_RECORD`, evaluation included) divided by the "
            "ratio above; the stand-ins and judge pretrained once per copy on its faces come on top (not timed "
            "on faces; the SmartWatch ones take 11 to 21 minutes each). Suites share runs (mutual's rows are "
            "affine's and scaling's 0K points), so together they take less than the sum.\n\n"
            + markdown_table(["command", "runs", "records", "one-core h", "h on 2 cores"], rows))


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
    ratio = celeba / smartwatch
    rows = [["SmartWatch", f"{smartwatch:.1f}", "1.00"], ["CelebA (fake copy)", f"{celeba:.1f}", f"{ratio:.2f}"]]
    body = (f"cpu-preset VQ-VQ, {PER_TASK:,} records per task, one thread, the same VQ stand-in; records/s is the "
            "median after 5 steps.\n\n" + markdown_table(["data", "records/s", "ratio"], rows))
    body += "\n\n" + suite_costs(ratio)
    record("bench_celeba", "python benchmarks/bench_celeba.py", body)


if __name__ == "__main__":
    main()
