"""Fault injection: each long command is killed with SIGKILL at random moments, then run again
the same way. What it leaves must be what an uninterrupted command leaves, byte for byte, with
no process of it still alive and no temporary file behind.

Commands: a dataset build (two rendering processes), training, evaluation, a suite (a parent
and its train/eval children) and a report. The kill times are drawn (seeded) across the span an
uninterrupted run of the same command takes, so they land in imports (of the commands a user
types), in the work and in the writing of results alike. Train and eval start as a suite starts
them: forked from its fork server (uvlm.suites.children), with nothing left to import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from uvlm.io import TEMPORARY_FILE, TEMPORARY_FOLDER, die_with_parent
from uvlm.suites.children import start, uvlm_command

from .helpers import toy_judge

TRIALS = 2
# Written by the clock, not by the work (timings, TensorBoard's time-named logs): left out of
# "the same bytes"; the losses in metrics.jsonl are compared on their own.
TIMED = {"final.json", "wall.json", "metrics.jsonl", "tb"}


# The commands a user types start as fresh processes (so a kill can land in their imports),
# with the user's environment (a suite's own children start from its fork server); a run's
# train and eval start as a suite starts them (uvlm.suites.children: from its fork server).
AS_A_SUITE_STARTS_THEM = {"train", "eval"}


class _Started:
    def __init__(self, args: list, env: dict):
        args = [str(a) for a in args]
        if args[0] in AS_A_SUITE_STARTS_THEM:
            self.child = start(uvlm_command(*args), env)
        else:  # in a session of its own, as a user's command: its pid names its process group
            self.child = subprocess.Popen(uvlm_command(*args), env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True, errors="replace",
                                          start_new_session=True, preexec_fn=die_with_parent)
        self.pid = self.child.pid
        self.err: list[str] = []
        self.reader = threading.Thread(target=lambda: self.err.append(self.child.stderr.read()))
        self.reader.start()

    def wait(self, timeout: float | None = None) -> int:
        self.reader.join(timeout)
        if self.reader.is_alive():
            raise subprocess.TimeoutExpired("uvlm", timeout)
        return self.child.wait()


def uvlm(args: list, env: dict) -> _Started:
    return _Started(args, env)


def finish(args: list, env: dict) -> float:
    """Run `uvlm ARGS` to its end; return how long it took."""
    start_time = time.perf_counter()
    proc = uvlm(args, env)
    code = proc.wait(timeout=600)
    assert code == 0, proc.err
    return time.perf_counter() - start_time


def _processes() -> dict[int, int]:
    """Every running process (zombies excepted): pid -> its process group."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(stat.parent.name)] = int(fields[2])
    return found


def alive(group: int) -> list[int]:
    """Processes of a process group that are still running."""
    return [pid for pid, pgid in _processes().items() if pgid == group]


def started_with(env: dict) -> list[int]:
    """Running processes that were started with `env` (their /proc environ names its cache): a
    command started by a test, its children and theirs, a fork server's runs included (they keep
    the server's environ), wherever they were reparented to, and none of the test's own."""
    marker = f"UVLM_CACHE={env['UVLM_CACHE']}\0".encode()
    found = []
    for pid in _processes():
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
    return found


def kill_after(args: list, env: dict, seconds: float) -> None:
    """Start `uvlm ARGS`, SIGKILL it (the command, not its children) after `seconds`, and check
    that its children, and theirs, end with it."""
    proc = uvlm(args, env)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it ended as its time came
            proc.child.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while (alive(proc.pid) or started_with(env)) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(proc.pid) and not started_with(env), f"{args[0]}: processes outlived the killed command"


def contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not TIMED & set(p.relative_to(folder).parts)}


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if TEMPORARY_FILE.match(p.name) or TEMPORARY_FOLDER.match(p.name)]


def killed_and_rerun(args: list, out: Path, whole: Path, seconds: float, env: dict, rng: random.Random,
                     prepare=None) -> None:
    """TRIALS times: a fresh `out` (made by `prepare`, if given), `uvlm ARGS` killed at a random
    moment, then run again; `out` must equal `whole`, with no temporaries."""
    for trial in range(TRIALS):
        shutil.rmtree(out, ignore_errors=True)
        if prepare:
            prepare(out)
        moment = rng.uniform(0.2, 1.0) * seconds
        kill_after(args, env, moment)
        finish(args, env)
        assert contents(out) == contents(whole), f"trial {trial}: killed at {moment:.1f} s of {seconds:.1f} s"
        assert not temporaries(out), temporaries(out)


