"""Progress of long steps, shown to the person waiting, on stderr.

`progress(label, total)` returns a function `update(done, note="")` that prints a line with
the share done, the time so far and the time left when `every` seconds have passed since the
process's last progress line (from this step or an earlier one), and a last line when a step
that printed finishes. Short steps in a row print now and then; a long one is never silent,
on a terminal, in a log file or in a suite's child process alike. `quiet_libraries()` keeps
libraries' own bars and notes out of what a command (or its child process) prints.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Update = Callable[..., None]


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def rate(per_second: float) -> str:
    """A rate for a progress line: two significant digits under 10 (a pretrained LLM on a CPU
    trains 0.43 records/s, which a whole number shows as 0), whole numbers above."""
    return f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.2g}"


# When this process last printed a progress line: the `every` seconds count from any step's
# line, so a run of short steps (answering, then generating, then judging) is not silent either.
_last_line = [time.perf_counter()]


def progress(label: str, total: int, every: float = 30.0, stream=None) -> Update:
    """An `update(done, note="")` for a step of `total` units (see the module docstring)."""
    stream = stream or sys.stderr
    start = time.perf_counter()
    # what was done before the first update (a resumed run's steps) took no time here
    state = {"printed": False, "base": None}

    def update(done: int, note: str = "") -> None:
        now = time.perf_counter()
        if state["base"] is None:
            state["base"] = done
        finished = done >= total
        if now - _last_line[0] < every and not (finished and state["printed"]):
            return
        _last_line[0], state["printed"] = now, True
        elapsed = now - start
        speed = (done - state["base"]) / elapsed if elapsed > 0 else 0.0
        left = (total - done) / speed if speed > 0 else float("inf")
        eta = "done" if finished else (f"{_fmt(left)} left" if left != float("inf") else "")
        extra = f"  {note}" if note else ""
        times = f"{_fmt(elapsed)} so far" + (f", {eta}" if eta else "")  # no rate yet: no time left either
        print(f"{label}: {done}/{total} ({100 * done / max(total, 1):.0f}%, {times}){extra}", file=stream, flush=True)

    return update


def reporter(label: str, every: float = 30.0, stream=None) -> Callable[..., None]:
    """An `update(done, total, note="")` for steps whose total the caller learns later (the
    pretraining and training loops pass it each time)."""
    state: dict = {}

    def update(done: int, total: int, note: str = "") -> None:
        if state.get("total") != total:
            state["total"], state["update"] = total, progress(label, total, every, stream)
        state["update"](done, note)

    return update


@contextmanager
def shown(label: str) -> Iterator[Callable[..., None]]:
    """An `update(done, total, note="")` shown as a bar on a terminal and as progress lines
    anywhere else (a log file, a suite's child process)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield reporter(label)
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("", total=None)
        yield lambda done, total, note="": bar.update(task, completed=done, total=total, description=note)


def quiet_libraries() -> None:
    """What our commands print is ours: libraries' progress bars and advice meant for their own
    developers (transformers' config notes, checkpoint-shard bars) stay out of it."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
