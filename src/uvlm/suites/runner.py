"""Run a suite's jobs: in parallel, one thread each (or their train.threads), skipping what is
done, resuming the rest.

    results/
      jobs.json                 the suite's jobs (table, label, seed, run key), merged across suites
      configs/KEY.yaml          each run's config
      runs/KEY/                 a run folder (uvlm train; KEY: row label, seed, config hash, see Job.key)
                                with eval/ (uvlm eval), wall.json and,
                                for Fig 7, probe/ (uvlm probe)

A job is done when runs/KEY/eval/metrics.json exists (written atomically, last), and for a
probed job (Fig 7) runs/KEY/probe/probe.json too. A killed suite is started again with the
same command: finished runs are skipped, interrupted ones resume from their last checkpoint.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import yaml

from uvlm.errors import UvlmError
from uvlm.io import atomic_write_json, atomic_write_text, exclusive, read_json, sweep_temporaries
from uvlm.suites import children
from uvlm.suites.children import uvlm_command
from uvlm.suites.spec import Job, identity_of

# What uvlm.progress prints: "label: done/total (..% ...)".
PROGRESS_LINE = re.compile(r": \d+/\d+ \(\d+%")
PROBE_SPLIT = (4000, 1000)  # the paper's Fig 7 probe: adapter outputs it is fitted on, and scored on


def probe_folder(run: Path, n_train: int = PROBE_SPLIT[0], n_test: int = PROBE_SPLIT[1]) -> Path:
    """Where a probe writes: run/probe/ at the paper's split (what suites and the report read), else its own folder."""
    return Path(run) / ("probe" if (n_train, n_test) == PROBE_SPLIT else f"probe-{n_train}-{n_test}")


def _evaluated(run: Path) -> bool:
    return (run / "eval" / "metrics.json").exists()


def _probed(run: Path) -> bool:
    return (probe_folder(run) / "probe.json").exists()


def is_done(results: Path, job: Job) -> bool:
    """Whether a job has nothing left to do: its run is evaluated and, if the job probes it, probed."""
    run = results / "runs" / job.key
    return _evaluated(run) and (not job.probe or _probed(run))


def _child(cmd: list[str], env: dict, show: Callable[[str], None]) -> tuple[int, str]:
    """Run a child command to its end (uvlm.suites.children), passing its progress lines to
    `show`; returns its exit code and its last line on stderr (the error, when it failed)."""
    return children.run(cmd, env, lambda line: show(line) if PROGRESS_LINE.search(line) else None)


def with_folders(jobs: list[Job], results: Path) -> list[Job]:
    """The jobs named as `results` already names their runs (by identity: another table's job
    made the run, an older uvlm named it, or a suite recorded or submitted it and has not begun
    it yet), so that no run is trained twice and every table reads the one folder."""
    results = Path(results)
    names: list[str] = []  # recorded or submitted, perhaps not begun yet
    if (results / "cluster.json").exists():
        names += list(read_json(results / "cluster.json", "the cluster ledger", "delete it to submit the runs anew"))
    if (results / "jobs.json").exists():
        names += [e["key"] for e in job_index(results)]
    known = {identity_of(name): name for name in names} | run_folders(results)  # a folder that exists wins
    return [replace(j, folder=known[j.identity]) if j.identity in known else j for j in jobs]


def run_folders(results: Path) -> dict[str, str]:
    """The run folders under results/runs, by the identity their names end with (old names and new)."""
    runs = Path(results) / "runs"
    return {identity_of(p.name): p.name for p in runs.iterdir() if p.is_dir()} if runs.is_dir() else {}


def wait_for_folder(run: Path, echo: Callable[[str], None]) -> None:
    """Wait while another process still holds `run` (a child of a killed suite, ending), so a
    rerun takes the run over instead of failing on it."""
    if not run.is_dir():
        return
    try:
        with exclusive(run, "`uvlm train`"):
            return
    except UvlmError:
        echo(f"{run.name}: waiting for the process still using it to end")
    with exclusive(run, "`uvlm train`", wait=True):
        return


