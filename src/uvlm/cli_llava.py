"""`uvlm llava ...`: Table 2's LLaVA-1.5 case, from its data to its benchmark scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

llava_app = typer.Typer(help="Table 2: LLaVA-1.5 trained with and without image-generation records.",
                        no_args_is_help=True)


@llava_app.command("data")
def llava_data(
    out: Annotated[Path, typer.Option(help="Folder to write stage1.json, stage2.json and their manifest into.")],
    sharegpt4v: Annotated[Path, typer.Option(help="share-captioner_coco_lcs_sam_1246k JSON (ShareGPT4V-PT).")],
    sharegpt4v_images: Annotated[Path, typer.Option(help="Folder its image paths are relative to.")],
    pretrain: Annotated[Path, typer.Option(help="LLaVA's 558K pretraining JSON (blip_laion_cc_sbu_558k.json).")],
    pretrain_images: Annotated[Path, typer.Option(help="Folder its image paths are relative to.")],
    instruct: Annotated[Path, typer.Option(help="LLaVA's instruction JSON (llava_v1_5_mix665k.json).")],
    instruct_images: Annotated[Path, typer.Option(help="Folder its image paths are relative to.")],
    n_stage1: Annotated[int, typer.Option(help="Generation records added to the pretraining file.")] = 150_000,
    n_stage2: Annotated[int, typer.Option(help="Generation records added to the instruction file.")] = 200_000,
    select: Annotated[str, typer.Option(help="first (file order, the release) | random (the paper).")] = "first",
    seed: Annotated[int, typer.Option(help="Seed of the random selection and of each record's prompt form.")] = 0,
    skip_bad_images: Annotated[bool, typer.Option(help="Leave out (and list) records whose image is missing "
                                                       "or unreadable, instead of stopping.")] = False,
    check: Annotated[str, typer.Option(help="open (the image header reads) | decode (every pixel; slower).")] = "open",
) -> None:
    """Write Table 2's two training files: LLaVA's with reversed ShareGPT4V captions added.

    Example: uvlm llava data --out llava-data --sharegpt4v sharegpt4v/share-captioner_coco_lcs_sam_1246k_1107.json
    --sharegpt4v-images sharegpt4v --pretrain LLaVA-Pretrain/blip_laion_cc_sbu_558k.json --pretrain-images
    LLaVA-Pretrain/images --instruct llava_v1_5_mix665k.json --instruct-images playground/data
    """
    from uvlm.data.llava_sources import LlavaDataConfig, LlavaSources, build_llava_data
    from uvlm.progress import shown

    sources = LlavaSources(sharegpt4v, sharegpt4v_images, pretrain, pretrain_images, instruct, instruct_images)
    cfg = LlavaDataConfig(n_stage1, n_stage2, select, seed, skip_bad_images, check)
    with shown("checking images") as update:
        manifest = build_llava_data(sources, out, cfg, lambda done, note="": update(done, done, note))
    for stage, counts in manifest["counts"].items():
        typer.echo(f"{out / (stage + '.json')}: {counts['total']} records ({counts['understanding']} with an "
                   f"image, {counts['text_only']} text-only, {counts['generation']} generation; "
                   f"{counts['left_out']} left out)")
    if manifest["problems"]:
        typer.echo(f"{manifest['problems']} records left out for bad images: {out / 'problems.jsonl'}")


@llava_app.command("fake")
def llava_fake(
    out: Annotated[Path, typer.Argument(help="Folder to write the fake files and image trees into.")],
    seed: Annotated[int, typer.Option(help="Seed: same seed, same bytes.")] = 0,
) -> None:
    """Write small fake ShareGPT4V, 558K and 665K files and MME and POPE copies, in the real schemas.

    For trying the commands: the sources' paths print as `uvlm llava data` takes them (`uvlm llava
    data --out llava-data $(uvlm llava fake llava-fake) --n-stage1 15 --n-stage2 20`), and
    OUT/benchmarks is a --data-root for `uvlm llava eval --tasks mme,pope`.

    Example: uvlm llava fake llava-fake
    """
    from uvlm.data.fake_llava import fake_benchmarks, fake_llava_sources

    paths = fake_llava_sources(out, seed=seed)
    fake_benchmarks(out / "benchmarks")
    typer.echo(" ".join(f"--{key.replace('_', '-')} {path}" for key, path in paths.items()))


RECIPE_HELP = ("release (CLIP frozen, one template: Table 2's models) | paper (CLIP trained in stage 2, the plain "
               "stage-1 template, steps all with images or all without).")


@llava_app.command("train")
def llava_train(
    data: Annotated[Path, typer.Option(help="Folder `uvlm llava data` wrote.")],
    model: Annotated[str, typer.Option(help="LLaVA | CLIP-CLIP | CLIP-VQ.")],
    out: Annotated[Path, typer.Option(help="Run folder: stage1/ and stage2/ inside (resumed if cut).")],
    preset: Annotated[str, typer.Option(help="tiny (a CPU, minutes) | paper (Vicuna-7B, CLIP-L/336, GPUs).")] = "tiny",
    recipe: Annotated[str, typer.Option(help=RECIPE_HELP)] = "release",
    set_: Annotated[list[str] | None, typer.Option("--set", help="section.key=value for both stages.")] = None,
) -> None:
    """Train one of Table 2's models through both stages (stage 2 starts from stage 1's weights).

    Example: uvlm llava train --data llava-data --model CLIP-VQ --out runs/CLIP-VQ --preset tiny --recipe paper
    """
    from uvlm.llava.recipe import train_two_stages
    from uvlm.progress import shown

    with shown("training") as update:
        summary = train_two_stages(data, model, out, preset, set_ or [],
                                   lambda stage, done, total, note="": update(done, total, f"{stage} {note}"), recipe)
    typer.echo(f"{out}: {summary['model']} trained, stage 2 final loss {summary['final'].get('loss')}")


@llava_app.command("eval")
def llava_eval(
    run: Annotated[Path, typer.Argument(help="A trained stage (RUN/stage2 of `uvlm llava train`).")],
    data_root: Annotated[Path, typer.Option(help="Folder of local benchmark copies: ROOT/TASK from save_to_disk.")],
    tasks: Annotated[str, typer.Option(help="Comma list of lmms-eval tasks.")] =
        "mme,mmbench_en_dev,pope,vizwiz_vqa_val,gqa,mmstar,textvqa_val,mmvet",
    out: Annotated[Path | None, typer.Option(help="Where to write benchmarks.json (default RUN/benchmarks).")] = None,
    judge: Annotated[bool, typer.Option(help="Also run the tasks a GPT judge scores (MMBench, MM-Vet).")] = False,
    batch_size: Annotated[int, typer.Option(help="Questions decoded together.")] = 8,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions of each task (a smoke test).")] = None,
) -> None:
    """Score a Table 2 model on the benchmarks through lmms-eval, with uvlm's model class.

    Example: uvlm llava eval runs/CLIP-VQ/stage2 --data-root benchmarks-data --tasks mme,pope
    """
    from uvlm.llava.benchmarks import parse_tasks, run_benchmarks

    chosen, skipped = parse_tasks(tasks, judge)
    for task, why in skipped.items():
        typer.echo(f"skipped {task}: {why}")
    if not chosen:
        return
    record = run_benchmarks(run, chosen, data_root, out or run / "benchmarks", batch_size, limit, skipped)
    for column, score in record["scores"].items():
        value = "n/a" if score["value"] is None else f"{score['value']:.1f}"
        typer.echo(f"{column}: {value} ({score['task']} {score['metric']}, {score['n']} questions)")


@llava_app.command("plan")
def llava_plan(
    model: Annotated[str, typer.Option(help="LLaVA | CLIP-CLIP | CLIP-VQ.")],
    gpus: Annotated[int, typer.Option(help="GPUs each stage's global batch is spread over.")] = 8,
    gpu_mem: Annotated[float | None, typer.Option(help="GPU memory in GB (default: this machine's GPU).")] = None,
    preset: Annotated[str, typer.Option(help="paper | tiny.")] = "paper",
    recipe: Annotated[str, typer.Option(help=RECIPE_HELP)] = "release",
    set_: Annotated[list[str] | None, typer.Option("--set", help="section.key=value for both stages.")] = None,
) -> None:
    """Print both stages' memory plans: what trains, memory per GPU, micro-batch and accumulation.

    Example: uvlm llava plan --model CLIP-VQ --gpus 8 --gpu-mem 80
    """
    from uvlm.llava.recipe import plans

    for stage, rows in plans(model, preset, gpus, gpu_mem, set_ or [], recipe).items():
        typer.echo(f"{stage}:")
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            typer.echo(f"  {key:<{width}}  {value}")


@llava_app.command("generate")
def llava_generate(
    run: Annotated[Path, typer.Argument(help="A trained CLIP-VQ stage (RUN/stage2).")],
    prompts: Annotated[Path, typer.Option(help="Text file, one caption or request a line.")],
    out: Annotated[Path, typer.Option(help="PNG sheet to write.")] = Path("llava-samples.png"),
    open_image: Annotated[bool, typer.Option(help="Start every answer at <boi> (draw even where the model "
                                                  "would not open an image).")] = False,
    temperature: Annotated[float, typer.Option(help="VQ sampling temperature (0: greedy).")] = 0.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest ids (0: all).")] = 0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Draw a sheet of CLIP-VQ's images for a file of prompts (Table 2 reports no generation metric).

    Example: uvlm llava generate runs/CLIP-VQ/stage2 --prompts captions.txt --out samples.png
    """
    from uvlm.eval.decode import Sampling
    from uvlm.llava.generate import generation_sheet

    made = generation_sheet(run, prompts, out, Sampling(temperature, top_k, seed=seed), open_image)
    typer.echo(f"{out}: {made} images drawn")
