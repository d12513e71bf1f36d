"""Training throughput, as a share of what the machine's matmuls can do.

`--preset cpu` (the default, in `make bench`; `--preset cpu cpu2 smol-standin` for one row per
preset; `--precision fp32 bf16` for one row per precision, in a section of its own): the
preset's VQ-VQ for a few dozen steps on one thread, on as many records as the steps take in the
preset's mix (smol-standin: SmolLM2-135M with LoRA r 64, fp32, batch 8); samples/s from its metrics.jsonl (median
after the first steps). Achieved GFLOP/s counts the LLM's training FLOPs per token
(`flops_per_token`: 6 x parameters where all of them train; under LoRA 4 x them, as frozen
weights get no weight gradient, plus 6 x LoRA's; an approximation) x tokens; the
reference is a matmul in the row's precision (fp32, or bf16 where the row autocasts to it),
measured in the same run on one thread.

`--preset paper --random-weights`: the paper preset's training path (uvlm.train.loop: LoRA r 128,
gradient checkpointing, micro-batches of what fits, accumulation to 393, bf16) on a
Vicuna-7B-shaped Llama with random weights and synthetic SigLIP-base / VQ-16 outputs (nothing
is downloaded), for VQ-VQ and SigLIP-SigLIP: samples/s per device, peak device memory, and MFU
= `flops_per_token` x tokens x samples/s over the GPU's bf16 dense peak (recomputation under
gradient checkpointing is not counted). `--scale tiny` runs the
same code with a small Llama on the CPU (in `make bench`: it keeps the path working).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import markdown_table, record

from uvlm.device import placement
from uvlm.suites.presets import asks_for_gpu, row_config
from uvlm.train.config import RunConfig, from_dict
from uvlm.train.loop import train

STEPS = 40
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SMOL_CPU_BATCH = 8
# bf16 dense peaks (TFLOP/s) of the GPUs the paper-scale runs target
PEAKS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "A6000": 154.8}
SCALES = {"paper": {"llm": "random:lmsys/vicuna-7b-v1.5", "siglip": "synthetic:siglip-base", "vq": "synthetic:vq16"},
          "tiny": {"llm": "random:llama-tiny", "siglip": "synthetic:siglip-tiny", "vq": "synthetic:vq-tiny"}}


def matmul_gflops(n: int = 1024, repeats: int = 20, device: str = "cpu", dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def run(cfg: dict) -> tuple[dict, list[dict]]:
    tmp = Path(tempfile.mkdtemp(prefix="uvlm-bench-train-"))
    try:
        summary = train(from_dict(cfg), tmp / "run")
        lines = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(tmp)
    return summary, [x for x in lines if x["event"] == "train"]


def tokens_per_sample(cfg: dict) -> float:
    """Mean sequence length of the run's training records, from its own layout."""
    from uvlm.model.names import parse_name
    from uvlm.train.build import build_tokenizer, load_spaces, prompt_encoder
    from uvlm.train.data import load_record_set, resolve_dataset

    run_cfg = from_dict(cfg)
    arch = parse_name(run_cfg.model.name)
    in_space, out_space = load_spaces(run_cfg, arch)
    tok = build_tokenizer(run_cfg)
    data = load_record_set(resolve_dataset(run_cfg.data.train, "train"), arch,
                           prompt_encoder(run_cfg, tok, in_space, out_space), in_space, out_space)
    return statistics.mean(len(e) for e in data.encoded)


def flops_per_token(run_cfg: RunConfig, params: int) -> int:
    """Training FLOPs a token costs in the LLM's linear layers, `params` being the LLM's own
    (without LoRA): where it trains whole, 2 x params forward, 2 x for the activations' gradients
    and 2 x for the weights'; under LoRA the frozen weights get no weight gradient (4 x params),
    and LoRA's matrices cost all three (6 x theirs). Attention's own products are left out, and
    the embedding (a lookup) is counted as a layer: an approximation, not a bound."""
    from uvlm.train.memory import llm_shape

    lora_r = run_cfg.model.lora_r
    if not lora_r:
        return 6 * params
    return 4 * params + 6 * llm_shape(run_cfg.model)[0].lora_params(lora_r)