def run_job(job: Job, results: Path, devices: str | None = None, processes: int = 1,
            echo: Callable[[str], None] = lambda line: None) -> dict:
    """Train (resuming if interrupted) and evaluate one job, then probe it if it is probed; return
    the seconds of the steps it took. `devices`: the GPUs the job may use (CUDA_VISIBLE_DEVICES),
    so jobs side by side never share one; `processes` > 1 trains across that many GPUs (torchrun,
    one process per GPU) and evaluates on the first. The children's progress lines go to `echo`."""
    config = results / "configs" / f"{job.key}.yaml"
    atomic_write_text(config, yaml.safe_dump(job.config, sort_keys=False))
    run = results / "runs" / job.key
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    else:  # measured on CPU runs only (docs/cpu-preset.md)
        env = children.child_environment(env)
    train = uvlm_command("train", "--config", str(config), "--out", str(run), "--resume")
    if processes > 1:
        train = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                 str(processes), *train[1:]]
    times: dict[str, float] = {}
    wait_for_folder(run, echo)
    for step, cmd in _steps_left(job, run, train):
        start = time.perf_counter()
        code, last = _child(cmd, env, lambda line: echo(f"{job.key}: {line}"))
        times[f"{step}_seconds"] = round(time.perf_counter() - start, 1)
        if code != 0:
            raise UvlmError(f"{job.key}: {step} failed: {last or code}")
        if step == "eval":
            # The run's own count: a resumed train command only sees the steps after its checkpoint.
            times["train_seconds"] = json.loads((run / "final.json").read_text()).get("train_seconds",
                                                                                     times["train_seconds"])
            # Written here, so wall.json times train + eval (a run's cost) whatever the probe does after.
            atomic_write_json(run / "wall.json", times)
    return times


def _steps_left(job: Job, run: Path, train: list[str]) -> list[tuple[str, list[str]]]:
    """The (step, command) pairs a job still needs: train and eval unless the run is evaluated,
    then the probe if the job probes it (a rerun after a kill between the two does only the probe)."""
    steps = []
    if not _evaluated(run):
        steps += [("train", train), ("eval", uvlm_command("eval", str(run)))]
    if job.probe and not _probed(run):
        steps.append(("probe", uvlm_command("probe", str(run))))
    return steps


def wall_seconds(results: Path, key: str) -> float | None:
    """A finished run's wall time (train + eval) from its wall.json, or None."""
    path = Path(results) / "runs" / key / "wall.json"
    if not path.exists():
        return None
    w = read_json(path, "wall times", f"delete it and run the suite again to time {path.parent.name} anew")
    return w.get("train_seconds", 0) + w.get("eval_seconds", 0)


def run_summary(results: Path, key: str) -> dict | None:
    """A trained run's final.json (uvlm.train.loop), or None while it has none."""
    final = Path(results) / "runs" / key / "final.json"
    return read_json(final, "run summary", "delete the run folder and train it again") if final.exists() else None


def config_threads(config: dict | None) -> int:
    """The CPU threads a run config trains on (train.threads; 1 where it has none)."""
    return int(((config or {}).get("train") or {}).get("threads", 1))


def run_threads(results: Path, key: str) -> int:
    """The CPU threads a run trained on, from its config.yaml (1 where it has none)."""
    path = Path(results) / "runs" / key / "config.yaml"
    return config_threads(yaml.safe_load(path.read_text()) if path.exists() else None)


def core_seconds(results: Path, key: str) -> float | None:
    """A finished run's one-core seconds: its wall time times the threads it trained on, so that
    runs on one thread and runs on several are priced alike. None before its wall.json exists."""
    wall = wall_seconds(results, key)
    return None if wall is None else wall * run_threads(results, key)


def record_rates(results: Path, keys) -> dict[str, float]:
    """One-core seconds per training record (final.json's count) of the finished runs among `keys`:
    runs differ in size, so an estimate scales by records, not by runs."""
    rates = {}
    for key in keys:
        seconds, summary = core_seconds(results, key), run_summary(results, key)
        if seconds is not None and summary and (records := summary.get("records")):
            rates[key] = seconds / records
    return rates


def suite_status(jobs: list[Job], results: Path) -> dict:
    """Per seed, how many of the suite's runs are done, started (a run folder without a final
    evaluation, or a Fig 7 run without its probe: finished by the next `suite run`) or not begun;
    the median wall time of the done ones; and the records left to train with the one-core seconds
    a record took (in the done runs, or in every finished run in `results` while the suite has
    none), for an estimate of what is left."""
    results = Path(results)
    per_seed: dict[int, dict[str, int]] = {}
    done, records_left = [], 0
    for job in {j.key: j for j in jobs}.values():
        if is_done(results, job):
            state = "done"
            done.append(job.key)
        else:
            state = "started" if (results / "runs" / job.key).exists() else "to run"
            if not _evaluated(results / "runs" / job.key):  # else only its probe is left
                records_left += job.records
        counts = per_seed.setdefault(job.seed, {"done": 0, "started": 0, "to run": 0})
        counts[state] += 1
    if not done:
        done = [run.name for run in sorted((results / "runs").glob("*"))]
    walls = [w for key in done if (w := wall_seconds(results, key)) is not None]
    rates = list(record_rates(results, done).values())
    return {"seeds": dict(sorted(per_seed.items())),
            "median_wall_seconds": statistics.median(walls) if walls else None,
            "records_left": records_left, "seconds_per_record": statistics.median(rates) if rates else None}


