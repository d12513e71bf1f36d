"""Table 2's stage 2 at 7B shape on this GPU: samples/s and peak memory against the memory plan.

`python benchmarks/bench_llava.py --scale paper`: the paper preset's stage-2 config of CLIP-VQ
(full fine-tuning, bf16, micro-batches chosen to fit, gradient checkpointing as the plan decides)
on a Vicuna-7B-shaped Llama and a CLIP-L/336-shaped tower with random weights and synthetic
VQ-16 ids (nothing is downloaded), on one process, over the fake LLaVA records of `uvlm llava
fake` (their text is short: tokens per record are in the table). With `--recipe paper` the CLIP
tower trains too, from pixels; with `release` its features are cached first. The
plan is computed for the same records and device; the step runs only where the plan says it
fits (a 7B full fine-tune needs about 110 GiB on one device: an H200 holds it, an H100 does not,
and the recipe's 8 GPUs shard it). `--scale tiny` runs the same code with a tiny Llama and tower
on the CPU (gpu_check.sh --dry-run).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from common import markdown_table, record

from uvlm.data.fake_llava import fake_llava_sources
from uvlm.data.llava_sources import LlavaDataConfig, LlavaSources, build_llava_data
from uvlm.llava.recipe import stage_config, stage_data
from uvlm.train.config import from_dict
from uvlm.train.loop import train

GIB = 2**30
SCALES = {"paper": {"llm": "random:lmsys/vicuna-7b-v1.5", "vq": "synthetic:vq16",
                    "tower": {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                              "num_hidden_layers": 24, "image_size": 336, "patch_size": 14}},
          "tiny": {"llm": "random:llama-tiny", "vq": "synthetic:vq-tiny", "tower": None}}


def random_tower(folder: Path, settings: dict) -> str:
    """A CLIP vision tower of `settings`' shape with random weights, saved in `folder`: a `clip:` spec."""
    from uvlm.vision.clip import save_random_tower

    if not (folder / "config.json").exists():
        save_random_tower(folder, settings, seed=0)
    return f"clip:{folder}"


def stage2_config(data: Path, scale: str, recipe: str, steps: int, batch: int, tmp: Path) -> dict:
    """The paper preset's stage 2 of CLIP-VQ at `scale`, from random weights (no stage 1), on one
    process, `steps` steps of `batch` records."""
    from uvlm.data.folder import read_records

    s = SCALES[scale]
    clip = random_tower(tmp / "clip-tower", s["tower"]) if s["tower"] else "tiny-clip"
    overrides = [f"model.llm={s['llm']}", f"data.clip={clip}", f"data.vq={s['vq']}", "train.sharding=none",
                 f"train.global_batch={batch}", f"train.batch_size={batch}", "train.checkpoint_every=1000000"]
    if scale == "tiny":  # the preset asks for a GPU and bf16; the tiny scale runs its code on the CPU
        overrides += ["train.device=auto", "train.precision=auto"]
    folder = stage_data(data, "paper", "stage2", overrides)
    cfg = stage_config("paper", "stage2", "CLIP-VQ", folder, overrides, None, recipe)
    cfg["train"]["epochs"] = steps * batch / len(read_records(folder))
    return cfg


def measure(scale: str, recipe: str, steps: int, batch: int) -> list:
    from uvlm.model.names import parse_name
    from uvlm.train.build import build_tokenizer, load_spaces, prompt_encoder
    from uvlm.train.data import load_record_set
    from uvlm.train.memory import device_memory, layout_of, plan

    tmp = Path(tempfile.mkdtemp(prefix="uvlm-bench-llava-"))
    try:
        sources = LlavaSources(**fake_llava_sources(tmp / "src", n_sharegpt4v=6 * batch, n_pretrain=2 * batch,
                                                    n_instruct=6 * batch))
        build_llava_data(sources, tmp / "data", LlavaDataConfig(batch, 2 * batch))
        cfg = stage2_config(tmp / "data", scale, recipe, steps, batch, tmp)
        run_cfg = from_dict(cfg)
        arch = parse_name(run_cfg.model.name)
        in_space, out_space = load_spaces(run_cfg, arch)
        tok = build_tokenizer(run_cfg)
        records = load_record_set(Path(run_cfg.data.train), arch, prompt_encoder(run_cfg, tok, in_space, out_space),
                                  in_space, out_space, max_tokens=run_cfg.train.max_tokens)
        layout = layout_of(records.encoded, out_space)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        limit = device_memory(torch.device(device))
        planned = plan(run_cfg, layout, limit, 1, gpu=device == "cuda")
        tokens = statistics.mean(len(e) for e in records.encoded)
        head = [f"CLIP-VQ stage 2, recipe {recipe}", scale, device, f"{planned.params / 1e6:,.1f}M"
                + (f" + {planned.encoder_params / 1e6:,.1f}M encoder" if planned.encoder_params else ""),
                f"{tokens:.0f} ({layout.tokens} longest)"]
        if not planned.fits:
            return [*head, "-", "-", "-", f"{planned.total(planned.micro_batch) / GIB:.1f}",
                    f"does not fit {limit / GIB:.0f} GiB: not run"]
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        summary = train(run_cfg, tmp / "run")
        lines = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
        rates = [x["samples_per_s"] for x in lines[1:] if x["event"] == "train"] or [lines[0]["samples_per_s"]]
        peak = (torch.cuda.max_memory_allocated() if device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        micro = summary["micro_batch"]
        return [*head, f"{micro} ({'checkpointing' if summary['gradient_checkpointing'] else 'no checkpointing'})",
                f"{statistics.median(rates):.2f}", f"{peak / GIB:.1f}", f"{planned.total(micro) / GIB:.1f}",
                f"{peak / planned.total(micro):.2f}"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=list(SCALES), default="paper")
    parser.add_argument("--recipe", nargs="+", choices=["release", "paper"], default=["release", "paper"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16, help="records per step (one process)")
    args = parser.parse_args()
    if args.scale == "paper" and not torch.cuda.is_available():
        raise SystemExit("--scale paper needs a GPU; --scale tiny runs the same code on the CPU")
    rows = [measure(args.scale, recipe, args.steps, args.batch) for recipe in args.recipe]
    table = markdown_table(["run", "scale", "device", "parameters", "tokens/record", "micro-batch", "samples/s",
                            "peak memory (GiB)", "plan (GiB)", "measured / plan"], rows)
    body = ("Table 2's stage 2 (the paper preset: full fine-tuning, bf16, micro-batches and checkpointing as the "
            "plan decides) of CLIP-VQ on one process: random weights, synthetic VQ ids, a random CLIP-L/336 tower "
            "(release: frozen, its features cached; paper: trained from pixels), the fake LLaVA records' lengths. "
            "On a CPU (the tiny scale) peak memory is the process's RSS and the plan's figure includes a CUDA "
            "context: the row shows the path runs, not the plan's accuracy. Peak memory is "
            "torch's max_memory_allocated (the plan adds the CUDA context and allocator slack, so a ratio a little "
            "under 1 is the plan holding); samples/s is the median after the first step.\n\n" + table)
    record(f"bench_llava ({args.scale})", f"python benchmarks/bench_llava.py --scale {args.scale}", body)


if __name__ == "__main__":
    main()
