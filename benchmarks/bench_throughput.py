"""The training step's throughput knobs, on the CPU at Vicuna-7B's widths with a few layers.

One VQ-VQ UnifiedVLM as the paper preset builds it (Llama at 4,096 x 11,008 with 32 heads, bf16
frozen weights, LoRA r 128 with dropout 0.05 on every linear layer, the 16,384-way VQ head),
`--layers` decoder layers, one forward and backward under bf16 autocast on records of the
paper's shape, timed in one run for each setting against the same baseline:

    baseline     peft's default (each LoRA input cast to fp32, dropout on that copy), checkpointing on,
                 attention through SDPA (uvlm's default)
    eager        the baseline with transformers' eager attention (what SDPA replaces)
    lora16       LoRA in the run's 16-bit dtype (uvlm.train.build.lora_in_run_dtype), checkpointing on
    lora16+nockp LoRA in 16 bits, checkpointing off (what `auto` picks where memory allows)
    +compile     lora16+nockp with the decoder through torch.compile (`train.compile`, as the training
                 loop compiles it; measured last, since compiling is in place; the warm-up compiles)

Padding is not a setting here: a step's time follows its tokens, and bench_padding.py measures the
share of them that length grouping saves.

with torch.profiler's split of the time into matrix products (mm, addmm, bmm, attention; on a GPU
the GEMM and attention kernels) and the rest (elementwise, casts, copies, reductions; on a CPU the
profiled step's wall time less its matrix products, as a compiled step's fused code is no aten op). A CPU's
ratios are not a GPU's (matrix products and the rest run at other relative speeds there): on a
GPU (gpu_check.sh) the same settings run there, with more layers. `--tiny` shrinks the widths to
256 so that gpu_check.sh --dry-run runs every setting in seconds.
"""

from __future__ import annotations

import argparse
import time
import warnings
from contextlib import nullcontext

import numpy as np
import torch
from common import markdown_table, record

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product",
              "aten::scaled_dot_product")
MATMUL_KERNELS = ("gemm", "matmul", "cutlass", "xmma", "flash", "fmha", "attention", "sm80_", "sm90_")
WIDTHS = {"paper": {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                    "num_key_value_heads": 32},
          "tiny": {"hidden_size": 256, "intermediate_size": 688, "num_attention_heads": 4, "num_key_value_heads": 4}}


