"""`make demo` on a fresh machine: a clean clone, a new .venv, an empty stand-in cache; its time.

Clones this repository's committed HEAD into a temporary folder (uncommitted changes are not
measured), runs `make demo` there with UVLM_CACHE pointing at an empty folder, stamps each of
the demo's steps, and records the wall time per step (target: 15 minutes in all, install included)
and what its models scored, beside the best constant answer, and Fig 7's probe beside chance.
About 15 minutes on 2 cores: not part of `make bench` (its name is not bench_*). Run it on an
otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import ROOT, markdown_table, record

NAME = "demo_time"
TARGET_MIN = 15.0
ATTRIBUTES = ("time_acc", "weather_acc", "position_acc", "battery_acc")
STEP_NAMES = {"install": "install (.venv, pip)", "1/4": "render the sample",
              "2/4": "load the shipped stand-in + judge", "3/4": "train + evaluate the runs, probe Fig 7's",
              "4/4": "draw images + write the report"}
STEPS = tuple(STEP_NAMES)  # the marks the demo prints, in order


def timed_demo(clone: Path) -> tuple[dict, float, int]:
    """Run `make demo` in `clone`; return the seconds each step took, the total and the exit code."""
    env = {**os.environ, "UVLM_CACHE": str(clone.parent / "cache")}
    env.pop("VIRTUAL_ENV", None)
    start = time.perf_counter()
    marks = {"install": 0.0}
    with (clone.parent / "demo.log").open("w") as log, \
            subprocess.Popen(["make", "demo"], cwd=clone, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            step = line[:3]
            if step in STEPS and step not in marks:
                marks[step] = time.perf_counter() - start
    code = proc.returncode
    total = time.perf_counter() - start
    # a step lasts until the next step that printed its mark (or the end)
    seen = [s for s in STEPS if s in marks]
    ends = [marks[s] for s in seen[1:]] + [total]
    seconds = {s: None for s in STEPS} | {s: end - marks[s] for s, end in zip(seen, ends, strict=True)}
    return seconds, total, code


def scores(results: Path) -> list[list[str]]:
    """Each demo row's VQA and judge totals as its report computes them, beside the best constant
    answer (for generation: the best image that ignores the prompt, as the report's bar)."""
    from uvlm.suites.results import Results, output_space

    res = Results(results)
    rows = []
    for table in res.tables():
        chance = res.chance(table)
        for label in res.labels(table):
            vqa = {c: res.vqa_scores(table, label, c) for c in ("total_acc", *ATTRIBUTES)}
            gen, space = res.gen_scores(table, label), output_space(label)
            bar = res.bar(table, label, "gen") if space else None
            rows.append([f"{table} {label}",
                         f"{vqa['total_acc'].mean():.1f} ({chance['constant']['total_acc']:.1f})"
                         if vqa["total_acc"] is not None else "-",
                         " / ".join(f"{vqa[c].mean():.1f}" for c in ATTRIBUTES) if vqa["total_acc"] is not None
                         else "-",
                         f"{gen.mean():.1f} ({bar:.1f})" if gen is not None and bar is not None else "-"])
    for label in res.labels("fig7"):
        probe = res.probe_scores("fig7", label)
        if probe is not None:
            rows.append([f"Fig 7 {label}: weather probe of the adapter output", f"{probe.mean():.1f} (chance 33.3)",
                         "-", "-"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone, cache and log (kept anyway "
                        "when the demo fails)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="uvlm-demo-time-"))
    clone = work / "uvlm"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                          check=True).stdout.strip()
    print(f"timing `make demo` at {head} in {clone} (log: {work / 'demo.log'})", flush=True)
    seconds, total, code = timed_demo(clone)
    steps = [[STEP_NAMES[s], f"{seconds[s] / 60:.1f}" if seconds[s] is not None else "-"] for s in STEPS]
    verdict = "met" if code == 0 and total / 60 <= TARGET_MIN else "NOT met"
    body = (f"`make demo` at commit {head} in a fresh clone (new .venv, empty UVLM_CACHE), exit code {code}: "
            f"**{total / 60:.1f} minutes** in all (target <= {TARGET_MIN:.0f}: {verdict}).\n\n"
            + markdown_table(["step", "minutes"], steps)
            + "\n\nIts runs (one seed, scored as in its report; in brackets the best constant answer, and for "
              "generation the best score of images that ignore the prompt):\n\n"
            + markdown_table(["run", "VQA total", "time / weather / position / battery", "judge (gen) total"],
                             [r for folder in sorted((clone / "demo").glob("results-*")) for r in scores(folder)]))
    record(NAME, "python benchmarks/demo_time.py", body)
    if code != 0:
        raise SystemExit(f"make demo exited {code}; its log: {work / 'demo.log'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
