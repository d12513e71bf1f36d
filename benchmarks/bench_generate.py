"""Image generation speed: our batched KV-cache decoding vs the authors' reference loop.

The reference re-runs the whole sequence for every new token at batch size 1; ours decodes
a batch with a KV cache. Same model (the cpu preset's LLM, random weights: speed does not
depend on training), same prompts, greedy. Token counts: 64 (the cpu preset) and the
paper's 196 (SigLIP) and 256 (VQ-16). Target: >= 20x.
"""

from __future__ import annotations

import time

import torch
from common import markdown_table, record

from uvlm.data.mixture import MixtureConfig, image_attributes, make_record
from uvlm.eval.decode import decode_batch, decode_reference
from uvlm.model.names import parse_name
from uvlm.model.prompt import SPECIAL_TOKENS, PromptEncoder
from uvlm.model.tokenizer import template_corpus, train_tokenizer
from uvlm.model.unified import SpaceInfo, UnifiedVLM
from uvlm.suites.presets import PRESETS
from uvlm.train.build import build_llm
from uvlm.train.config import from_dict

BATCH = 32
REFERENCE_IMAGES = 2


def model_with_tokens(n_tokens: int, tokenizer) -> UnifiedVLM:
    torch.manual_seed(0)
    cfg = from_dict({"model": {"name": "VQ-VQ", **{k: v for k, v in PRESETS["cpu"]["model"].items()}}})
    space = SpaceInfo("vq", 8, n_tokens, True, 512)
    return UnifiedVLM(parse_name("VQ-VQ"), build_llm(cfg, tokenizer), space, space,
                      codebook=torch.randn(512, 8)).eval()


def main() -> None:
    torch.set_num_threads(1)
    tok = train_tokenizer(template_corpus(), SPECIAL_TOKENS)
    mix = MixtureConfig(seed=0, split="test", n_vqa=0, n_caption=0, n_generation=BATCH, share_images=False)
    records = [make_record(mix, "generation", j, image_attributes(mix, j), "") for j in range(BATCH)]
    rows = []
    for n in (64, 196, 256):
        model = model_with_tokens(n, tok)
        prompts = PromptEncoder(tok, n)
        encoded = [prompts.encode(r["conversations"], answer_image=False) for r in records]
        kw = dict(eos_id=tok.eos_token_id, boi_id=prompts.boi_id, n_vision=n)
        start = time.perf_counter()
        batched = decode_batch(model, encoded, None, pad_id=tok.pad_token_id, **kw)
        fast = BATCH / (time.perf_counter() - start)
        start = time.perf_counter()
        reference = [decode_reference(model, p, None, **kw) for p in encoded[:REFERENCE_IMAGES]]
        slow = REFERENCE_IMAGES / (time.perf_counter() - start)
        same = all(torch.equal(r.vision, b.vision) for r, b in zip(reference, batched, strict=False))
        rows.append([n, f"{slow:.3f}", f"{fast:.2f}", f"{fast / slow:.0f}x", "yes" if same else "NO"])
    body = (f"cpu-preset LLM (hidden 192, 3 layers), one thread, greedy; batched: {BATCH} prompts in one batch; "
            f"reference: {REFERENCE_IMAGES} prompts one at a time, whole sequence re-run per token.\n\n"
            + markdown_table(["vision tokens", "reference (img/s)", "batched + KV cache (img/s)", "speed-up",
                              "same ids"], rows))
    record("bench_generate", "python benchmarks/bench_generate.py", body)


if __name__ == "__main__":
    main()
