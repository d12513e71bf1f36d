"""Shared by the benchmarks: machine facts and the RESULTS.md section each one owns."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from uvlm.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
# UVLM_BENCH_RESULTS: write elsewhere (gpu_check.sh --dry-run keeps the committed file as it is)
RESULTS = Path(os.environ.get("UVLM_BENCH_RESULTS") or Path(__file__).with_name("RESULTS.md"))
HEADER = "# Benchmark results\n\nWritten by `make bench`; each section is the latest run of one benchmark.\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores, Python {platform.python_version()}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def record(name: str, command: str, body: str) -> None:
    """Replace this benchmark's section of RESULTS.md (others are kept) and print it."""
    section = (f"## {name}\n\n- date: {dt.date.today().isoformat()}\n- machine: {machine()}\n"
               f"- command: `{command}`\n\n{body.strip()}\n")
    print(section)
    old = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(old)
    new = pattern.sub(lambda _: section + "\n", old) if found else old.rstrip() + "\n\n" + section
    atomic_write_text(RESULTS, new.rstrip() + "\n")


def per_folder(name: str, folder: Path) -> str:
    """A results-reading benchmark's section name: one section per results folder, so the committed
    `results/` and a selection folder are recorded side by side."""
    return name if folder == Path("results") else f"{name}: {folder}"


def results_table_args(doc: str) -> tuple[argparse.Namespace, Path]:
    """The arguments of a benchmark that reads a results folder (default: the committed `results/`)
    and one of its tables (default A3), and the folder as its command line should name it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=ROOT / "results")
    parser.add_argument("--table", default="A3")
    args = parser.parse_args()
    folder = args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results
    return args, folder