def overrides_of(results: Path) -> list[str]:
    """The `--set` overrides every run in `results` was made with (none unless recorded)."""
    path = Path(results) / "overrides.json"
    return read_json(path, "the folder's --set record", "delete it and run the suite with its --set again") \
        if path.exists() else []


def preset_of(results: Path) -> str:
    """The preset every run in `results` was made with: recorded unless it is `cpu` (the only
    preset of folders made before the record existed)."""
    from uvlm.suites.presets import PRESETS

    path = Path(results) / "preset.json"
    if not path.exists():
        return "cpu"
    held = read_json(path, "the folder's preset record", "delete it and run the suite with its --preset again")
    if not isinstance(held, dict) or held.get("preset") not in PRESETS:
        raise UvlmError(f"{path} does not name a preset; write {{\"preset\": \"NAME\"}} with one of "
                        f"{', '.join(PRESETS)} (the preset its runs were made with)")
    return held["preset"]


def check_preset(results: Path, preset: str) -> None:
    """Refuse a suite of another preset than the runs a results folder holds."""
    results = Path(results)
    if (results / "jobs.json").exists() and (held := preset_of(results)) != preset:
        unrecorded = "" if (results / "preset.json").exists() else (
            f" (a folder made before presets were recorded reads as cpu: if its runs are {preset}'s, write "
            f"{{\"preset\": \"{preset}\"}} to its preset.json)")
        raise UvlmError(f"{results} holds runs of preset {held}; give --preset {held}, or another --out for "
                        f"these{unrecorded}")


def claim_results(results: Path, overrides: tuple[str, ...], preset: str = "cpu") -> None:
    """Keep one preset and one set of overrides per results folder, so a report never mixes
    settings: a folder takes those of its first suite, and a suite with others is refused."""
    results = Path(results)
    if (results / "jobs.json").exists():
        check_preset(results, preset)
        held = overrides_of(results)
        if held != list(overrides):
            shown = " ".join(f"--set {o}" for o in held) or "no --set"
            raise UvlmError(f"{results} holds runs made with {shown}; give those, or another --out for these")
        return
    # (a record without jobs.json is left by a suite killed before its first job: replaced)
    for name, value, neutral in (("overrides.json", list(overrides), []), ("preset.json", {"preset": preset},
                                                                          {"preset": "cpu"})):
        if value != neutral:
            atomic_write_json(results / name, value)
        else:
            (results / name).unlink(missing_ok=True)


def check_encoder_weights(jobs: list[Job], preset: str) -> None:
    """Refuse, in one line and before anything runs, a suite whose real encoders are not on this
    machine, naming where they go and the preset that runs the study on stand-ins instead."""
    from uvlm.model.names import parse_name
    from uvlm.suites.presets import STAND_IN_PRESET
    from uvlm.vision.load import missing_weights

    archs = [(job, parse_name(job.config["model"]["name"])) for job in jobs]
    needed = {job.config["data"][space] for job, arch in archs for space in (arch.input_space, arch.output_space)
              if space}
    missing = sorted(filter(None, map(missing_weights, needed)))
    if missing:
        instead = f", or use --preset {STAND_IN_PRESET[preset]} (stand-in encoders)" \
            if preset in STAND_IN_PRESET else ""
        raise UvlmError(f"the {preset} preset's encoders are not on this machine: {'; '.join(missing)}; put them "
                        f"where the README's \"Running the paper's models\" says{instead}")


def record_jobs(results: Path, jobs: list[Job]) -> None:
    """Merge these jobs into results/jobs.json (other suites' jobs are kept)."""
    path = results / "jobs.json"
    known = job_index(results) if path.exists() else []
    entries = {(e["table"], e["label"], e["seed"]): e for e in known}
    for j in jobs:
        entries[(j.table, j.label, j.seed)] = {"table": j.table, "label": j.label, "seed": j.seed, "key": j.key}
    atomic_write_json(path, sorted(entries.values(), key=lambda e: (e["table"], e["label"], e["seed"])))