def measure_cpu(preset: str = "cpu", batch: int | None = None, peaks: dict[str, float] | None = None,
                steps: int = STEPS, synthetic: str | None = None, precision: str | None = None) -> list:
    """One row: a preset's VQ-VQ at its batch (or `batch`, same lr) and precision (or `precision`),
    measured on one thread (smol on a GPU: at its own batch, micro-batches chosen to fit).
    `peaks`: matmul GFLOP/s by precision, shared by a run's rows (a missing one is measured here).
    `synthetic`: a SCALES key whose synthetic encoder outputs replace the preset's encoders
    (nothing to pretrain in a fresh cache)."""
    cfg = row_config(preset, "VQ-VQ")
    if precision:
        cfg["train"]["precision"] = precision
    dtype = "bf16" if placement(cfg["train"].get("precision", "auto")).precision == "bf16" else "fp32"
    if synthetic:
        cfg["data"].update({"siglip": SCALES[synthetic]["siglip"], "vq": SCALES[synthetic]["vq"]})
    if asks_for_gpu(preset):  # the one-GPU preset: on a CPU a CPU-sized batch
        batch = batch or (None if torch.cuda.is_available() else SMOL_CPU_BATCH)
        cfg["train"]["device"] = "auto"  # the preset asks for a GPU; without one its step is measured here
    if batch:
        cfg["train"].update({"batch_size": batch, "global_batch": None, "micro_batch": None})
    batch = cfg["train"].get("global_batch") or cfg["train"]["batch_size"]
    # only the records the steps take, in the preset's mix: a step costs the same whatever the
    # dataset's size, and the preset's whole dataset (180K records for smol) is minutes to render
    counts = {k: cfg["data"]["train"][k] for k in ("n_vqa", "n_caption", "n_generation")}
    scale = min(1.0, steps * batch / sum(counts.values()))
    cfg["data"]["train"].update({k: math.ceil(n * scale) for k, n in counts.items()})
    n_records = sum(cfg["data"]["train"][k] for k in counts)
    cfg["train"].update({"epochs": steps * batch / n_records, "eval_points": 0, "checkpoint_every": 10**9,
                         "threads": 1})  # one thread, whatever the preset runs on (cpu2-smol: 2)
    summary, lines = run(cfg)
    samples_per_s = statistics.median(x["samples_per_s"] for x in lines[min(5, len(lines) - 1):])
    from uvlm.train.build import build_llm, build_tokenizer

    run_cfg = from_dict(cfg)
    params = sum(p.numel() for p in build_llm(run_cfg, build_tokenizer(run_cfg)).parameters())
    tokens = tokens_per_sample(cfg)
    achieved = flops_per_token(run_cfg, params) * tokens * samples_per_s / 1e9
    peaks = {} if peaks is None else peaks
    if dtype not in peaks:  # measured once a run, for the first row in that precision, where the row runs
        peaks[dtype] = (matmul_gflops(8192, 10, "cuda", DTYPES[dtype]) if torch.cuda.is_available()
                        else matmul_gflops(dtype=DTYPES[dtype]))
    peak = peaks[dtype]
    return [preset, dtype, batch, f"{params / 1e6:.2f}M", f"{tokens:.0f}", f"{samples_per_s:.3g}", f"{achieved:.2f}",
            f"{peak:.1f}", f"{achieved / peak:.2f}", summary["steps"]]


