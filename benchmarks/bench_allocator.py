"""glibc's malloc against jemalloc on a long CPU run, in the same run: the same `uvlm train`
(a committed cpu2-smol pilot run's config: SmolLM2-135M + LoRA, 16 records a step, both
threads) for --steps steps under each allocator, one after the other, after a one-step warm-up
that builds the data and features both then read. Per allocator: the median seconds of a step
in the first and the last quarter of the steps (the step after a checkpoint left out), and the
process's anonymous resident memory (RssAnon, sampled every second): its median and peak.
The two runs' weights are compared byte for byte: the allocator may change no number.

A suite's runs preload jemalloc where it is installed (uvlm.suites.children.child_environment);
this benchmark says what that buys. Without jemalloc (Debian: libjemalloc2) it records so and
measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, markdown_table, record

from uvlm.suites import children

CONFIG = "results-cpu2-smol/configs/VQ_u-s1-20394777.yaml"


def train(config: Path, out: Path, epochs: float, env: dict) -> list[int]:
    """Run `uvlm train` for `epochs` epochs; return its RssAnon samples in KiB."""
    cmd = [sys.executable, "-m", "uvlm.cli", "train", "--config", str(config), "--out", str(out),
           "--set", f"train.epochs={epochs}", "--set", "train.eval_points=0"]
    out.mkdir(parents=True)
    log = open(out.parent / f"{out.name}.log", "w+")  # noqa: SIM115 (read back after the run)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    rss = []
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss += [int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:")]
        except OSError:
            pass
        time.sleep(1)
    log.seek(0)
    if proc.returncode != 0:
        raise SystemExit(log.read()[-2000:])
    return rss


def step_seconds(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["seconds"] for r in rows if r["event"] == "train"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=CONFIG, help="a run config (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=60, help="steps under each allocator (default: %(default)s)")
    args = parser.parse_args()
    if args.steps < 8:
        parser.error("--steps must be at least 8 (two windows of a quarter of the steps each)")
    command = "python benchmarks/bench_allocator.py" + (f" --steps {args.steps}" if args.steps != 60 else "") + \
        (f" --config {args.config}" if args.config != CONFIG else "")
    library = children.jemalloc()
    if library is None:
        record("bench_allocator", command, "jemalloc is not installed on this machine: nothing measured.")
        return
    config = ROOT / args.config
    base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train(config, tmp / "warm-up", 1e-9, base)  # one step
        records = json.loads((tmp / "warm-up" / "final.json").read_text())["train_records"]
        run = yaml.safe_load((tmp / "warm-up" / "config.yaml").read_text())["train"]
        batch, every = run.get("global_batch") or run["batch_size"], run["checkpoint_every"]
        epochs = (args.steps * batch - 0.5) / records  # exactly --steps steps, the last one whole
        rss, seconds = {}, {}
        for name, env in (("glibc", base), ("jemalloc", {**base, "LD_PRELOAD": library})):
            rss[name] = train(config, tmp / name, epochs, env)
            seconds[name] = step_seconds(tmp / name)
        weights = {name: {p.relative_to(tmp / name): p.read_bytes() for p in (tmp / name / "weights").rglob("*")
                          if p.is_file()} for name in seconds}
    same = weights["glibc"] == weights["jemalloc"]
    quarter = max(1, args.steps // 4)
    early = range(2, 2 + quarter)  # step 1 pays for the first batches' allocations
    late = range(args.steps - quarter + 1, args.steps + 1)

    def median(name: str, steps: range) -> float:
        # a step right after a checkpoint carries its save
        return statistics.median(seconds[name][s] for s in steps if s in seconds[name] and s % every != 1)

    rows = []
    for name in ("glibc", "jemalloc"):
        rows.append([name, f"{median(name, early):.2f}", f"{median(name, late):.2f}",
                     f"{statistics.median(rss[name]) / 2**20:.2f}", f"{max(rss[name]) / 2**20:.2f}"])
    rows.append(["glibc / jemalloc", f"{median('glibc', early) / median('jemalloc', early):.2f}",
                 f"{median('glibc', late) / median('jemalloc', late):.2f}",
                 f"{statistics.median(rss['glibc']) / statistics.median(rss['jemalloc']):.2f}",
                 f"{max(rss['glibc']) / max(rss['jemalloc']):.2f}"])
    body = markdown_table(["allocator", f"s/step, steps 2-{1 + quarter}",
                           f"s/step, steps {late.start}-{late.stop - 1}", "RssAnon median GiB",
                           "RssAnon peak GiB"], rows)
    body += (f"\n\n`{args.config}` for {args.steps} steps under each allocator, one after the other ({library} "
             f"preloaded for jemalloc). Weights the same bytes under both: {'yes' if same else 'NO'}.")
    record("bench_allocator", command, body)
    if not same:
        raise SystemExit("the allocator changed the weights")


if __name__ == "__main__":
    main()
