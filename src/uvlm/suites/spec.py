"""Which runs each suite needs: the paper's tables expanded into jobs.

A job is one training run plus its evaluation (and for Fig 7 a probe of it). Its folder
name is its label and a hash of its config, so a run that two suites share (SigLIP_u appears
in A3 and Table 1) is trained once. Every comparison of a unified model with its `_u` model
also gets a step-matched control: the `_u` model trained for as many optimizer steps as the
unified one, its understanding data repeated, so that "more steps" is never mistaken for
"generation helps".
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, replace
from functools import cached_property

from uvlm.errors import UvlmError
from uvlm.model.names import parse_name
from uvlm.resources import check_job_count
from uvlm.suites.presets import A3_ROWS, BIASED_ROWS, celeba_data, known_preset, row_config
from uvlm.train.config import RunConfig, apply_override, from_dict
from uvlm.train.data import TASKS_OF, dataset_config
from uvlm.vision.cache import config_hash

SUITES = ("mutual", "affine", "scaling", "transfer-weather", "transfer-battery", "probe")
CELEBA_SUITES = ("mutual", "affine", "scaling")  # the experiments the paper also runs on CelebA (Fig 3, Table 1, Fig 4)
SUITE_TITLES = {"mutual": "Table A3 and Fig 3: mutual benefit, with step-matched controls",
                "affine": "Table 1: the affine distortion of the input space",
                "scaling": "Table A4: scaling understanding and generation data",
                "transfer-weather": "Table A5 and Fig 7: weather hidden from understanding, with a dose sweep",
                "transfer-battery": "Table A6: battery hidden from understanding, with a dose sweep",
                "probe": "Fig 7's probe on the understanding-only and unified rows"}
AFFINE_ROWS = ("SigLIP_u", "SigLIP*_u", "VQ_u", "VQ*_u", "VQ_g", "SigLIP-SigLIP", "SigLIP*-SigLIP", "VQ-VQ",
               "VQ*-VQ")
PROBE_ROWS = ("SigLIP_u", "SigLIP-SigLIP", "VQ_u", "VQ-VQ")
DOSES = (0.0, 0.01, 0.05, 0.2)
DOSE_PAIRS = (("SigLIP-SigLIP", "SigLIP_u"), ("VQ-VQ", "VQ_u"))  # (unified, understanding-only)
DOSE_ROWS = tuple(name for unified, understanding in DOSE_PAIRS for name in (understanding, unified))
# Table A4 (paper section 4.1), in thousands of records: understanding swept with 60K
# generation, and generation swept with 120K understanding, for VQ-VQ and SigLIP-VQ. Scaled
# by the preset's default counts (the paper's 120K + 60K mix).
SCALING_ROWS = ("VQ-VQ", "SigLIP-VQ")
SCALING_UND = (0, 120, 180, 240, 300)
SCALING_GEN = (0, 60, 90, 120, 180)
PAPER_UND, PAPER_GEN = 120, 60


@dataclass(frozen=True)
class Job:
    table: str  # "A3", "T1", "A4", "A5", "A6", "dose-weather", "fig7", ...
    label: str  # the row: a paper name, or "VQ_u (step-matched)", or a sweep point
    seed: int
    config: dict
    probe: bool = False  # after its evaluation, probe the run's understanding adapter (Fig 7)
    variant: str = ""  # the researcher's variant it belongs to (uvlm.suites.variants); "" for the paper's rows
    folder: str = ""  # the name its run already has in a results folder (runner.with_folders); "" for a new one

    @property
    def row(self) -> str:
        """What `--rows` names it by: its variant, else its model (sweep points and controls included)."""
        return self.variant or self.label.split(" ")[0]

    @cached_property  # validated once per job, for its key and its size alike
    def resolved(self) -> RunConfig:
        return from_dict(self.config)

    @cached_property
    def identity(self) -> str:
        """What makes two jobs one run: the seed and a hash of the resolved config, defaults
        included, so that a changed default (in code) never passes an old run off as a current one."""
        return f"s{self.seed}-{config_hash(self.resolved.identity())[:8]}"

    @property
    def key(self) -> str:
        """The run folder's name: the row label, slugged, then its identity
        (`SigLIP_u-step-matched-s0-583d8c93`); identical configs, across tables and suites, share
        one run, named by the job that made it (older folders by the model alone: `SigLIP_u-s0-583d8c93`)."""
        return self.folder or f"{slug(self.label)}-{self.identity}"

    @cached_property
    def records(self) -> int:
        return planned_records(self.resolved)


def slug(label: str) -> str:
    """A row label as a folder name: `VQ_u p=0.2 (step-matched)` -> `VQ_u-p-0.2-step-matched`."""
    return re.sub(r"[^A-Za-z0-9_.+]+", "-", label.replace("*", "star")).strip("-")[:80]


def identity_of(folder: str) -> str:
    """The identity (`s0-583d8c93`) a run folder's name ends with, old names and new alike."""
    return "-".join(folder.rsplit("-", 2)[-2:])


