"""A suite on a cluster: each run a SLURM job through submitit (or submitit's local executor,
which runs the same jobs as local processes, to try the path on one machine).

A job does what the local runner does for a run (uvlm.suites.runner.run_job: `uvlm train
--resume`, then `uvlm eval`, then `uvlm probe` for Fig 7's), in the results folder, which must be
on a file system every node sees. A job stopped by preemption or its time limit is requeued by
submitit and resumes from the run's last checkpoint; a finished run is never redone; a run
folder has one trainer at a time. `results/cluster.json` keeps each run's job, so `uvlm suite
status` can show job states and a second `uvlm suite run` does not submit a run whose job is
still queued or running.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from uvlm.errors import UvlmError
from uvlm.io import atomic_write_json, read_text_file
from uvlm.suites.runner import is_done, run_job
from uvlm.suites.spec import Job

EXECUTORS = ("slurm", "submitit-local")
LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


@dataclass(frozen=True)
class ClusterSettings:
    """What each run's job asks the cluster for (flags of `uvlm suite run`, or a YAML file)."""

    executor: str = "slurm"
    partition: str | None = None
    time_min: int = 240  # a job's time limit; a longer run is requeued and resumes
    gpus_per_run: int = 1
    cpus_per_run: int = 4
    mem_gb: int | None = None
    array: bool = True  # one job array for the suite, at most `parallel` runs at a time
    parallel: int = 32
    requeues: int = 10  # how many times a timed-out or preempted job comes back

    def __post_init__(self) -> None:
        checks = [(self.executor in EXECUTORS, f"--executor {self.executor!r}: use local, {', '.join(EXECUTORS)}"),
                  (self.time_min >= 1, f"time_min {self.time_min} must be >= 1"),
                  (self.gpus_per_run >= 0, f"gpus_per_run {self.gpus_per_run} must be >= 0"),
                  (self.cpus_per_run >= 1, f"cpus_per_run {self.cpus_per_run} must be >= 1"),
                  (self.parallel >= 1, f"parallel {self.parallel} must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise UvlmError(f"bad cluster settings: {message}")

    @classmethod
    def from_yaml(cls, path: Path, **flags) -> ClusterSettings:
        """Settings from a YAML mapping, with command-line flags (not None) on top."""
        import yaml

        text = read_text_file(path, "cluster settings", "a YAML file")
        try:
            d = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise UvlmError(f"cannot read cluster settings {path} ({str(e).splitlines()[0]})") from None
        known = set(cls.__dataclass_fields__)
        if not isinstance(d, dict) or set(d) - known:
            raise UvlmError(f"cluster settings {path}: use keys {', '.join(sorted(known))}")
        return cls(**{**d, **{k: v for k, v in flags.items() if v is not None}})


class RunJob:
    """One run as a cluster job. Requeued after a timeout or preemption with the same arguments:
    the run resumes from its checkpoint (the training is resumable to the bit)."""

    def __init__(self, job: Job, results: str, gpus: int):
        self.job, self.results, self.gpus = job, results, gpus

    def __call__(self) -> dict:
        results = Path(self.results)
        if is_done(results, self.job):
            return {"skipped": True}
        return run_job(self.job, results, processes=max(1, self.gpus))

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(RunJob(self.job, self.results, self.gpus))


def _executor(settings: ClusterSettings, folder: Path):
    try:
        import submitit
    except ImportError:
        raise UvlmError("the cluster executors need submitit: pip install 'uvlm[cluster]'") from None
    cluster = "slurm" if settings.executor == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster,
                                     slurm_max_num_timeout=settings.requeues)
    params = {"timeout_min": settings.time_min, "gpus_per_node": settings.gpus_per_run,
              "cpus_per_task": settings.cpus_per_run, "tasks_per_node": 1, "nodes": 1,
              "name": "uvlm", "slurm_array_parallelism": settings.parallel}
    if settings.partition:
        params["slurm_partition"] = settings.partition
    if settings.mem_gb:
        params["mem_gb"] = settings.mem_gb
    executor.update_parameters(**params)
    return executor


def _ledger(results: Path) -> dict:
    path = results / "cluster.json"
    return json.loads(path.read_text()) if path.exists() else {}


def job_states(results: Path) -> dict[str, str]:
    """Each submitted run's job state as the cluster reports it (run key -> state)."""
    ledger = _ledger(results)
    if not ledger:
        return {}
    import submitit

    states = {}
    for key, entry in ledger.items():
        job_class = submitit.SlurmJob if entry["executor"] == "slurm" else submitit.LocalJob
        try:
            states[key] = job_class(folder=entry["folder"], job_id=entry["job_id"]).state
        except Exception:  # a cluster that no longer knows the job
            states[key] = "UNKNOWN"
    return states


def submit_suite(jobs: list[Job], results: Path, settings: ClusterSettings, echo=print, wait: bool = False) -> dict:
    """Submit every run of `jobs` that is neither done nor queued/running; record the jobs in
    results/cluster.json; return {run key: submitit job}. With `wait`, block until they end and
    raise if any failed."""
    results = Path(results)
    states = job_states(results)
    unique = {j.key: j for j in jobs}
    pending = [j for j in sorted(unique.values(), key=lambda j: j.seed)
               if not is_done(results, j) and states.get(j.key, "").split(" ")[0] not in LIVE]
    live = sum(1 for j in unique.values() if states.get(j.key, "").split(" ")[0] in LIVE and not is_done(results, j))
    echo(f"{len(unique)} runs: {len(unique) - len(pending) - live} done, {live} queued or running, "
         f"{len(pending)} to submit ({settings.executor})")
    if not pending:
        return {}
    folder = results / "cluster"
    executor = _executor(settings, folder)
    calls = [RunJob(j, str(results.resolve()), settings.gpus_per_run) for j in pending]
    if settings.array and settings.executor == "slurm":
        with executor.batch():
            submitted = [executor.submit(call) for call in calls]
    else:
        submitted = [executor.submit(call) for call in calls]
    ledger = _ledger(results)
    for job, sub in zip(pending, submitted, strict=True):
        ledger[job.key] = {"job_id": sub.job_id, "executor": settings.executor, "folder": str(folder / "%j"),
                           "settings": asdict(settings)}
    atomic_write_json(results / "cluster.json", ledger)
    echo(f"submitted {len(submitted)} jobs; `uvlm suite status` shows their states, logs are in {folder}")
    if wait:
        failed = []
        for job, sub in zip(pending, submitted, strict=True):
            try:
                sub.result()
            except Exception as e:  # submitit re-raises the job's error with its log
                failed.append(f"{job.key}: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
        if failed:
            raise UvlmError(f"{len(failed)} runs failed (first: {failed[0]}); fix and run the same command again")
    return {job.key: sub for job, sub in zip(pending, submitted, strict=True)}
