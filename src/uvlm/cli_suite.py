"""`uvlm suite ...`: the paper's experiments as suites of runs, and a researcher's variants beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from uvlm.errors import UvlmError

suite_app = typer.Typer(help="Run the paper's experiments as suites of runs.", no_args_is_help=True)


# The suite commands' shared arguments.
SuiteName = Annotated[str, typer.Argument(help="mutual | affine | scaling | transfer-weather | transfer-battery | "
                                               "probe | all")]
Preset = Annotated[str | None, typer.Option(help="cpu | cpu2 | cpu2-smol | paper | smol | smol-standin (see "
                                                 "docs/models-and-training.md); default: the --out folder's, else cpu")]
Seeds = Annotated[int, typer.Option(help="Seeds per cell.")]
Results = Annotated[Path, typer.Option(help="Results folder (shared by suites).")]
Workers = Annotated[int | None, typer.Option(help="Runs at a time (default: one per GPU; without, the cores "
                                                  "over train.threads).")]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Change every run's config: section.key=value.")]
Rows = Annotated[str | None, typer.Option(help="Only these rows, comma-separated (controls and sweep points "
                                               "included), e.g. VQ-VQ,VQ_u.")]
GpusPerRun = Annotated[int, typer.Option(help="GPUs each run trains across (one process per GPU); evaluation "
                                              "uses the first. Ignored without GPUs.")]
Dataset = Annotated[str, typer.Option(help="smartwatch | celeba (mutual, affine and scaling: their CelebA halves; "
                                            "needs --celeba).")]
VariantsFile = Annotated[Path | None, typer.Option(help="Your own rows and comparisons beside the paper's (a YAML "
                                                        "file: docs/variants.md); the folder keeps them for later "
                                                        "suites, statuses and reports.")]
CelebaCopy = Annotated[Path | None, typer.Option(help="Your copy of CelebA (as for `uvlm data celeba`), for "
                                                      "--dataset celeba.")]


def _variants(given: Path | None, out: Path, preset: str, dataset: str = "smartwatch"):
    """The variants a suite command covers: the folder's record and the given file's together."""
    from uvlm.suites.variants import merged_variants

    if given is not None and dataset != "smartwatch":
        raise UvlmError("variants join the SmartWatch tables; run the CelebA half without --variants")
    return merged_variants(out, given, preset)


def _jobs(name: str, preset: str, seeds: int, overrides: list[str] | None, rows: str | None,
          dataset: str = "smartwatch", celeba: Path | None = None, variants=None, out: Path | None = None) -> list:
    """A suite's jobs under the command line's --set, --rows, --dataset, --celeba and variants,
    named by the run folders `out` holds already."""
    from uvlm.suites.runner import with_folders
    from uvlm.suites.spec import expand

    only = tuple(r.strip() for r in (rows or "").split(",") if r.strip())
    if rows is not None and not only:
        raise UvlmError(f"--rows {rows!r} names no row; give comma-separated names, e.g. --rows VQ-VQ,VQ_u")
    if dataset not in ("smartwatch", "celeba"):
        raise UvlmError(f"--dataset {dataset!r}: use smartwatch or celeba")
    if (dataset == "celeba") != (celeba is not None):
        raise UvlmError("--dataset celeba needs --celeba PATH (your copy of CelebA), and --celeba needs "
                        "--dataset celeba")
    if celeba is not None:
        from uvlm.data.celeba import read_celeba

        read_celeba(celeba)  # a missing or partial copy is refused before anything is written
        celeba = celeba.resolve()
    jobs = expand(name, preset, seeds, tuple(overrides or ()), only, str(celeba) if celeba else None, variants)
    return with_folders(jobs, out) if out is not None else jobs


def _preset(preset: str | None, out: Path) -> str:
    """The preset of a suite command: as given (refused by a results folder holding another's runs),
    else the folder's, else cpu."""
    from uvlm.suites.runner import check_preset, preset_of

    if Path(out).exists() and not Path(out).is_dir():
        raise UvlmError(f"--out {out} is a file, not a results folder; give a folder (a new one, or one that "
                        "`uvlm suite run` made)")
    if preset is None:
        return preset_of(out) if (Path(out) / "jobs.json").exists() else "cpu"
    check_preset(out, preset)
    return preset


def _workers(workers: int | None, gpus_per_run: int = 1, threads: int = 1) -> int:
    """A suite's runs at a time: on a GPU machine one per `gpus_per_run` GPUs, else as many as the
    cores hold at `threads` (train.threads) each, unless given."""
    from uvlm.data.folder import cpu_count
    from uvlm.device import gpu_count

    if workers is not None and workers < 1:
        raise UvlmError(f"--workers {workers} must be >= 1")
    if gpus_per_run < 1:
        raise UvlmError(f"--gpus-per-run {gpus_per_run} must be >= 1")
    gpus = gpu_count()
    if gpus and gpus_per_run > gpus:
        raise UvlmError(f"--gpus-per-run {gpus_per_run} is more than this machine's {gpus} GPUs")
    if workers is None:
        return gpus // gpus_per_run if gpus else max(1, cpu_count() // threads)
    if gpus and workers * gpus_per_run > gpus:
        raise UvlmError(f"--workers {workers} x --gpus-per-run {gpus_per_run} is more than this machine's "
                        f"{gpus} GPUs; runs never share one")
    if not gpus and workers > 4 * cpu_count():  # one-thread runs: more than a few per core only thrash
        raise UvlmError(f"--workers {workers} is more than 4 runs per core of this machine's {cpu_count()}; "
                        f"use at most {4 * cpu_count()}")
    return workers


@suite_app.command("status")
def suite_status_command(
    name: SuiteName,
    preset: Preset = None,
    seeds: Seeds = 3,
    out: Results = Path("results"),
    workers: Workers = None,
    set_: Overrides = None,
    rows: Rows = None,
    gpus_per_run: GpusPerRun = 1,
    dataset: Dataset = "smartwatch",
    celeba: CelebaCopy = None,
    variants: VariantsFile = None,
) -> None:
    """Show how far a suite has got, seed by seed, and about how long the rest would take; with a
    cluster executor, the state of each submitted run's job.

    Example: uvlm suite status mutual --out results-cpu2
    """
    from uvlm.suites.presets import MEASURED_SECONDS_PER_RECORD, pretraining_line
    from uvlm.suites.runner import check_encoder_weights, config_threads, is_done, overrides_of, suite_status

    preset = _preset(preset, out)
    if not set_ and out.is_dir():  # the folder's own study: the --set its runs were made with
        set_ = overrides_of(out)
    jobs = _jobs(name, preset, seeds, set_, rows, dataset, celeba, _variants(variants, out, preset, dataset), out)
    threads = max(config_threads(j.config) for j in jobs)
    workers = _workers(workers, gpus_per_run, threads)
    status = suite_status(jobs, out)
    pending = [j for j in jobs if not is_done(out, j)]
    left = 0
    for seed, counts in status["seeds"].items():
        typer.echo(f"seed {seed}: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
        left += counts["started"] + counts["to run"]
    rate, source = status["seconds_per_record"], "time scaled by each run's records"
    if rate is None and preset in MEASURED_SECONDS_PER_RECORD:
        rate, source = MEASURED_SECONDS_PER_RECORD[preset], f"at the committed {preset} runs' speed"
    if left:
        if first := pretraining_line([j.config for j in pending], preset):
            typer.echo(first)
        try:  # what `suite run` would refuse for: said here, on the machine where one prepares
            check_encoder_weights(pending, preset)
        except UvlmError as e:
            typer.echo(f"not ready to run: {e}")
    if not left:
        typer.echo(f"{name}: every run is done")
    elif rate is None:
        typer.echo(f"{name}: {left} runs left; no finished run to estimate their time from")
    else:
        hours = status["records_left"] * rate / 3600
        median = status["median_wall_seconds"]
        typer.echo(f"{name}: {left} runs left, at most about {hours:.1f} h of one core "
                   f"({hours / min(workers, left) / threads:.1f} h with {workers} at a time"
                   + (f" on {threads} threads each" if threads > 1 else "") + "; "
                   + (f"median run {median / 60:.1f} min; " if median else "") + f"{source})")
    if (out / "cluster.json").exists():
        from collections import Counter

        from uvlm.suites.cluster import job_states

        keys = {j.key for j in jobs}
        states = Counter(state for key, state in job_states(out).items() if key in keys)
        if states:
            typer.echo("cluster jobs: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))


@suite_app.command("list")
def suite_list_command(
    preset: Annotated[str, typer.Option(help="cpu | cpu2 | cpu2-smol | paper | smol | smol-standin.")] = "cpu2",
    seeds: Seeds = 3,
    workers: Workers = None,
) -> None:
    """List the suites: what each reproduces, its runs, and about how long it takes at this preset.

    Example: uvlm suite list --preset cpu2 --seeds 3
    """
    from uvlm.suites.presets import MEASURED_SECONDS_PER_RECORD, known_preset
    from uvlm.suites.spec import SUITE_TITLES, SUITES

    known_preset(preset)
    workers = _workers(workers)
    rate = MEASURED_SECONDS_PER_RECORD.get(preset)
    for name in SUITES:
        jobs = list({j.key: j for j in _jobs(name, preset, seeds, None, None, "smartwatch", None)}.values())
        hours = sum(j.records for j in jobs) * rate / 3600 if rate else None
        cost = f"about {hours:.1f} h of one core, {hours / min(workers, len(jobs)):.1f} h with {workers} at a time" \
            if hours is not None else f"no measured speed for preset {preset}"
        typer.echo(f"{name:<17} {SUITE_TITLES[name]}: {len(jobs)} runs at {seeds} seed{'s' * (seeds > 1)}, {cost}")
    every = list({j.key: j for j in _jobs("all", preset, seeds, None, None, "smartwatch", None)}.values())
    typer.echo(f"{'all':<17} the whole SmartWatch grid (`uvlm suite run all --preset {preset} --seeds {seeds}`): "
               f"{len(every)} runs" + (f", about {sum(j.records for j in every) * rate / 3600:.0f} h of one core"
                                       if rate else ""))
    if rate:
        typer.echo(f"(times at the committed {preset} runs' speed: {rate * 1000:.1f} ms a training record, "
                   "evaluation included, one thread a run; suites share runs, so `all` takes less than the sum)")
    typer.echo("mutual, affine and scaling also run on CelebA (`--dataset celeba --celeba PATH`; docs/data.md); "
               "your own rows beside the paper's: `--variants FILE` (docs/variants.md)")


@suite_app.command("run")
def suite_run(
    name: SuiteName,
    preset: Preset = None,
    seeds: Seeds = 3,
    out: Results = Path("results"),
    workers: Workers = None,
    set_: Overrides = None,
    rows: Rows = None,
    gpus_per_run: GpusPerRun = 1,
    dataset: Dataset = "smartwatch",
    celeba: CelebaCopy = None,
    variants: VariantsFile = None,
    executor: Annotated[str, typer.Option(help="local (this machine), slurm (a job per run through submitit), "
                                               "or submitit-local (the cluster path as local processes).")] = "local",
    partition: Annotated[str | None, typer.Option(help="Cluster: the SLURM partition.")] = None,
    time_min: Annotated[int | None, typer.Option(help="Cluster: each job's time limit in minutes (a longer run "
                                                      "is requeued and resumes).")] = None,
    cpus_per_run: Annotated[int | None, typer.Option(help="Cluster: CPUs per job.")] = None,
    cluster_config: Annotated[Path | None, typer.Option(help="Cluster: a YAML file of these settings "
                                                             "(flags override it).")] = None,
    wait: Annotated[bool, typer.Option(help="Cluster: wait for the jobs to end.")] = False,
) -> None:
    """Train and evaluate every run of a suite, and probe Fig 7's; finished runs are skipped,
    killed ones resume.

    With --set, every run's config changes (e.g. --set train.lr=1e-3); the results folder keeps
    the overrides of its first suite, so use one folder per setting. With --variants, your own
    rows join the suites of their tables (docs/variants.md). On a cluster (--executor
    slurm) each run is a job; the results folder must be on a file system the nodes share.

    Example: uvlm suite run mutual --preset cpu2 --seeds 3 --out results-cpu2
    """
    from uvlm.device import gpu_count, require_device
    from uvlm.io import exclusive, make_folder, sweep_temporaries
    from uvlm.suites.runner import claim_results, config_threads, record_jobs, run_suite

    preset = _preset(preset, out)
    own = _variants(variants, out, preset, dataset)
    jobs = _jobs(name, preset, seeds, set_, rows, dataset, celeba, own, out)
    local_workers = _workers(workers, gpus_per_run, max(config_threads(j.config) for j in jobs)) \
        if executor == "local" else 0
    settings = None
    if executor != "local":  # checked before anything is written
        import shutil

        from uvlm.suites.cluster import ClusterSettings

        flags = {"executor": executor, "partition": partition, "time_min": time_min,
                 "gpus_per_run": gpus_per_run, "cpus_per_run": cpus_per_run}
        settings = (ClusterSettings.from_yaml(cluster_config, **flags) if cluster_config else
                    ClusterSettings(**{k: v for k, v in flags.items() if v is not None}))
        if settings.executor == "slurm" and shutil.which("sbatch") is None:
            raise UvlmError("--executor slurm needs SLURM (sbatch is not on this machine's PATH): run it on the "
                            "cluster's login node, or try the path here with --executor submitit-local")
    from uvlm.suites.runner import is_done

    pending = [j.config for j in jobs if not is_done(out, j)]
    if settings is None or settings.executor == "submitit-local":  # runs on this machine
        for device in sorted({c["train"].get("device", "auto") for c in pending}):
            require_device(device)  # a GPU preset where torch sees none: refused here, first, as `uvlm train` does
    if settings is None:  # this machine trains them: has it their encoders, and room for `workers` of them?
        from uvlm.suites import children
        from uvlm.suites.runner import check_encoder_weights

        if pending:
            children.start_fork_server()  # its imports overlap this process's checks: seconds sooner a suite
        from uvlm.train.config import from_dict
        from uvlm.train.memory import check_host_memory

        largest = max(jobs, key=lambda j: j.config["model"].get("hidden_size", 0) * j.config["model"].get("layers", 0))
        check_host_memory(from_dict(largest.config), min(local_workers, len({j.key for j in jobs})))
        check_encoder_weights(jobs, preset)  # after memory: a 7B on a CPU is refused for that first
    make_folder(out, "results")
    claim_results(out, tuple(set_ or ()), preset)
    if variants is not None:
        from uvlm.suites.variants import record_variants

        record_variants(out, own)
    if settings is not None:
        from uvlm.suites.cluster import submit_suite

        with exclusive(out, "suite run (`uvlm suite run` or `uvlm demo`)"):
            sweep_temporaries(out, skip=("runs",))
            record_jobs(out, jobs)
            submit_suite(jobs, out, settings, echo=typer.echo, wait=wait)
        if not wait:
            return
    else:
        from uvlm.suites.presets import pretraining_line

        if first := pretraining_line(pending, preset):
            typer.echo(first)
        run_suite(jobs, out, local_workers, echo=typer.echo, gpus=gpu_count(),
                  gpus_per_run=gpus_per_run)
    typer.echo(f"{name}: {len({j.key for j in jobs})} runs done in {out}; `uvlm report {out}` writes the report")
