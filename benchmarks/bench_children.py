"""What a suite's child processes cost to start: forked from the suite's fork server against a
fresh interpreter each (`UVLM_FORK_SERVER=0`), in the same run.

Two measures. (1) One child's start: `uvlm train` on a config that does not exist, run to its
refusal (exit 2), so the time is the start alone: the median of REPEATS each way, the fork
server warm. (2) A tiny suite end to end: `uvlm suite run mutual --rows VQ_u` (VQ_u and its
step-matched control, one seed, one worker: 2 runs, 4 children) with a tiny LLM and synthetic VQ
features (nothing to pretrain), each way in a fresh results folder, the suite command's whole
wall time, its own start and the server's imports included.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import markdown_table, record

from uvlm.suites import children

REPEATS = 5
TINY = ["model.hidden_size=32", "model.layers=1", "model.heads=2", "model.intermediate_size=64",
        "data.train.n_vqa=16", "data.train.n_caption=16", "data.train.n_generation=16", "data.test.n_vqa=12",
        "data.test.n_generation=6", "data.vq=synthetic:vq-tiny", "train.batch_size=4", "train.eval_points=0"]


def child_start(env: dict, tmp: Path) -> float:
    """Median seconds of a refused `uvlm train`, started as the suite starts its children."""
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        code, _ = children.run(children.uvlm_command("train", "--config", str(tmp / "missing.yaml"), "--out",
                                                     str(tmp / "never")), env, lambda line: None)
        seconds.append(time.perf_counter() - start)
        assert code == 2, code
    return statistics.median(seconds)


def tiny_suite(env: dict, out: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "uvlm.cli", "suite", "run", "mutual", "--rows", "VQ_u", "--seeds",
                           "1", "--workers", "1", *(a for s in TINY for a in ("--set", s)), "--out", str(out)],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = {**os.environ, "OMP_NUM_THREADS": "1", "UVLM_CACHE": str(tmp / "cache"),
                "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        fresh, forked = {**base, "UVLM_FORK_SERVER": "0"}, base
        children.start_fork_server()
        child_start(forked, tmp)  # the server's imports, once, before the timed starts
        start = {"fresh": child_start(fresh, tmp), "forked": child_start(forked, tmp)}
        tiny_suite(fresh, tmp / "warm-cache")  # dataset folders and feature cache, built once for both
        suite = {"fresh": tiny_suite(fresh, tmp / "fresh"), "forked": tiny_suite(forked, tmp / "forked")}
    rows = [["one child's start (a refused `uvlm train`)", f"{start['fresh']:.2f}", f"{start['forked']:.2f}",
             f"{start['fresh'] / start['forked']:.1f}"],
            ["tiny suite, 2 runs (4 children), whole command", f"{suite['fresh']:.1f}", f"{suite['forked']:.1f}",
             f"{suite['fresh'] / suite['forked']:.2f}"]]
    body = markdown_table(["measure", "fresh interpreter (s)", "fork server (s)", "ratio"], rows)
    body += (f"\n\nMedian of {REPEATS} starts each way, the server warm; the suite once each way after a warm-up "
             "suite built its data. The suite's time includes its own start and the server's imports.")
    record("bench_children", "python benchmarks/bench_children.py", body)


if __name__ == "__main__":
    main()
