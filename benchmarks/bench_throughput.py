"""The training step's throughput knobs, on the CPU at Vicuna-7B's widths with a few layers.

One VQ-VQ UnifiedVLM as the paper preset builds it (Llama at 4,096 x 11,008 with 32 heads, bf16
frozen weights, LoRA r 128 with dropout 0.05 on every linear layer, the 16,384-way VQ head),
`--layers` decoder layers, one forward and backward under bf16 autocast on records of the
paper's shape, timed in one run for each setting against the same baseline:

    baseline     peft's default (each LoRA input cast to fp32, dropout on that copy), checkpointing on
    lora16       LoRA in the run's 16-bit dtype (uvlm.train.build.lora_in_run_dtype), checkpointing on
    lora16+nockp LoRA in 16 bits, checkpointing off (what `auto` picks where memory allows)

with torch.profiler's split of CPU time into matrix products (mm, addmm, bmm, attention) and the
rest (elementwise, casts, copies, reductions). A CPU's ratios are not a GPU's (its bf16 matmuls
are slow, so the elementwise share is smaller than on a GPU); gpu_check.sh measures the GPU.
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


def build(layers: int):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from uvlm.model.names import parse_name
    from uvlm.model.prompt import SPECIAL_TOKENS, PromptEncoder
    from uvlm.model.tokenizer import template_corpus, train_tokenizer
    from uvlm.model.unified import SpaceInfo, UnifiedVLM

    torch.manual_seed(0)
    tok = train_tokenizer(template_corpus(), SPECIAL_TOKENS)
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                         num_key_value_heads=32, num_hidden_layers=layers, max_position_embeddings=1024,
                         tie_word_embeddings=False, attn_implementation="sdpa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm = LlamaForCausalLM(config).to(torch.bfloat16)
        llm = get_peft_model(llm, LoraConfig(r=128, lora_alpha=256, lora_dropout=0.05, target_modules="all-linear"))
    space = SpaceInfo("vq", 8, 256, True, 16384)
    model = UnifiedVLM(parse_name("VQ-VQ"), llm, space, space, codebook=torch.randn(16384, 8)).train()
    return model, PromptEncoder(tok, 256), tok


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


def step(model, batch, lora16: bool, checkpointing: bool) -> None:
    from uvlm.train.build import lora_in_run_dtype

    if checkpointing:
        model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.llm.gradient_checkpointing_disable()
    with torch.autocast("cpu", dtype=torch.bfloat16), (lora_in_run_dtype(model) if lora16 else nullcontext()):
        model(batch)["loss"].backward()
    model.zero_grad(set_to_none=True)


def measure(model, batch, lora16: bool, checkpointing: bool, repeats: int) -> tuple[float, float, float]:
    """(seconds per step, matmul seconds, other seconds) of the profiled last repeat."""
    step(model, batch, lora16, checkpointing)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(model, batch, lora16, checkpointing)
        times.append(time.perf_counter() - start)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(model, batch, lora16, checkpointing)
    matmul = other = 0.0
    for event in prof.key_averages():
        if event.key.startswith(MATMUL_OPS):
            matmul += event.self_cpu_time_total
        elif event.key.startswith("aten::"):
            other += event.self_cpu_time_total
    return float(np.median(times)), matmul / 1e6, other / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--records", type=int, default=4, help="records per step (VQA and generation alternate)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, prompts, tok = build(args.layers)
    batch = batch_of(prompts, tok.pad_token_id, args.records)
    settings = {"baseline": (False, True), "lora16": (True, True), "lora16+nockp": (True, False)}
    results = {name: measure(model, batch, *knobs, args.repeats) for name, knobs in settings.items()}
    base = results["baseline"][0]
    rows = [[name, f"{t:.2f}", f"{base / t:.2f}x", f"{m:.2f}", f"{o:.2f}", f"{100 * o / (m + o):.0f}%"]
            for name, (t, m, o) in results.items()]
    table = markdown_table(["setting", "s per step", "speed vs baseline", "matmul s (profiled)",
                            "other aten s (profiled)", "other share"], rows)
    body = (f"One forward and backward of VQ-VQ at Vicuna-7B's widths, {args.layers} decoder layers, "
            f"{args.records} records ({batch.input_ids.numel()} tokens), bf16 autocast on one CPU thread; median "
            f"of {args.repeats} steps after a warm-up, and a profiled step. Settings in the module docstring.\n\n"
            + table)
    record("bench_throughput", f"python benchmarks/bench_throughput.py --layers {args.layers} --records "
           f"{args.records}", body)


if __name__ == "__main__":
    main()