def paper_config(name: str, scale: str, steps: int) -> dict:
    """The paper preset's row with random weights and synthetic encoder outputs, `steps` steps long."""
    cfg = row_config("paper", name)
    cfg["model"]["llm"] = SCALES[scale]["llm"]
    cfg["data"].update({"siglip": SCALES[scale]["siglip"], "vq": SCALES[scale]["vq"]})
    small = {"size": 64, "detail_scale": 2.0, "face_radius": 0.32}  # synthetic outputs ignore the pixels
    if scale == "tiny":
        # the preset asks for a GPU (train.device cuda); the tiny scale runs its code on the CPU
        cfg["train"].update({"batch_size": 8, "global_batch": 24, "precision": "auto", "device": "auto"})
    batch = cfg["train"]["global_batch"]
    per_task = max(1, steps * batch // 3)
    cfg["data"]["train"].update({"n_vqa": per_task, "n_caption": per_task, "n_generation": per_task, **small})
    cfg["data"]["test"].update({"n_vqa": 6, "n_generation": 3, **small})
    cfg["train"].update({"epochs": 1.0, "eval_points": 0, "checkpoint_every": 10**9})
    return cfg


def peak_tflops(device: str) -> tuple[float, str]:
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, peak in PEAKS.items():
            if key in name:
                return peak * 1e3, f"{name} bf16 dense peak"
        return matmul_gflops(8192, 10, "cuda", torch.bfloat16), f"{name}: measured bf16 8192^3 matmul"
    return matmul_gflops(), "one-thread fp32 matmul (this CPU)"


def measure_paper(name: str, scale: str, steps: int, checkpointing: bool | str = "auto") -> list:
    from uvlm.train.memory import device_memory, llm_shape, plan, planned_layout

    cfg = paper_config(name, scale, steps)
    cfg["train"]["gradient_checkpointing"] = checkpointing
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    summary, lines = run(cfg)
    rates = [x["samples_per_s"] for x in lines[1:]] or [lines[0]["samples_per_s"]]  # step 1 warms up
    samples_per_s = statistics.median(rates)
    peak_mem = (torch.cuda.max_memory_allocated() if device == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    reserved = f"{torch.cuda.max_memory_reserved() / 2**30:.1f}" if device == "cuda" else "-"
    run_cfg = from_dict(cfg)
    shape = llm_shape(run_cfg.model)[0]
    # what the memory plan (`uvlm plan`) says the chosen micro-batch takes, beside what it took
    planned = plan(run_cfg, planned_layout(run_cfg)[0], device_memory(torch.device(device)),
                   gpu=device == "cuda").total(summary["micro_batch"])
    tokens = tokens_per_sample(cfg)
    peak, peak_name = peak_tflops(device)
    achieved = flops_per_token(run_cfg, shape.params) * tokens * samples_per_s / 1e9
    chosen = f"{checkpointing} ({'on' if summary['gradient_checkpointing'] else 'off'})"
    return [name, scale, device, chosen, summary["micro_batch"], f"{shape.params / 1e6:,.1f}M", f"{tokens:.0f}",
            summary["steps"],
            f"{samples_per_s:.2f}", f"{peak_mem / 2**30:.1f}", reserved, f"{planned / 2**30:.1f}",
            f"{achieved / 1e3:.1f}", f"{achieved / peak:.2f}",
            peak_name]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", nargs="+", default=["cpu"],
                        choices=["cpu", "cpu2", "smol-standin", "cpu2-smol", "paper"],
                        help="cpu-scale presets: one row each, measured in the same run")
    parser.add_argument("--random-weights", action="store_true", help="paper preset: random LLM, synthetic encoders")
    parser.add_argument("--scale", default="paper", choices=list(SCALES))
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps per model (default: 4 for the paper preset, {STEPS} for the others)")
    parser.add_argument("--batch", type=int, nargs="*", default=[], help="cpu preset: batch sizes to compare")
    parser.add_argument("--precision", nargs="*", choices=list(DTYPES), default=[],
                        help="cpu-scale presets: precisions to compare (default: each preset's own)")
    parser.add_argument("--synthetic-encoders", choices=list(SCALES), default=None,
                        help="other presets: synthetic encoder outputs of this scale in place of the preset's")
    args = parser.parse_args()
    command = " ".join(["python", "benchmarks/bench_train.py", *sys.argv[1:]])
    if "paper" not in args.preset:
        torch.set_num_threads(1)
        peaks: dict[str, float] = {}
        rows = [measure_cpu(p, b, peaks, args.steps or STEPS, args.synthetic_encoders, precision)
                for p in args.preset for b in args.batch or [None] for precision in args.precision or [None]]
        table = markdown_table(["preset", "precision", "batch", "LLM params", "tokens/sample", "samples/s",
                                "achieved GFLOP/s",
                                "matmul GFLOP/s (row's precision, same run)", "ratio", "steps"], rows)
        body = ("VQ-VQ on the default mix, one thread. Achieved = training FLOPs per token (6 x LLM params; "
                "under LoRA 4 x them + 6 x LoRA's) x tokens x samples/s (attention's products left out);"
                " matmul = 1024x1024 in the row's precision (bf16 where it "
                "autocasts to it, else float32) on the same thread, measured once for every row.\n\n" + table)
        if torch.cuda.is_available():  # the smol preset's step on a GPU (gpu_check.sh): a section of its own
            record(f"bench_train ({' '.join(args.preset)}, {torch.cuda.get_device_name()})", command,
                   body.replace("one thread", "one GPU").replace("1024x1024", "8192x8192")
                   .replace(" on the same thread", " on the same GPU"))
            return
        if args.precision:
            record("bench_train (cpu, precision)", command, body)
            return
        record("bench_train (cpu)", command, body)
        return
    if args.preset != ["paper"]:
        raise SystemExit("--preset paper runs alone (its rows measure a GPU)")
    if not args.random_weights:
        raise SystemExit("--preset paper measures random weights: add --random-weights (nothing is downloaded)")
    if args.scale == "paper" and not torch.cuda.is_available():
        raise SystemExit("--scale paper needs a GPU; --scale tiny runs the same code on the CPU")
    # the preset as it is (checkpointing `auto`: the plan decides), and VQ-VQ with checkpointing forced on
    rows = [measure_paper(name, args.scale, args.steps or 4) for name in ("VQ-VQ", "SigLIP-SigLIP")]
    rows.append(measure_paper("VQ-VQ", args.scale, args.steps or 4, checkpointing=True))
    table = markdown_table(["model", "scale", "device", "checkpointing", "micro-batch", "LLM params", "tokens/sample",
                            "steps", "samples/s",
                            "peak allocated (GiB)", "peak reserved (GiB)", "plan (GiB)", "achieved TFLOP/s", "MFU",
                            "peak used"], rows)
    body = ("The paper preset's training loop (LoRA r 128 with dropout, gradient checkpointing as the plan decides "
            "(`auto`) and forced on, micro-batches "
            "chosen to fit, accumulation to the global batch, bf16 on a GPU) with random weights and synthetic "
            "encoder outputs; samples/s is the median over steps after the first. Peak allocated and reserved: "
            "torch.cuda's high-water marks (on a CPU: the process's peak RSS); plan: the memory plan's figure "
            "for the micro-batch taken (`uvlm plan`, fragmentation margin included, so it compares with "
            "reserved). MFU = training FLOPs per token (4 x params + 6 x LoRA's: frozen weights get no weight "
            "gradient) x tokens x "
            "samples/s / peak (the paper: 180K samples in under an hour on 3 H100, about 17 samples/s per GPU; "
            "target here: >= 50 on one H100-class GPU for VQ-VQ). At the tiny scale, on a CPU, the count is "
            "dominated by the 32,000-word embedding, which is a lookup, not a matmul: there the row only shows "
            "that the path runs.\n\n" + table)
    record(f"bench_train (paper, {args.scale})",
           f"python benchmarks/bench_train.py --preset paper --random-weights --scale {args.scale}", body)


if __name__ == "__main__":
    main()
