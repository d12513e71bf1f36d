"""A suite's child commands (`uvlm train`, `eval`, `probe`): each in a process of its own, so a
failed or killed run never takes the suite down, and each interrupted exactly once.

On a CPU-only job the children start from a fork server that imported uvlm, torch and
transformers once: a fresh Python pays about 4.5 s of CPU for those imports before its first
step, twice a run (train, then eval), which is most of a tiny run's time. The children still run
the same `uvlm` command line in the same environment (`python -m uvlm.cli ARGS` is what they
run otherwise). On a machine with a GPU, and under torchrun, children start as fresh processes:
no process may fork after CUDA has started, and their imports are small beside their training.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from uvlm.errors import UvlmError
from uvlm.io import die_with_parent

UVLM = [sys.executable, "-m", "uvlm.cli"]
# What the fork server imports, in order: first what ties its life to the suite's, then what
# every child imports before its first step (the modules of train, eval and probe).
PRELOAD = ["uvlm.suites.fork_server", "uvlm.cli", "uvlm.train.loop", "uvlm.eval.evaluate", "uvlm.suites.probe"]


def uvlm_command(*args: str) -> list[str]:
    """The command line of a `uvlm` child."""
    return [*UVLM, *args]


@dataclass
class Started:
    """A child command in flight: its pid, its stderr (and stdout, when asked for) as lines of
    text, `poll()` (None while it runs), `wait()`: its exit code, minus the signal that killed
    it, and `send_signal(sig)`, which never reaches another process that took its pid."""

    pid: int
    stderr: TextIO
    stdout: TextIO | None
    poll: Callable[[], int | None]
    wait: Callable[[], int]
    send_signal: Callable[[int], None]


def _popen(cmd: list[str], env: dict, stdout: bool) -> Started:
    # a session of its own: the suite alone passes an interrupt on, once
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, errors="replace", preexec_fn=die_with_parent,
                            start_new_session=True)
    assert proc.stderr is not None
    return Started(proc.pid, proc.stderr, proc.stdout, proc.poll, proc.wait, proc.send_signal)


def _forked_main(args: list[str], env: dict, stderr, stdout) -> None:
    """The fork server's child: become what `python -m uvlm.cli ARGS` with `env` would be."""
    os.setsid()  # as _popen's children: out of the terminal's reach, in a session of its own
    die_with_parent()  # with the fork server, which dies with the suite
    if not multiprocessing.parent_process().is_alive():  # the suite died before that line
        os._exit(1)
    os.environ.clear()
    os.environ.update(env)
    for fd, pipe in ((2, stderr), (1, stdout)):
        if pipe is None:
            pipe_fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(pipe_fd, fd)
            os.close(pipe_fd)
        else:
            os.dup2(pipe.fileno(), fd)
            pipe.close()
    multiprocessing.set_start_method(None, force=True)  # its own pools start as a fresh process's do
    threads = env.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        # OpenMP and the BLAS libraries read their thread counts when the server loaded them
        import torch
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))
        torch.set_num_threads(int(threads))
    from uvlm.cli import main

    main(args)  # ends in SystemExit: its code is the child's exit code, as in a fresh process


def _server() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # read once, when the server starts
    return context