def losses(run: Path) -> list:
    return [json.loads(line).get("loss") for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory, encoders):
    root = tmp_path_factory.mktemp("faults")
    cache = root / "cache"
    toy_judge(cache)
    env = {**os.environ, "UVLM_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    cfg = {"model": {"name": "VQ-VQ", "hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64},
           "data": {"train": {"n_vqa": 24, "n_caption": 24, "n_generation": 24},
                    "test": {"split": "test", "seed": 1, "n_vqa": 12, "n_caption": 0, "n_generation": 6,
                             "share_images": False}, **encoders},
           "train": {"batch_size": 4, "epochs": 2, "checkpoint_every": 3, "eval_points": 0}}
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    return root, env


def test_a_killed_dataset_build(world):
    root, env = world
    args = ["data", "smartwatch", "--images", "120", "--size", "64", "--workers", "2", "--out"]
    seconds = finish([*args, root / "data-whole"], env)
    killed_and_rerun([*args, root / "data"], root / "data", root / "data-whole", seconds, env, random.Random(1))


def test_a_killed_training_run_and_evaluation(world):
    root, env = world
    train = ["train", "--config", root / "run.yaml", "--resume", "--out"]
    seconds = finish([*train, root / "run-whole"], env)
    killed_and_rerun([*train, root / "run"], root / "run", root / "run-whole", seconds, env, random.Random(2))
    assert losses(root / "run") == losses(root / "run-whole")

    seconds = finish(["eval", root / "run-whole"], env)

    def trained(out: Path) -> None:
        shutil.copytree(root / "run-whole", out, ignore=shutil.ignore_patterns("eval"))

    killed_and_rerun(["eval", root / "run"], root / "run", root / "run-whole", seconds, env, random.Random(3),
                     prepare=trained)


def test_a_killed_suite_and_report(world, encoders):
    root, env = world
    tiny = ["model.hidden_size=32", "model.layers=1", "model.heads=2", "model.intermediate_size=64",
            "data.train.n_vqa=16", "data.train.n_caption=16", "data.train.n_generation=16",
            "data.test.n_vqa=12", "data.test.n_generation=6", f"data.vq={encoders['vq']}",
            f"data.siglip={encoders['siglip']}", "train.batch_size=4", "train.checkpoint_every=2",
            "train.eval_points=0"]
    suite = ["suite", "run", "mutual", "--rows", "VQ_u", "--seeds", "1", "--workers", "2",
             *(a for s in tiny for a in ("--set", s)), "--out"]
    seconds = finish([*suite, root / "results-whole"], env)
    killed_and_rerun([*suite, root / "results"], root / "results", root / "results-whole", seconds, env,
                     random.Random(4))

    report = ["report", root / "results-whole", "--out"]
    seconds = finish([*report, root / "report-whole"], env)
    killed_and_rerun([*report, root / "report"], root / "report", root / "report-whole", seconds, env,
                     random.Random(5))


def test_a_report_folder_a_kill_left_half_written_is_still_ours(tmp_path):
    """The marker goes first, so a folder with figures and no README yet is a report; a folder
    with only a killed write's temporary is empty; anything else is refused."""
    from uvlm.errors import UvlmError
    from uvlm.suites.report import REPORT_MARKER, _check_report_folder

    out = tmp_path / "report"
    out.mkdir()
    (out / f".{REPORT_MARKER}.abc.tmp").write_text("x")
    _check_report_folder(out)
    (out / "fig_a.png").write_bytes(b"png")
    with pytest.raises(UvlmError, match="not a uvlm report"):
        _check_report_folder(out)
    (out / REPORT_MARKER).write_text("written by `uvlm report`\n")
    _check_report_folder(out)


def test_what_killed_writers_leave_is_swept(tmp_path, monkeypatch):
    from uvlm.io import sweep_temporaries
    from uvlm.vision.cache import cached_artifact

    run = tmp_path / "run"
    for path in ("eval/.metrics.json.abc.tmp", ".config.yaml.x.tmp", ".weights-12/llm/model.safetensors",
                 "checkpoints/.staging-0000004/state.pt", "runs/other/.answers.jsonl.q.tmp", "keep.tmp",
                 "eval/metrics.json"):
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("x")
    assert sweep_temporaries(run, skip=("runs",)) == 4
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) == [
        "eval/metrics.json", "keep.tmp", "runs/other/.answers.jsonl.q.tmp"]

    # The cache: a build abandoned by a dead process goes; one whose builder lives stays.
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    entry, _ = cached_artifact("thing", {"a": 1}, lambda folder: (folder / "f").write_text("1") and {})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = __import__("socket").gethostname()
    abandoned = entry.parent / f".{entry.name}.{host}-{int(dead.stdout)}.xyz"
    running = entry.parent / f".{entry.name}.{host}-{os.getpid()}.xyz"
    for folder in (abandoned, running):
        folder.mkdir()
    cached_artifact("thing", {"a": 1}, lambda folder: {}, rebuild=True)
    assert not abandoned.exists() and running.exists()
