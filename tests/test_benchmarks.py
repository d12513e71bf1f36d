"""The benchmarks' own arithmetic, checked against torch (the benchmarks themselves run in
`make bench` and, at tiny scale, in CI's `gpu_check.sh --dry-run`)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("lora", [True, False])
def test_the_training_flop_count_is_the_matrix_products_torch_counts(lora):
    """bench_train's MFU numerator (`flops_per_token`) against torch's FlopCounterMode on one
    forward and backward of a Vicuna-7B-shaped Llama on the meta device (shapes only, nothing
    computed): under LoRA (the paper preset's r 128) frozen weights get no weight gradient, and
    LoRA's matrices cost all three products; trained whole, 6 x params. Attention's batched
    products are left out on both sides; what remains differs by the first layer's input
    gradients, which autograd skips under LoRA."""
    from bench_train import flops_per_token
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    from uvlm.suites.presets import row_config
    from uvlm.train.build import KNOWN_LLMS
    from uvlm.train.config import from_dict

    cfg = row_config("paper", "VQ-VQ")
    if not lora:
        cfg["model"]["lora_r"] = 0
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llm = LlamaForCausalLM(LlamaConfig(**KNOWN_LLMS["lmsys/vicuna-7b-v1.5"]))
        if lora:
            llm = get_peft_model(llm, LoraConfig(r=cfg["model"]["lora_r"], lora_alpha=256, lora_dropout=0.0,
                                                 target_modules="all-linear"))
        tokens = 64
        ids = torch.zeros(1, tokens, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            llm(input_ids=ids, labels=ids).loss.backward()
    counted = counter.get_flop_counts()["Global"]
    products = sum(n for op, n in counted.items() if "bmm" not in str(op))  # bmm: attention's
    linear = sum(p.numel() for name, p in llm.named_parameters()
                 if "lora_" not in name and "embed" not in name and "norm" not in name)
    # the first layer's input gradients (0.4% of a step at this shape) are the most they may differ by;
    # LoRA counted at 2 x its parameters rather than 6 would be 4% off
    assert products / tokens == pytest.approx(flops_per_token(from_dict(cfg), linear), rel=5e-3)