def planned_records(cfg: RunConfig, tasks: str | None = None) -> int:
    """The training records a run config sees, epochs included: what its run time grows with
    (the scaling sweep's runs train up to twice the default mix). `tasks`: count as if the
    model trained on these ("both", "understanding", "generation") instead of its own."""
    counts = dataset_config(cfg.data.train).counts
    tasks = TASKS_OF[tasks or parse_name(cfg.model.name).tasks]
    return math.ceil(cfg.train.epochs * sum(counts[t] for t in tasks))


def planned_steps(cfg: RunConfig, tasks: str | None = None) -> int:
    """The optimizer steps a run config takes, counted as the training loop counts them."""
    return math.ceil(planned_records(cfg, tasks) / (cfg.train.global_batch or cfg.train.batch_size))


def seed_config(preset: str, name: str, mix: str, seed: int, overrides: tuple[str, ...],
                celeba: str | None = None) -> dict:
    """One row's config for one seed: the preset's (on CelebA when `celeba` names a copy), with the
    user's `--set` overrides on top (a suite's own sweep values, set after this, win over them)."""
    cfg = row_config(preset, name, mix)
    if celeba:
        cfg["data"].update(celeba_data(preset, celeba))
    for assignment in overrides:
        apply_override(cfg, assignment)
    cfg["train"]["seed"] = seed
    return cfg


def matched(label: str) -> str:
    """The row label of a run's step-matched `_u` control."""
    return f"{label} (step-matched)"


def step_matched(cfg: dict) -> dict:
    """A `_u` config trained for exactly the optimizer steps its unified counterpart (the same
    config and mix, trained on the generation records too) takes, whatever `--set` changed
    (epochs, batch, counts): its understanding data repeated, every step a full global batch."""
    resolved = from_dict(cfg)
    records = planned_steps(resolved, "both") * (resolved.train.global_batch or resolved.train.batch_size)
    counts = dataset_config(resolved.data.train).counts
    understanding = sum(counts[t] for t in TASKS_OF["understanding"])
    epochs = records / understanding
    while math.ceil(epochs * understanding) > records:  # float rounding must not add a step
        epochs = math.nextafter(epochs, 0)
    cfg = copy.deepcopy(cfg)
    cfg["train"]["epochs"] = epochs
    return cfg


def _rows(table: str, mix: str, names, preset: str, seeds: int, overrides: tuple[str, ...],
          controls: bool = True, celeba: str | None = None, probe: bool = False) -> list[Job]:
    jobs = []
    for name in names:
        for seed in range(seeds):
            cfg = seed_config(preset, name, mix, seed, overrides, celeba)
            jobs.append(Job(table, name, seed, cfg, probe))
            if controls and parse_name(name).tasks == "understanding":
                jobs.append(Job(table, matched(name), seed, step_matched(cfg)))
    return jobs


def scaling_model(name: str, und_k: int, gen_k: int) -> str:
    """The model a sweep point trains: without understanding data a unified model is its
    generation-only model, without generation data its understanding-only one."""
    enc, dec = name.split("-")
    return f"{dec}_g" if und_k == 0 else f"{enc}_u" if gen_k == 0 else name


def scaling_label(name: str, und_k: int, gen_k: int) -> str:
    return f"{scaling_model(name, und_k, gen_k)} und {und_k}K gen {gen_k}K"