def run_suite(jobs: list[Job], results: Path, workers: int, echo: Callable[[str], None] = print,
              execute: Callable[..., dict] = run_job, gpus: int = 0, gpus_per_run: int = 1) -> dict:
    """Run every job not yet done, `workers` at a time, each by `execute(job, results, devices,
    processes, echo=...)` (run_job). Returns {key: wall times or error}.
    With `gpus`, each running job holds `gpus_per_run` GPUs of its own, and trains across them
    when that is more than one. One suite at a time per folder: a second fails at once while
    this one runs."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    with exclusive(results, "suite run (`uvlm suite run` or `uvlm demo`)"):
        sweep_temporaries(results, skip=("runs",))  # each run's own command sweeps its folder
        record_jobs(results, jobs)
        unique = {j.key: j for j in jobs}
        # Seed by seed, so a suite stopped part-way leaves whole seeds of every row behind.
        pending = sorted((j for j in unique.values() if not is_done(results, j)), key=lambda j: j.seed)
        echo(f"{len(unique)} runs: {len(unique) - len(pending)} done, {len(pending)} to run, {workers} at a time")
        outcome: dict = {}
        per_job = gpus_per_run if gpus else 0
        if per_job * workers > gpus:
            raise UvlmError(f"{workers} runs at a time with {per_job} GPUs each need {per_job * workers} GPUs; "
                            f"this machine has {gpus}")
        processes = max(1, per_job)  # a job holding several GPUs trains across them
        free: queue.Queue[str] = queue.Queue()
        if per_job:
            from uvlm.device import gpu_groups, visible_gpus  # torch, only where there are GPUs

            for group in gpu_groups(visible_gpus(gpus), workers, per_job):
                free.put(group)  # through this process's own mask: children see the GPUs it was given

        def one(job: Job) -> tuple[str, dict]:
            devices = free.get() if per_job else None
            try:
                return job.key, execute(job, results, devices, processes, echo=echo)
            except UvlmError as e:
                return job.key, {"error": str(e)}
            finally:
                if devices is not None:
                    free.put(devices)

        if pending and not per_job and execute is run_job:
            if library := children.jemalloc_to_add(os.environ):
                echo(f"runs preload jemalloc ({library}; UVLM_JEMALLOC=0 keeps glibc's malloc)")
            children.start_fork_server()  # from this thread, which outlives every child
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            # Reported as they finish, so the log shows what is done, not what was started first.
            finished = as_completed([pool.submit(one, job) for job in pending])
            for i, (key, result) in enumerate((f.result() for f in finished), start=1):
                outcome[key] = result
                status = result.get("error") or ", ".join(f"{step.removesuffix('_seconds')} {seconds} s"
                                                          for step, seconds in result.items()
                                                          if step.endswith("_seconds"))
                echo(f"[{i}/{len(pending)}] {key}: {status}")
        except KeyboardInterrupt:
            # Ctrl-C: no queued run starts (leaving a `with` block would wait for all of them), and
            # the runs in flight stop at their last checkpoint, from which the same command resumes.
            pool.shutdown(wait=False, cancel_futures=True)
            children.interrupt(signal.SIGINT)
            echo(f"interrupted: {len(outcome)} of {len(pending)} runs finished; the runs in flight stop at their "
                 "last checkpoint; run the same command again to resume")
            raise
        finally:
            while True:  # a second Ctrl-C while the runs in flight stop: stop them at once
                try:
                    pool.shutdown(wait=True)
                    break
                except KeyboardInterrupt:
                    children.interrupt(signal.SIGKILL)
                    echo("interrupted again: the runs in flight are killed; they resume from their last checkpoint")
            children.STOP.clear()
        failed = [k for k, r in outcome.items() if "error" in r]
        if failed:
            raise UvlmError(f"{len(failed)} runs failed (first: {outcome[failed[0]]['error']}); "
                            "fix and run the same command again")
        return outcome


def job_index(results: Path) -> list[dict]:
    path = Path(results) / "jobs.json"
    if not path.exists():
        raise UvlmError(f"{results} holds no suite results (missing jobs.json); run `uvlm suite run` first")
    index = read_json(path, "the suite index", "run the `uvlm suite run` command again to rewrite it")
    if not isinstance(index, list) or not all(isinstance(e, dict) and {"table", "label", "seed", "key"} <= set(e)
                                              for e in index):
        raise UvlmError(f"the suite index {path} is corrupt; run the `uvlm suite run` command again to rewrite it")
    return index

