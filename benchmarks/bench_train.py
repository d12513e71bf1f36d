"""Training throughput of the CPU preset, as a share of what this machine's matmuls can do.

Runs the cpu-preset VQ-VQ (default mix) for a few dozen steps on one thread and reads
samples/s from its metrics.jsonl (median after the first steps). Achieved GFLOP/s counts
6 x LLM parameters x tokens (forward + backward of the dense layers; attention scores are
left out, so the figure is a floor). The reference is a float32 matmul measured in the same
run on one thread; the ratio is the benchmark. With a GPU and the paper's models in the
local HF cache, `--preset paper` runs the same measurement for the paper preset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import markdown_table, record

from uvlm.suites.presets import row_config
from uvlm.train.config import from_dict
from uvlm.train.loop import train

STEPS = 40


def matmul_gflops(n: int = 1024, repeats: int = 20, device: str = "cpu") -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def measure(preset: str) -> list:
    cfg = row_config(preset, "VQ-VQ")
    n_records = sum(cfg["data"]["train"][k] for k in ("n_vqa", "n_caption", "n_generation"))
    batch = cfg["train"].get("global_batch") or cfg["train"]["batch_size"]
    cfg["train"].update({"epochs": STEPS * batch / n_records, "eval_points": 0, "checkpoint_every": 10**9})
    tmp = Path(tempfile.mkdtemp(prefix="uvlm-bench-train-"))
    try:
        summary = train(from_dict(cfg), tmp / "run")
        lines = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(tmp)
    rates = [x["samples_per_s"] for x in lines if x["event"] == "train"][5:]
    samples_per_s = statistics.median(rates)
    # tokens per sample from the model's sequence layout: measured on the training set itself
    from uvlm.model.names import parse_name
    from uvlm.model.prompt import PromptEncoder
    from uvlm.train.build import build_llm, build_tokenizer, load_spaces
    from uvlm.train.data import load_record_set, resolve_dataset

    run_cfg = from_dict(cfg)
    arch = parse_name("VQ-VQ")
    in_space, out_space = load_spaces(run_cfg, arch)
    tok = build_tokenizer(run_cfg)
    data = load_record_set(resolve_dataset(run_cfg.data.train, "train"), arch,
                           PromptEncoder(tok, in_space.n_tokens, out_space.n_tokens), in_space, out_space)
    tokens = statistics.mean(len(e) for e in data.encoded)
    params = sum(p.numel() for p in build_llm(run_cfg, tok).parameters())
    achieved = 6 * params * tokens * samples_per_s / 1e9
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = matmul_gflops(device=device)
    return [preset, f"{params / 1e6:.2f}M", f"{tokens:.0f}", f"{samples_per_s:.1f}", f"{achieved:.2f}",
            f"{peak:.1f}", f"{achieved / peak:.2f}", summary["steps"]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    preset = parser.parse_args().preset
    if preset == "paper" and not torch.cuda.is_available():
        raise SystemExit("the paper preset needs a GPU")
    torch.set_num_threads(1)
    row = measure(preset)
    table = markdown_table(["preset", "LLM params", "tokens/sample", "samples/s", "achieved GFLOP/s",
                            "matmul GFLOP/s (same run)", "ratio", "steps"], [row])
    body = ("VQ-VQ on the default mix, one thread (cpu). Achieved = 6 x LLM params x tokens x samples/s "
            "(dense layers only, a floor); matmul = 1024x1024 float32 on the same thread.\n\n" + table)
    record(f"bench_train ({preset})", f"python benchmarks/bench_train.py --preset {preset}", body)


if __name__ == "__main__":
    main()