def matched_label(name: str, und_k: int, gen_k: int) -> str:
    """The step-matched `_u` control of a generation-sweep point."""
    return matched(f"{scaling_model(name, und_k, 0)} und {und_k}K gen {gen_k}K")


def scaling_curves(name: str) -> dict[str, list[tuple[int, str]]]:
    """Each sweep of a unified model as (thousands of records, row label), in order."""
    return {"und": [(u, scaling_label(name, u, PAPER_GEN)) for u in SCALING_UND],
            "gen": [(g, scaling_label(name, PAPER_UND, g)) for g in SCALING_GEN]}


def scaling_rows() -> list[str]:
    """Table A4's row labels in sweep order, each once, every control after its point."""
    rows: list[str] = []
    for name in SCALING_ROWS:
        curves = scaling_curves(name)
        rows += [label for _, label in curves["und"]]
        for k, label in curves["gen"]:
            rows += [label, matched_label(name, PAPER_UND, k)] if k else [label]
    return list(dict.fromkeys(rows))


def _scaling(preset: str, seeds: int, overrides: tuple[str, ...], celeba: str | None = None) -> list[Job]:
    table = "A4-celeba" if celeba else "A4"
    points = [(u, PAPER_GEN) for u in SCALING_UND] + [(PAPER_UND, g) for g in SCALING_GEN if g != PAPER_GEN]
    jobs = []
    for name in SCALING_ROWS:
        for und_k, gen_k in points:
            for seed in range(seeds):
                # only the counts of the tasks a model trains on change, so the 0K points are
                # A3's own _u and _g runs (as in the paper, whose 0K cells repeat A3's)
                cfg = seed_config(preset, scaling_model(name, und_k, gen_k), "default", seed, overrides, celeba)
                # the default mix (the preset's counts, or --set's) stands for the paper's 120K + 60K:
                # each count scales by its own ratio, so the default point is the folder's A3 run
                train = cfg["data"]["train"]
                if und_k:
                    train.update({k: _scaled(train, k, und_k / PAPER_UND) for k in ("n_vqa", "n_caption")})
                if gen_k:
                    train["n_generation"] = _scaled(train, "n_generation", gen_k / PAPER_GEN)
                jobs.append(Job(table, scaling_label(name, und_k, gen_k), seed, cfg))
                if und_k == PAPER_UND and gen_k:
                    control = copy.deepcopy(cfg)
                    control["model"]["name"] = scaling_model(name, und_k, 0)
                    jobs.append(Job(table, matched_label(name, und_k, gen_k), seed, step_matched(control)))
    return jobs


def _scaled(train: dict, key: str, ratio: float) -> int:
    """A sweep point's count: the default mix's, times `ratio`, rounded half up."""
    if not train.get(key):
        raise UvlmError(f"the scaling suite scales data.train.{key}, which is {train.get(key)!r} here; give it a "
                        "positive count")
    return math.floor(train[key] * ratio + 0.5)


def dose_label(name: str, p: float) -> str:
    return f"{name} p={p}"


def _doses(bias: str, preset: str, seeds: int, overrides: tuple[str, ...]) -> list[Job]:
    jobs = []
    for p in DOSES:
        for name in DOSE_ROWS:
            for seed in range(seeds):
                cfg = seed_config(preset, name, f"{bias}-biased", seed, overrides)
                cfg["data"]["train"]["bias_vqa_prob"] = p
                jobs.append(Job(f"dose-{bias}", dose_label(name, p), seed, cfg))
                # at p = 0 no model is ever asked the attribute, so there is no transfer to control
                if p and parse_name(name).tasks == "understanding":
                    jobs.append(Job(f"dose-{bias}", matched(dose_label(name, p)), seed, step_matched(cfg)))
    return jobs


