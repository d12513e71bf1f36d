"""The `uvlm` command line. Bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from uvlm.cli_llava import llava_app
from uvlm.errors import UvlmError
from uvlm.io import read_text_file
from uvlm.progress import quiet_libraries, shown

app = typer.Typer(help="Unified vision-language model studies (arXiv 2505.23043).\n\n"
                       "Example: uvlm suite run mutual --preset cpu2 --seeds 3 --out results-cpu2",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Render, inspect and export SmartWatch datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
suite_app = typer.Typer(help="Run the paper's experiments as suites of runs.", no_args_is_help=True)
app.add_typer(suite_app, name="suite")
pretrain_app = typer.Typer(help="Train (once, then cached) the CPU-scale encoders and the judge.",
                           no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(llava_app, name="llava")
console = Console(stderr=True)


def split_counts(split: str, images: int | None, vqa: int | None, captions: int | None,
                 generations: int | None) -> dict[str, int]:
    """Record counts from --images and the per-task overrides.

    train: N VQA + N caption + N generation records over N shared images (the paper's mix).
    test: N single-turn VQA and generation records, 2:1 as in the paper (1000 + 500 for
    N = 1500, the default), each with its own image. pretrain: N captioned images.
    """
    if images is not None and images <= 0:
        raise UvlmError(f"--images {images} must be positive")
    if split == "test":
        n = 1500 if images is None else images
        base = {"vqa": round(2 * n / 3), "caption": 0, "generation": n - round(2 * n / 3)}
    elif images is None and None in (vqa, captions, generations):
        raise UvlmError("give --images N (or all of --vqa, --captions and --generations)")
    elif split == "pretrain":
        base = {"vqa": 0, "caption": images or 0, "generation": 0}
    else:
        base = dict.fromkeys(("vqa", "caption", "generation"), images or 0)
    for task, override in (("vqa", vqa), ("caption", captions), ("generation", generations)):
        if override is not None:
            base[task] = override
    return base


@data_app.command("smartwatch")
def data_smartwatch(
    out: Annotated[Path, typer.Option(help="Dataset folder to write (created; resumed if partial).")],
    images: Annotated[int | None, typer.Option(help="Images; train: N records of each task.")] = None,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same bytes.")] = 0,
    size: Annotated[int, typer.Option(help="Image size in px (>= 64; the paper's is 224).")] = 224,
    split: Annotated[str, typer.Option(help="train | test | pretrain (disjoint image pools).")] = "train",
    bias: Annotated[str | None, typer.Option(help="weather | battery: hide it from understanding.")] = None,
    bias_vqa_prob: Annotated[float, typer.Option(help="Share of VQA records asking the biased one.")] = 0.05,
    vqa: Annotated[int | None, typer.Option(help="VQA records (overrides --images).")] = None,
    captions: Annotated[int | None, typer.Option(help="Caption records (overrides --images).")] = None,
    generations: Annotated[int | None, typer.Option(help="Generation records (overrides --images).")] = None,
    detail_scale: Annotated[float, typer.Option(help="Icon, gauge and text scale vs the paper's.")] = 1.0,
    face_radius: Annotated[float, typer.Option(help="Watch face radius as a fraction of the size.")] = 0.4,
    hand_scale: Annotated[float, typer.Option(help="Clock hand width scale vs the paper's.")] = 1.0,
    hours: Annotated[str, typer.Option(help="1-12 (one label an image) or 0-12 (the authors').")] = "1-12",
    extra_turn_prob: Annotated[float, typer.Option(help="Probability of each of 3 extra VQA turns.")] = 0.4,
    workers: Annotated[int, typer.Option(help="Rendering processes (output is identical for any).")] = 1,
) -> None:
    """Render a SmartWatch dataset: images/, records.jsonl and manifest.json.

    Example: uvlm data smartwatch --out sw-train --images 1000 --size 64
    """
    from uvlm.data.folder import build_dataset
    from uvlm.data.mixture import MixtureConfig

    counts = split_counts(split, images, vqa, captions, generations)
    cfg = MixtureConfig(seed=seed, split=split, n_vqa=counts["vqa"], n_caption=counts["caption"],
                        n_generation=counts["generation"], size=size, detail_scale=detail_scale,
                        face_radius=face_radius, hand_scale=hand_scale, hours=hours, bias=bias,
                        bias_vqa_prob=bias_vqa_prob, extra_turn_prob=extra_turn_prob, share_images=split != "test")
    with shown("rendering") as update:
        manifest = build_dataset(cfg, out, workers, update, verify=True)
    c = manifest["counts"]
    typer.echo(f"{out}: {c['images']} images, {c['vqa']} VQA, {c['caption']} caption, "
               f"{c['generation']} generation records")


@data_app.command("celeba")
def data_celeba(
    celeba: Annotated[Path, typer.Option(help="Your copy of CelebA: the official folder (img_align_celeba/, "
                                              "list_*.txt), torchvision's, or the parquet export.")],
    out: Annotated[Path, typer.Option(help="Dataset folder to write (created; resumed if partial).")],
    images: Annotated[int | None, typer.Option(help="Images; train: N records of each task.")] = None,
    seed: Annotated[int, typer.Option(help="Seed: same seed and same copy, same bytes.")] = 0,
    size: Annotated[int, typer.Option(help="Image size in px (the paper's is 224).")] = 64,
    split: Annotated[str, typer.Option(help="train | test (CelebA's official partitions, disjoint).")] = "train",
    crop: Annotated[str, typer.Option(help="face (the 178-px square from the top) | full.")] = "face",
    sampling: Annotated[str, typer.Option(help="uniform (each attribute yes/no at 1/2) | data (CelebA's own "
                                               "frequencies).")] = "uniform",
    bias: Annotated[str | None, typer.Option(help="An attribute to hide from understanding, e.g. "
                                                  "Eyeglasses.")] = None,
    bias_vqa_prob: Annotated[float, typer.Option(help="Share of VQA records asking the biased one.")] = 0.05,
    vqa: Annotated[int | None, typer.Option(help="VQA records (overrides --images).")] = None,
    captions: Annotated[int | None, typer.Option(help="Caption records (overrides --images).")] = None,
    generations: Annotated[int | None, typer.Option(help="Generation records (overrides --images).")] = None,
    workers: Annotated[int, typer.Option(help="Processes (output is identical for any).")] = 1,
) -> None:
    """Build a CelebA dataset (the paper's seven attributes): images/, records.jsonl, manifest.json.

    Example: uvlm data celeba --celeba ~/data/celeba --out celeba-train --images 1000
    """
    from uvlm.data.celeba import read_celeba
    from uvlm.data.faces import FaceMixtureConfig, Faces
    from uvlm.data.folder import build_folder

    if split == "pretrain":
        raise UvlmError("CelebA has no pretrain split; use train or test")
    counts = split_counts(split, images, vqa, captions, generations)
    cfg = FaceMixtureConfig(seed=seed, split=split, n_vqa=counts["vqa"], n_caption=counts["caption"],
                            n_generation=counts["generation"], size=size, crop=crop, sampling=sampling, bias=bias,
                            bias_vqa_prob=bias_vqa_prob, share_images=split != "test")
    from uvlm.resources import check_dataset

    check_dataset(cfg.n_images, sum(cfg.counts.values()), size, workers, out)  # before images are drawn
    domain = Faces.of(cfg, read_celeba(celeba))
    with shown("cropping") as update:
        manifest = build_folder(domain, out, workers, update, verify=True)
    c = manifest["counts"]
    typer.echo(f"{out}: {c['images']} images, {c['vqa']} VQA, {c['caption']} caption, "
               f"{c['generation']} generation records; {manifest['celeba']['redrawn_share']:.1%} of draws "
               "had no image and were drawn again")


@data_app.command("gallery")
def data_gallery(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Option(help="PNG file to write.")],
    n: Annotated[int, typer.Option(help="Number of images.")] = 16,
    columns: Annotated[int, typer.Option(help="Images per row.")] = 4,
) -> None:
    """Write a grid of samples with their ground truth printed under each.

    Example: uvlm data gallery sw-train --out gallery.png --n 16
    """
    from uvlm.data.gallery import gallery

    k = gallery(root, out, n, columns)
    typer.echo(f"{out}: {k} images")


@data_app.command("export-llava")
def data_export_llava(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Path, typer.Argument(help="JSON file to write.")],
) -> None:
    """Write the records as one JSON list, the layout LLaVA-derived trainers read.

    Example: uvlm data export-llava sw-train sw-train.json
    """
    from uvlm.data.folder import export_llava

    typer.echo(f"{out}: {export_llava(root, out)} records")


@app.command("score")
def score(
    file: Annotated[Path, typer.Argument(help="JSONL: attribute, ground_truth, answer per line.")],
) -> None:
    """Score VQA answers as the paper does; print one JSON object (percent).

    Example: uvlm score answers.jsonl
    """
    from uvlm.eval.vqa import ALL_ATTRIBUTES, check_truth, score_items

    text = read_text_file(file, "answers file")
    items = []
    for k, line in enumerate(text.split("\n"), start=1):  # JSON lines end at \n only (not U+2028)
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise ValueError("not an object")
            for key in ("attribute", "ground_truth", "answer"):
                if not isinstance(item.get(key), str):
                    raise ValueError(f"needs a string {key!r}")
            if item["attribute"] not in ALL_ATTRIBUTES:
                raise ValueError(f"attribute {item['attribute']!r} is not one of {', '.join(ALL_ATTRIBUTES)}")
            check_truth(item["attribute"], item["ground_truth"])
        except ValueError as e:
            raise UvlmError(f"{file} line {k}: {e}") from None
        items.append(item)
    if not items:
        raise UvlmError(f"{file} holds no answers; give one JSON object a line")
    try:
        result = score_items(items)
    except ValueError as e:
        raise UvlmError(f"{file}: {e}") from None
    typer.echo(json.dumps(result))


def _run_pretrain(kind: str, preset: str, rebuild: bool, steps: int | None, seed: int | None) -> None:
    from dataclasses import replace

    from uvlm.suites.presets import pretrained_stand_in, stand_in_configs
    from uvlm.vision import pretrain

    cfg = stand_in_configs(preset, (kind,))[kind]
    if steps is not None:
        if steps < 1:
            raise UvlmError(f"--steps {steps} must be >= 1")
        cfg = replace(cfg, steps=steps)
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    with shown(f"pretrain {kind}") as update:
        _, info = pretrained_stand_in(kind, cfg, update, rebuild=rebuild)
    what = "judge" if kind == "judge" else f"{kind} stand-in"
    took = f"pretrained in {info['train_seconds'] / 60:.1f} min" if "train_seconds" in info else "pretrained"
    typer.echo(f"{preset}'s {what} is ready ({took}, cached for every run that loads it); "
               f"{pretrain.quality_line(info)}")


def _pretrain_command(kind: str, doc: str):
    def command(
        preset: Annotated[str, typer.Option(help="The preset whose runs load it: cpu | cpu2 (paper: the "
                                                 "224 px judge only; its encoders are the real ones).")] = "cpu",
        rebuild: Annotated[bool, typer.Option(help="Train again even if cached.")] = False,
        steps: Annotated[int | None, typer.Option(help="Training steps (default: the preset's).")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed of the pool and the weights.")] = None,
    ) -> None:
        _run_pretrain(kind, preset, rebuild, steps, seed)

    command.__doc__ = f"{doc}\n\n    Example: uvlm pretrain {kind} --preset cpu2\n    "
    return command


for _kind, _doc in (
    ("vq", "The VQ stand-in: LlamaGen architecture, small, trained on SmartWatch renders."),
    ("siglip", "The SigLIP stand-in: a small SiglipModel trained with the sigmoid loss on captions."),
    ("judge", "The pixel judge: a small CNN that reads every attribute from a generated image."),
):
    pretrain_app.command(_kind)(_pretrain_command(_kind, _doc))


@app.command("train")
def train_command(
    config: Annotated[Path | None, typer.Option(help="YAML run config (configs/cpu/*.yaml).")] = None,
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("runs/run"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
) -> None:
    """Train one model of the paper's family (the name in the config picks the row).

    Example: uvlm train --config configs/cpu2/VQ-VQ.yaml --out runs/VQ-VQ --set train.seed=1
    """
    from uvlm.eval.evaluate import eval_point
    from uvlm.train.config import load_config
    from uvlm.train.loop import train

    cfg = load_config(config, set_ or [])
    with shown(f"train {cfg.model.name}") as update:
        summary = train(cfg, out, resume, update, eval_point)
    if os.environ.get("RANK", "0") == "0":  # under torchrun / accelerate launch, one line, not one per process
        typer.echo(f"{out}: {summary['steps']} steps, final loss {summary['final'].get('loss')}")


@app.command("plan")
def plan_command(
    config: Annotated[Path, typer.Argument(help="YAML run config (configs/paper/*.yaml).")],
    gpu_mem: Annotated[float | None, typer.Option(help="GPU memory in GB to plan for (default: this machine's "
                                                        "GPU; none: no limit).")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs the run's global batch is spread over.")] = 1,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value.")] = None,
) -> None:
    """Print a run's memory plan: parameters, memory per device and the micro-batch it will use.

    Example: uvlm plan configs/paper/VQ-VQ.yaml --gpus 8 --gpu-mem 80
    """
    from uvlm.train.config import load_config
    from uvlm.train.memory import describe_plan, planned_layout

    cfg = load_config(config, set_ or [])
    layout, text_source = planned_layout(cfg)
    rows = describe_plan(cfg, layout, f"text measured with {text_source}", gpus, gpu_mem)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


@app.command("eval")
def eval_command(
    run: Annotated[Path, typer.Argument(help="Run folder (from uvlm train).")],
    checkpoint: Annotated[int | None, typer.Option(help="A checkpoint step instead of the final weights.")] = None,
    show: Annotated[int, typer.Option(help="Write a sheet of N generated images and N answered test images.")] = 0,
    inception_weights: Annotated[Path | None, typer.Option(
        help="pytorch-fid / torch-fidelity Inception weights file: adds the paper's Inception FID.")] = None,
    temperature: Annotated[float, typer.Option(help="VQ ids: 0 = greedy, else sampled.")] = 0.0,
    top_k: Annotated[int, typer.Option(help="VQ ids: sample from the k most likely (0 = all).")] = 0,
    cfg_scale: Annotated[float, typer.Option(help="Classifier-free guidance scale (1 = none).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 0,
    open_image: Annotated[bool, typer.Option(help="Start every generation answer at <boi>: decode an image even "
                                                  "where the model would not open one.")] = False,
) -> None:
    """Score a run on the whole test set: VQA accuracy, judged generation, FID/KID.

    Writes RUN/eval/ (final weights, greedy); a checkpoint or sampling gets its own folder.

    Example: uvlm eval runs/VQ-VQ --show 8
    """
    import math

    from uvlm.eval.decode import Sampling
    from uvlm.eval.evaluate import evaluate_run

    if not (math.isfinite(temperature) and math.isfinite(cfg_scale)):
        raise UvlmError("--temperature and --cfg-scale must be finite numbers")
    if show < 0:
        raise UvlmError(f"--show {show} must be >= 0")
    if temperature < 0 or top_k < 0 or cfg_scale <= 0:
        raise UvlmError("--temperature and --top-k must be >= 0 and --cfg-scale > 0")
    sampling = Sampling(temperature, top_k, cfg_scale, seed)
    metrics = evaluate_run(run, checkpoint, show, inception_weights,
                           None if sampling == Sampling() else sampling, open_image)
    typer.echo(json.dumps({k: metrics[k] for k in ("vqa", "gen")}, indent=1))


# The defaults are runner.PROBE_SPLIT, written out: importing the suites at start-up costs seconds.
@app.command("probe")
def probe_command(
    run: Annotated[Path, typer.Argument(help="SmartWatch run folder (from uvlm train) of a model that reads "
                                             "images, with its final weights.")],
    train_images: Annotated[int, typer.Option(help="Images the linear probe is fitted on (>= 30).")] = 4000,
    test_images: Annotated[int, typer.Option(help="Images it is scored on.")] = 1000,
) -> None:
    """Fig 7: how well a linear probe reads the weather from the understanding adapter's output
    at the weather icon's patch, on fresh renders. Writes RUN/probe/ (accuracy and a t-SNE); other
    counts than the paper's 4,000 / 1,000 write RUN/probe-TRAIN-TEST/, which the report leaves out.

    Example: uvlm probe runs/VQ-VQ-weather
    """
    from uvlm.suites.probe import adapter_probe
    from uvlm.suites.runner import probe_folder

    if train_images < 30 or test_images < 1:  # fewer fit images may not hold every weather
        raise UvlmError(f"--train-images {train_images} must be >= 30 and --test-images {test_images} >= 1")
    result = adapter_probe(run, train_images, test_images)
    typer.echo(f"weather probe accuracy: {result['weather_probe_acc']:.1f}% on {test_images} test images "
               f"({probe_folder(run, train_images, test_images)})")


# The suite commands' shared arguments.
SuiteName = Annotated[str, typer.Argument(help="mutual | affine | scaling | transfer-weather | transfer-battery | "
                                               "probe | all")]
Preset = Annotated[str | None, typer.Option(help="cpu | cpu2 | paper | smol | smol-standin (see "
                                                 "docs/models-and-training.md); default: the --out folder's, else cpu")]
Seeds = Annotated[int, typer.Option(help="Seeds per cell.")]
Results = Annotated[Path, typer.Option(help="Results folder (shared by suites).")]
Workers = Annotated[int | None, typer.Option(help="Runs at a time (default: one per GPU, or per core without).")]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Change every run's config: section.key=value.")]
Rows = Annotated[str | None, typer.Option(help="Only these rows, comma-separated (controls and sweep points "
                                               "included), e.g. VQ-VQ,VQ_u.")]
GpusPerRun = Annotated[int, typer.Option(help="GPUs each run trains across (one process per GPU); evaluation "
                                              "uses the first. Ignored without GPUs.")]
Dataset = Annotated[str, typer.Option(help="smartwatch | celeba (affine only: Table 1's CelebA half; needs --celeba).")]
CelebaCopy = Annotated[Path | None, typer.Option(help="Your copy of CelebA (as for `uvlm data celeba`), for "
                                                      "--dataset celeba.")]


def _jobs(name: str, preset: str, seeds: int, overrides: list[str] | None, rows: str | None,
          dataset: str = "smartwatch", celeba: Path | None = None) -> list:
    """A suite's jobs under the command line's --set, --rows, --dataset and --celeba."""
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
    return expand(name, preset, seeds, tuple(overrides or ()), only, str(celeba) if celeba else None)


def _preset(preset: str | None, out: Path) -> str:
    """The preset of a suite command: as given (refused by a results folder holding another's runs),
    else the folder's, else cpu."""
    from uvlm.suites.runner import check_preset, preset_of

    if preset is None:
        return preset_of(out) if (Path(out) / "jobs.json").exists() else "cpu"
    check_preset(out, preset)
    return preset


def _workers(workers: int | None, gpus_per_run: int = 1) -> int:
    """A suite's runs at a time: on a GPU machine one per `gpus_per_run` GPUs, else one per core,
    unless given."""
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
        return gpus // gpus_per_run if gpus else cpu_count()
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
) -> None:
    """Show how far a suite has got, seed by seed, and about how long the rest would take; with a
    cluster executor, the state of each submitted run's job.

    Example: uvlm suite status mutual --out results-cpu2
    """
    from uvlm.suites.presets import MEASURED_SECONDS_PER_RECORD, pretraining_line
    from uvlm.suites.runner import is_done, overrides_of, suite_status

    workers = _workers(workers, gpus_per_run)
    preset = _preset(preset, out)
    if not set_ and out.is_dir():  # the folder's own study: the --set its runs were made with
        set_ = overrides_of(out)
    jobs = _jobs(name, preset, seeds, set_, rows, dataset, celeba)
    status = suite_status(jobs, out)
    left = 0
    for seed, counts in status["seeds"].items():
        typer.echo(f"seed {seed}: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
        left += counts["started"] + counts["to run"]
    rate, source = status["seconds_per_record"], "time scaled by each run's records"
    if rate is None and preset in MEASURED_SECONDS_PER_RECORD:
        rate, source = MEASURED_SECONDS_PER_RECORD[preset], f"at the committed {preset} runs' speed"
    if left and (first := pretraining_line([j.config for j in jobs if not is_done(out, j)], preset)):
        typer.echo(first)
    if not left:
        typer.echo(f"{name}: every run is done")
    elif rate is None:
        typer.echo(f"{name}: {left} runs left; no finished run to estimate their time from")
    else:
        hours = status["records_left"] * rate / 3600
        median = status["median_wall_seconds"]
        typer.echo(f"{name}: {left} runs left, at most about {hours:.1f} h of one core "
                   f"({hours / min(workers, left):.1f} h with {workers} at a time; "
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
    preset: Annotated[str, typer.Option(help="cpu | cpu2 | paper | smol | smol-standin.")] = "cpu2",
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
        typer.echo(f"{name:<17} {SUITE_TITLES[name]}: {len(jobs)} runs at {seeds} seeds, {cost}")
    every = list({j.key: j for j in _jobs("all", preset, seeds, None, None, "smartwatch", None)}.values())
    typer.echo(f"{'all':<17} the whole SmartWatch grid (`uvlm suite run all --preset {preset} --seeds {seeds}`): "
               f"{len(every)} runs" + (f", about {sum(j.records for j in every) * rate / 3600:.0f} h of one core"
                                       if rate else ""))
    if rate:
        typer.echo(f"(times at the committed {preset} runs' speed: {rate * 1000:.1f} ms a training record, "
                   "evaluation included, one thread a run; suites share runs, so `all` takes less than the sum)")


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
    the overrides of its first suite, so use one folder per setting. On a cluster (--executor
    slurm) each run is a job; the results folder must be on a file system the nodes share.

    Example: uvlm suite run mutual --preset cpu2 --seeds 3 --out results-cpu2
    """
    from uvlm.device import gpu_count
    from uvlm.io import exclusive, make_folder, sweep_temporaries
    from uvlm.suites.runner import claim_results, record_jobs, run_suite

    preset = _preset(preset, out)
    jobs = _jobs(name, preset, seeds, set_, rows, dataset, celeba)
    local_workers = _workers(workers, gpus_per_run) if executor == "local" else 0
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
    if settings is None:  # this machine trains them: has it their encoders, and room for `workers` of them?
        from uvlm.suites.runner import check_encoder_weights
        from uvlm.train.config import from_dict
        from uvlm.train.memory import check_host_memory

        largest = max(jobs, key=lambda j: j.config["model"].get("hidden_size", 0) * j.config["model"].get("layers", 0))
        check_host_memory(from_dict(largest.config), min(local_workers, len({j.key for j in jobs})))
        check_encoder_weights(jobs, preset)  # after memory: a 7B on a CPU is refused for that first
    make_folder(out, "results")
    claim_results(out, tuple(set_ or ()), preset)
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
        from uvlm.suites.runner import is_done

        if first := pretraining_line([j.config for j in jobs if not is_done(out, j)], preset):
            typer.echo(first)
        run_suite(jobs, out, local_workers, echo=typer.echo, gpus=gpu_count(),
                  gpus_per_run=gpus_per_run)
    typer.echo(f"{name}: {len({j.key for j in jobs})} runs done in {out}; `uvlm report {out}` writes the report")


@app.command("report")
def report_command(
    results: Annotated[Path, typer.Argument(help="Results folder of `uvlm suite run`.")],
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("report"),
) -> None:
    """Write the report: our tables beside the paper's, verdicts, figures.

    Example: uvlm report results-cpu2 --out report-cpu2
    """
    from uvlm.suites.report import write_report

    typer.echo(f"report: {write_report(results, out)}")


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's data and report.")] = Path("demo"),
) -> None:
    """Run the CPU-scale demo and print where its outputs are.

    Example: uvlm demo --out demo
    """
    from uvlm.suites.demo import run_demo

    report = run_demo(out, echo=typer.echo)
    typer.echo(f"demo report: {report}")


def _refuse_empty_arguments(args: list[str]) -> None:
    """An empty value (`--celeba ""`, `--out=`) would reach a path option as "." (the current
    folder, searched or written into); no uvlm argument is ever empty."""
    for i, arg in enumerate(args):
        if arg.startswith("--") and arg.endswith("="):
            raise UvlmError(f"{arg[:-1]} is empty; give it a value")
        if arg == "":
            before = args[i - 1] if i else ""
            name = before if before.startswith("--") else f"an argument after `{before or 'uvlm'}`"
            raise UvlmError(f"{name} is empty; give it a value")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line and exit code 2."""
    command = typer.main.get_command(app)
    quiet_libraries()
    try:
        _refuse_empty_arguments(sys.argv[1:] if argv is None else argv)
        code = command.main(args=argv, prog_name="uvlm", standalone_mode=False)
    except UvlmError as e:
        print(f"uvlm: error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # the machine said no: a read-only or full disk, a path under a file, ...
        where = f" {e.filename}" if e.filename else ""
        print(f"uvlm: error: cannot use{where}: {e.strerror or e}; check the path, its permissions and free disk",
              file=sys.stderr)
        sys.exit(2)
    except RecursionError:  # a JSON or YAML file nested thousands deep
        print("uvlm: error: a file given or read is nested too deeply to be read; check it is the file meant",
              file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("uvlm: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.TyperException as e:  # typer's own usage errors: bad types, missing options
        print(f"uvlm: error: {e.format_message()} (see --help)", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
