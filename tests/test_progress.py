"""Progress lines: printed when the process has been quiet for `every` seconds, with time left."""

from __future__ import annotations

import io

import pytest

from uvlm import progress as progress_mod


def test_lines_come_when_the_process_was_quiet_whichever_step_runs(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(progress_mod, "_last_line", [now[0]])
    out = io.StringIO()
    answering = progress_mod.progress("answering 100 questions", 100, every=30, stream=out)
    for done in range(0, 101, 10):  # 20 s in all: too short for a line of its own
        answering(done)
        now[0] += 2
    assert out.getvalue() == ""
    generating = progress_mod.progress("generating 50 images", 50, every=30, stream=out)
    for done in range(0, 51, 5):  # 10 s after 22 s of quiet: a line once 30 s have passed, then the last
        generating(done, "batch")
        now[0] += 1
    lines = out.getvalue().splitlines()
    assert lines == ["generating 50 images: 40/50 (80%, 0:08 so far, 0:02 left)  batch",
                     "generating 50 images: 50/50 (100%, 0:10 so far, done)  batch"]


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The time progress lines read, at 0 and quiet since; the test moves it on."""
    now = [0.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(progress_mod, "_last_line", [0.0])
    return now


def test_reporter_learns_its_total_from_the_caller(clock):
    now, out = clock, io.StringIO()
    update = progress_mod.reporter("pretraining vq", every=30, stream=out)
    for step in range(1, 801):
        now[0] += 0.1
        update(step, 800, "loss 0.2")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0] == "pretraining vq: 300/800 (38%, 0:29 so far, 0:50 left)  loss 0.2"
    assert lines[-1] == "pretraining vq: 800/800 (100%, 1:19 so far, done)  loss 0.2"


def test_a_resumed_loop_times_what_is_left_by_its_own_steps(clock):
    """A run resumed at step 50 of 188: the steps before it took no time in this process, so the
    time left comes from the steps done since (20 s each), not from all 50."""
    now, out = clock, io.StringIO()
    update = progress_mod.reporter("train VQ_u", every=30, stream=out)
    for step in range(51, 56):
        update(step, 188)
        now[0] += 20
    lines = out.getvalue().splitlines()
    assert lines[-1] == "train VQ_u: 55/188 (29%, 1:20 so far, 44:20 left)", lines
    first = io.StringIO()  # a line before any step of its own: no rate, so no time left
    progress_mod.progress("train VQ_u", 188, every=0, stream=first)(51)
    assert first.getvalue() == "train VQ_u: 51/188 (27%, 0:00 so far)\n"


def test_a_rate_under_one_per_second_is_not_shown_as_zero():
    assert [progress_mod.rate(r) for r in (0.43, 1.94, 9.5, 55.3, 0.0)] == ["0.43", "1.9", "9.5", "55", "0"]