def expand(suite: str, preset: str = "cpu", seeds: int = 3, overrides: tuple[str, ...] = (),
           rows: tuple[str, ...] = (), celeba: str | None = None, variants=None) -> list[Job]:
    """The jobs of a suite (or `all`), deduplicated by run key.

    `overrides` (`section.key=value`) change every run's config; `rows` keeps only the runs of
    those rows (a model's step-matched controls and sweep points included; a full label such as
    `VQ-VQ p=0.2` keeps that point and its control); `celeba` (a path to a copy of CelebA) runs
    a suite's CelebA half (tables A3-celeba, T1-celeba, A4-celeba) instead of SmartWatch's; `variants`
    (uvlm.suites.variants.Variants) adds the researcher's rows of this suite's tables.
    """
    if celeba and suite not in CELEBA_SUITES:
        raise UvlmError(f"the {suite} suite has no CelebA half (the paper runs {', '.join(CELEBA_SUITES)} on CelebA); "
                        f"run it without --dataset celeba")
    known_preset(preset)
    if seeds < 1:
        raise UvlmError(f"--seeds {seeds} must be >= 1")
    overrides = tuple(overrides)
    if seeds > 1:  # the grid of one seed, times the seeds: refused before it is built if too large
        check_job_count(seeds * len(expand(suite, preset, 1, overrides, rows, celeba, variants)),
                        f"suite {suite} at {seeds} seeds")
    if suite == "all":
        jobs = [j for s in SUITES for j in expand(s, preset, seeds, overrides)]
    elif suite == "mutual":
        jobs = _rows("A3-celeba" if celeba else "A3", "default", A3_ROWS, preset, seeds, overrides, celeba=celeba)
    elif suite == "affine":
        jobs = _rows("T1-celeba" if celeba else "T1", "default", AFFINE_ROWS, preset, seeds, overrides,
                     controls=False, celeba=celeba)
    elif suite == "scaling":
        jobs = _scaling(preset, seeds, overrides, celeba)
    elif suite in ("transfer-weather", "transfer-battery"):
        bias = suite.split("-")[1]
        jobs = _rows("A5" if bias == "weather" else "A6", f"{bias}-biased", BIASED_ROWS, preset, seeds, overrides)
        jobs += _doses(bias, preset, seeds, overrides)
        if bias == "weather":  # Fig 7 probes A5's runs: done as each finishes, while its weights are here
            jobs += _probes(preset, seeds, overrides)
    elif suite == "probe":
        jobs = _probes(preset, seeds, overrides)
    else:
        raise UvlmError(f"unknown suite {suite!r}; use one of {', '.join(SUITES)} or all")
    if variants is not None and not celeba:
        jobs += variants.jobs(suite, preset, seeds, overrides)
    return _dedupe(_only(jobs, suite, rows) if rows else jobs)


def _probes(preset: str, seeds: int, overrides: tuple[str, ...]) -> list[Job]:
    """Fig 7: the weather-biased runs of the probe's rows, each probed after its evaluation."""
    return _rows("fig7", "weather-biased", PROBE_ROWS, preset, seeds, overrides, controls=False, probe=True)


def _only(jobs: list[Job], suite: str, rows: tuple[str, ...]) -> list[Job]:
    """The jobs of the given rows: a model's (its controls and sweep points too), a variant's, or
    one row label's (with its step-matched control)."""
    def picked(job: Job, row: str) -> bool:
        return row in (job.row, job.label, job.label.removesuffix(" (step-matched)"))

    unknown = [r for r in rows if not any(picked(j, r) for j in jobs)]
    if unknown:
        names = sorted({j.row for j in jobs})
        point = next((j.label for j in jobs if j.label != j.row and "(" not in j.label), None)
        example = f" (or one full row label, e.g. {point!r})" if point else ""
        raise UvlmError(f"--rows: {unknown[0]!r} is not a row of {suite}; its rows are {', '.join(names)}{example}")
    return [j for j in jobs if any(picked(j, r) for r in rows)]


def _dedupe(jobs: list[Job]) -> list[Job]:
    """One job per run and table; a run that tables share is named by its first job; a run that
    one table probes is probed whichever table's job runs it."""
    probed = {j.identity for j in jobs if j.probe}
    names: dict[str, str] = {}
    seen: dict[str, Job] = {}
    for j in jobs:
        j = replace(j, folder=names.setdefault(j.identity, j.key), probe=j.probe or j.identity in probed)
        seen.setdefault(f"{j.key} {j.table} {j.label}", j)  # two rows of one run keep both labels
    return list(seen.values())
