"""One run on 1 process vs 2 (torchrun, gloo on the CPU), same global batch; replicated (DDP)
and sharded (FSDP, train.sharding: fsdp).

The cpu-preset VQ-VQ with a global batch of 32 trains for a few dozen steps on one process
with one thread, then across two processes with one thread each (16 records each per step).
Samples/s comes from each run's metrics.jsonl (median after the first steps). The ratio says
what a second process buys on this machine, and what sharding costs on top (it gathers every
decoder layer twice a step and reduce-scatters gradients); on GPUs the same code runs one
process per GPU.
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
from common import markdown_table, record

from uvlm.suites.presets import row_config

STEPS = 30
GLOBAL = 32


def run(processes: int, tmp: Path, sharding: str = "none") -> tuple[float, list[float]]:
    cfg = row_config("cpu", "VQ-VQ")
    n = sum(cfg["data"]["train"][k] for k in ("n_vqa", "n_caption", "n_generation"))
    cfg["train"].update({"batch_size": GLOBAL // processes, "global_batch": GLOBAL, "epochs": STEPS * GLOBAL / n,
                         "eval_points": 0, "checkpoint_every": 10**9, "threads": 1, "sharding": sharding})
    config, out = tmp / f"p{processes}-{sharding}.yaml", tmp / f"p{processes}-{sharding}"
    config.write_text(yaml.safe_dump(cfg))
    uvlm = ["-m", "uvlm.cli", "train", "--config", str(config), "--out", str(out)]
    cmd = [sys.executable, *uvlm] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *uvlm]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [x["samples_per_s"] for x in lines if x["event"] == "train"][5:]
    return statistics.median(rates), [x["loss"] for x in lines if x["event"] == "train"]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="uvlm-bench-dist-"))
    try:
        one, loss_one = run(1, tmp)
        two, loss_two = run(2, tmp)
        fsdp, loss_fsdp = run(2, tmp, "fsdp")
    finally:
        shutil.rmtree(tmp)
    gap = max(abs(a - b) for other in (loss_two, loss_fsdp) for a, b in zip(loss_one, other, strict=True))
    rows = [[1, "none", f"{one:.1f}", f"{one:.1f}", "1.00"],
            [2, "none (DDP)", f"{two:.1f}", f"{two / 2:.1f}", f"{two / one:.2f}"],
            [2, "fsdp", f"{fsdp:.1f}", f"{fsdp / 2:.1f}", f"{fsdp / one:.2f}"]]
    body = (f"cpu-preset VQ-VQ, global batch {GLOBAL}, {STEPS} steps, one thread per process; samples/s is the "
            f"median after 5 steps. The runs' logged losses differ from the 1-process run's by at most {gap:.1e} "
            "(the same run).\n\n"
            + markdown_table(["processes", "sharding", "samples/s", "samples/s per process", "speed-up"], rows))
    record("bench_distributed", "python benchmarks/bench_distributed.py", body)


if __name__ == "__main__":
    main()