@functools.cache
def jemalloc() -> str | None:
    """jemalloc's library as the dynamic loader preloads it (Linux, where installed), else None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes.util

    library = ctypes.util.find_library("jemalloc")
    if library is None:
        return None
    # find_library also searches the linker's paths (a conda LIBRARY_PATH), which the loader does
    # not: a library it cannot preload would leave every child on glibc behind a warning
    try:
        tried = subprocess.run([sys.executable, "-S", "-c", ""], env={**os.environ, "LD_PRELOAD": library},
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no verdict: glibc's malloc, as without jemalloc
        return None
    return library if tried.returncode == 0 and "LD_PRELOAD" not in tried.stderr else None


def jemalloc_to_add(env) -> str | None:
    """The library `child_environment` preloads for `env`: jemalloc where the machine has it,
    unless `env` preloads a library already or sets UVLM_JEMALLOC=0; else None."""
    if env.get("LD_PRELOAD") or env.get("UVLM_JEMALLOC", "1") == "0":
        return None
    return jemalloc()


def child_environment(env: dict) -> dict:
    """A child's environment: `env`, with jemalloc preloaded (`jemalloc_to_add`). Over a long CPU
    run glibc's malloc fragments its heap: over 100 steps of a cpu2-smol run it held 2.5 times
    jemalloc's memory and its last steps took 1.37 times as long (benchmarks/bench_allocator.py,
    docs/cpu-preset.md). The allocator changes no number: the same bytes either way."""
    library = jemalloc_to_add(env)
    return env if library is None else {**env, "LD_PRELOAD": library}


def _ensure_server() -> None:
    """Start the fork server unless it runs, in this process's environment with the allocator
    `child_environment` adds: a forked child keeps its server's malloc. The caller holds
    _STARTING, under which forked children start; a fresh child gets its environment as a dict."""
    from multiprocessing import forkserver

    _server()
    library = jemalloc_to_add(os.environ)
    if library is None:
        forkserver.ensure_running()
        return
    before = os.environ.get("LD_PRELOAD")  # unset or empty: jemalloc_to_add adds it only then
    os.environ["LD_PRELOAD"] = library
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop("LD_PRELOAD") if before is None else os.environ.update(LD_PRELOAD=before)


def start_fork_server() -> None:
    """Start the fork server now, where children would start from it (`can_fork_from_server`),
    so that it imports while the caller goes on and lives as long as the calling thread (a
    suite's own, not a worker's)."""
    if can_fork_from_server(UVLM, dict(os.environ)):
        with _STARTING:
            _ensure_server()


class _Pidfd:
    """A handle on a process the fork server reaps, not this one: by the time a signal is sent a
    bare pid could name another process; a pidfd names this one (Linux; elsewhere the pid)."""

    def __init__(self, pid: int):
        self.pid, self.lock, self.fd, self.ended = pid, threading.Lock(), None, False
        try:
            self.fd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        except ProcessLookupError:  # it has ended already (a refused command ends in milliseconds)
            self.ended = True

    def send_signal(self, sig: int) -> None:
        with self.lock:
            if self.ended:
                raise ProcessLookupError(self.pid)
            if self.fd is None:
                os.kill(self.pid, sig)
            else:
                signal.pidfd_send_signal(self.fd, sig)

    def close(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
            self.fd, self.ended = None, True


_STARTING = threading.Lock()


def _forked(args: list[str], env: dict, stdout: bool) -> Started:
    context = _server()
    pipes = [context.Pipe(duplex=False) for _ in range(1 + stdout)]
    child = context.Process(target=_forked_main, name="uvlm " + " ".join(args[:1]),
                            args=(args, env, pipes[0][1], pipes[1][1] if stdout else None))
    with _STARTING:
        _ensure_server()
        child.start()
        # multiprocessing polls every child it knows whenever any thread starts a process
        # (process._cleanup): two threads reading one child's status from the fork server, one
        # gets it and the other end-of-file, recorded as the lost status (LOST) of a run that
        # finished. The thread that started a child is the only one to wait for it.
        multiprocessing.process._children.discard(child)
    streams = []
    for reader, writer in pipes:
        writer.close()
        streams.append(os.fdopen(os.dup(reader.fileno()), encoding="utf-8", errors="replace"))
        reader.close()
    assert child.pid is not None
    handle = _Pidfd(child.pid)

    def wait() -> int:
        child.join()
        for stream in streams:
            stream.close()
        handle.close()
        return child.exitcode if child.exitcode is not None else 1

    return Started(child.pid, streams[0], streams[1] if stdout else None,
                   lambda: None if child.is_alive() else child.exitcode, wait, handle.send_signal)


def start(cmd: list[str], env: dict, stdout: bool = False) -> Started:
    """Start a child command: from the fork server where it can (`can_fork_from_server`), else
    as a fresh process. Its stdout is thrown away unless `stdout`; the caller reads its stderr."""
    if can_fork_from_server(cmd, env):
        return _forked(cmd[len(UVLM):], env, stdout)
    return _popen(cmd, env, stdout)


def can_fork_from_server(cmd: list[str], env: dict) -> bool:
    """Whether `cmd` starts from the fork server: a `uvlm` command of a CPU-only job (no GPU
    given to it, none on this machine) on a system that has one (Linux, macOS)."""
    return (cmd[:len(UVLM)] == UVLM and env.get("CUDA_VISIBLE_DEVICES") is None
            and env.get("UVLM_FORK_SERVER", "1") != "0"
            and "forkserver" in multiprocessing.get_all_start_methods() and not _gpu_here())


@functools.cache
def _gpu_here() -> bool:
    # A child may take a GPU the job was not given one of (placement picks CUDA where there is
    # one): on such a machine every child starts fresh, so no process forks after CUDA's start.
    import torch

    return torch.cuda.is_available()


# The children in flight, so that an interrupted suite passes the interrupt on to each exactly
# once; once STOP is set no child starts.
_RUNNING: list[Started] = []
_LOCK = threading.Lock()
STOP = threading.Event()


def run(cmd: list[str], env: dict, each_line: Callable[[str], None]) -> tuple[int, str]:
    """Run a child command to its end, passing each non-blank line it writes to stderr to
    `each_line`; returns its exit code and its last such line (the error, when it failed). It
    dies with this process."""
    with _LOCK:
        if STOP.is_set():  # the suite was interrupted: start nothing new
            raise UvlmError("interrupted")
        child = start(cmd, env)
        _RUNNING.append(child)
    try:
        last = ""
        for line in child.stderr:
            if line.strip():
                last = line.strip()
                each_line(last)
        code = child.wait()
        if code == LOST and not last:  # say why, where it is known
            last = _server_end()
        return code, last
    finally:
        with _LOCK:
            _RUNNING.remove(child)


# What multiprocessing reports for a forked child whose status it could not read from the fork
# server: the server had ended, or (before `_forked` took its children out of multiprocessing's
# own polling) another thread had read the status first.
LOST = 255


def _server_end() -> str:
    """How the fork server ended, if it has (looked at without reaping it: multiprocessing reaps
    it, and starts another, at the next child)."""
    try:
        from multiprocessing import forkserver

        pid = forkserver._forkserver._forkserver_pid
        ended = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) if pid else None
    except (AttributeError, OSError):
        return ""
    if ended is None:
        return ""
    how = f"signal {ended.si_status}" if ended.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else f"exit {ended.si_status}"
    return (f"its status is lost: the fork server it was forked from (pid {pid}) ended ({how}); run the same "
            "command again")


def interrupt(sig: int) -> None:
    """Start no more children, and send `sig` to each one in flight."""
    with _LOCK:
        STOP.set()
        for child in _RUNNING:
            with contextlib.suppress(ProcessLookupError):  # it ended as the signal was sent
                child.send_signal(sig)


@atexit.register
def _kill_the_rest() -> None:
    # Run before multiprocessing's own exit hook, which would wait for the forked children: a
    # suite that dies of an error takes its runs with it, as it did when they were its own.
    with _LOCK:
        for child in _RUNNING:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGKILL)