def build(layers: int, widths: str = "paper", device: str = "cpu"):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from uvlm.model.names import parse_name
    from uvlm.model.prompt import SPECIAL_TOKENS, PromptEncoder
    from uvlm.model.tokenizer import template_corpus, train_tokenizer
    from uvlm.model.unified import SpaceInfo, UnifiedVLM

    torch.manual_seed(0)
    tok = train_tokenizer(template_corpus(), SPECIAL_TOKENS)
    config = LlamaConfig(vocab_size=32000, **WIDTHS[widths], num_hidden_layers=layers, max_position_embeddings=1024,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm = LlamaForCausalLM(config).to(torch.bfloat16)
        llm = get_peft_model(llm, LoraConfig(r=128, lora_alpha=256, lora_dropout=0.05, target_modules="all-linear"))
    space = SpaceInfo("vq", 8, 256, True, 16384)
    model = UnifiedVLM(parse_name("VQ-VQ"), llm, space, space, codebook=torch.randn(16384, 8)).train()
    return model.to(device), PromptEncoder(tok, 256), tok


def batch_of(prompts, pad_id: int, records: int):
    from uvlm.train.data import RecordSet, collate

    convs = [[{"from": "human", "value": "<image>\nWhat is the weather according to the watch?"},
              {"from": "gpt", "value": "sunny"}],
             [{"from": "human", "value": "Can you draw a smart watch showing 03:15:20 with the weather icon at "
                                         "the top-left and 45% battery?"},
              {"from": "gpt", "value": "Sure, here it is: <image>"}]]
    encoded = [prompts.encode(convs[i % 2]) for i in range(records)]
    g = torch.Generator().manual_seed(0)
    data = RecordSet(encoded, np.arange(records) % 2, [], torch.randn(records, 256, 8, generator=g),
                     torch.randint(0, 16384, (records, 256), generator=g))
    return collate(data, list(range(records)), pad_id)


def step(model, batch, lora16: bool, checkpointing: bool, attention: str = "sdpa") -> None:
    from uvlm.train.build import lora_in_run_dtype

    model.llm.set_attn_implementation(attention)
    if checkpointing:
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.llm.gradient_checkpointing_disable()
    device = next(model.parameters()).device.type
    with torch.autocast(device, dtype=torch.bfloat16), (lora_in_run_dtype(model) if lora16 else nullcontext()):
        model(batch)["loss"].backward()
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()


def measure(model, batch, knobs: dict, repeats: int) -> tuple[float, float, float]:
    """(seconds per step, matmul seconds, other seconds) of the profiled last repeat."""
    if knobs.get("compile"):
        model.llm.get_decoder().compile(dynamic=True)
    knobs = {k: v for k, v in knobs.items() if k != "compile"}
    step(model, batch, **knobs)  # warm-up (and compiling)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(model, batch, **knobs)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), *profiled(model, batch, knobs)


def profiled(model, batch, knobs: dict) -> tuple[float, float]:
    """(matmul seconds, other seconds) of one profiled step. On a GPU, the kernels' time, a GEMM or
    attention kernel known by its name. On a CPU, the matmul ops' own time, and the rest of the
    step's wall time as the other: a compiled step runs its fused code outside aten's ops."""
    gpu = next(model.parameters()).device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if gpu else [])
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        step(model, batch, **knobs)
        wall = time.perf_counter() - start
    matmul = other = 0.0
    for event in prof.key_averages():
        if gpu and event.device_type == torch.autograd.DeviceType.CUDA:
            if any(k in event.key.lower() for k in MATMUL_KERNELS):
                matmul += event.self_device_time_total / 1e6
            else:
                other += event.self_device_time_total / 1e6
        elif not gpu and event.key.startswith(MATMUL_OPS):
            matmul += event.self_cpu_time_total / 1e6
    return matmul, other if gpu else wall - matmul

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--records", type=int, default=4, help="records per step (VQA and generation alternate)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="widths of 256 (gpu_check.sh --dry-run), not Vicuna's")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled setting (minutes to compile)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(1)
    model, prompts, tok = build(args.layers, "tiny" if args.tiny else "paper", device)
    batch = batch_of(prompts, tok.pad_token_id, args.records).to(device)
    fast = {"lora16": True, "checkpointing": False}
    settings = {"baseline": {"lora16": False, "checkpointing": True},
                "eager": {"lora16": False, "checkpointing": True, "attention": "eager"},
                "lora16": {"lora16": True, "checkpointing": True},
                "lora16+nockp": fast,
                "lora16+nockp+compile": {**fast, "compile": True}}  # last: compiling is in place
    if args.no_compile:
        settings.pop("lora16+nockp+compile")
    results = {name: measure(model, batch, knobs, args.repeats) for name, knobs in settings.items()}
    base = results["baseline"][0]
    rows = [[name, f"{t:.2f}", f"{base / t:.2f}x", f"{m:.2f}", f"{o:.2f}", f"{100 * o / (m + o):.0f}%"]
            for name, (t, m, o) in results.items()]
    table = markdown_table(["setting", "s per step", "speed vs baseline", "matmul s (profiled)",
                            "other s (profiled)", "other share"], rows)
    on = torch.cuda.get_device_name() if device == "cuda" else "one CPU thread"
    widths = "widths of 256 (a dry run)" if args.tiny else "Vicuna-7B's widths"
    body = (f"One forward and backward of VQ-VQ at {widths}, {args.layers} decoder layers, "
            f"{args.records} records ({batch.input_ids.numel()} tokens), bf16 autocast on {on}; median "
            f"of {args.repeats} steps after a warm-up, and a profiled step. Settings in the module docstring.\n\n"
            + table)
    flags = " --tiny" * args.tiny + " --no-compile" * args.no_compile
    record("bench_throughput" + (f" ({on})" if device == "cuda" else ""),
           f"python benchmarks/bench_throughput.py --layers {args.layers} --records {args.records}{flags}", body)

if __name__ == "__main__":
    main()
