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
from uvlm.cli_suite import suite_app
from uvlm.errors import UvlmError
from uvlm.io import read_text_file
from uvlm.progress import quiet_libraries, shown

app = typer.Typer(help="Unified vision-language model studies (arXiv 2505.23043).\n\n"
                       "Example: uvlm suite run mutual --preset cpu2 --seeds 3 --out results-cpu2",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Render, inspect and export SmartWatch datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
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
        preset: Annotated[str, typer.Option(help="The preset whose runs load it: cpu | cpu2 | cpu2-smol | "
                                                 "smol-standin (paper, smol: the 224 px judge only; their "
                                                 "encoders are the real ones).")] = "cpu",
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




@app.command("report")
def report_command(
    results: Annotated[Path, typer.Argument(help="Results folder of `uvlm suite run`.")],
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("report"),
    variants: Annotated[Path | None, typer.Option(help="A variants file whose rows and comparisons join the "
                                                       "results folder's own (docs/variants.md).")] = None,
) -> None:
    """Write the report: our tables beside the paper's, verdicts, figures.

    Example: uvlm report results-cpu2 --out report-cpu2
    """
    from uvlm.suites.report import write_report

    typer.echo(f"report: {write_report(results, out, variants=variants)}")


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
