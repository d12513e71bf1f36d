"""Image generation speed: our batched KV-cache decoding vs the authors' reference loop.

The reference re-runs the whole sequence for every new token at batch size 1; ours decodes
a batch with a KV cache, and the same with its one-position step compiled (torch.compile;
CUDA graphs on a GPU, where a step of a 7B model at batch 16 is bound by kernel launches more
than by arithmetic). Same model (random weights: speed does not depend on training), same
prompts, greedy. Default: the cpu preset's LLM on one thread, at 64 (the cpu preset), 196
(SigLIP) and 256 (VQ-16) tokens; target >= 20x. `--random-weights --scale paper` (a GPU):
a Vicuna-7B-shaped Llama in bf16 with LoRA, 16 images of 256 VQ-16 tokens in one batch
against the reference on 2; target >= 100x.
"""

from __future__ import annotations

import argparse
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


def paper_model(tokenizer, llm: str):
    """The paper preset's VQ-VQ on a random LLM of a known shape (LoRA r 128), on this device."""
    from uvlm.device import placement
    from uvlm.suites.presets import row_config
    from uvlm.train.build import add_lora

    cfg_dict = row_config("paper", "VQ-VQ")
    cfg_dict["model"]["llm"] = llm
    cfg = from_dict(cfg_dict)
    place = placement(cfg.train.precision)
    torch.manual_seed(0)
    llm = add_lora(build_llm(cfg, tokenizer, place), cfg, tokenizer)
    space = SpaceInfo("vq", 8, 256, True, 16384)
    model = UnifiedVLM(parse_name("VQ-VQ"), llm, space, space, codebook=torch.randn(16384, 8))
    return model.to(place.device).eval(), place


def main_paper(images: int, reference_images: int, scale: str) -> None:
    tok = train_tokenizer(template_corpus(), SPECIAL_TOKENS)
    mix = MixtureConfig(seed=0, split="test", n_vqa=0, n_caption=0, n_generation=images, share_images=False)
    records = [make_record(mix, "generation", j, image_attributes(mix, j), "") for j in range(images)]
    llm = {"paper": "random:lmsys/vicuna-7b-v1.5", "tiny": "random:llama-tiny"}[scale]
    model, place = paper_model(tok, llm)
    prompts = PromptEncoder(tok, 256)
    encoded = [prompts.encode([r["conversations"][0], {"from": "gpt", "value": "<image>"}], answer_image=False)
               for r in records]
    kw = dict(eos_id=tok.eos_token_id, boi_id=prompts.boi_id, n_vision=256)

    def timed(fn):
        if place.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if place.device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    def batched(compile_step: bool):
        return decode_batch(model, encoded, None, pad_id=tok.pad_token_id, compile_step=compile_step, **kw)

    with place.autocast():
        decode_batch(model, encoded[:2], None, pad_id=tok.pad_token_id, **kw)  # warm-up
        eager, fast_s = timed(lambda: batched(False))
        _, compile_s = timed(lambda: batched(True))  # the first call compiles the step for this batch's shape
        compiled, compiled_s = timed(lambda: batched(True))
        reference, slow_s = timed(lambda: [decode_reference(model, p, None, **kw)
                                           for p in encoded[:reference_images]])
    fast, slow, fastest = images / fast_s, reference_images / slow_s, images / compiled_s
    same = sum(torch.equal(r.vision, b.vision) for r, b in zip(reference, eager, strict=False))
    same_compiled = sum(torch.equal(a.vision, b.vision) for a, b in zip(eager, compiled, strict=True))
    row = [256, images, f"{slow:.3f}", f"{fast:.2f}", f"{fast / slow:.0f}x", f"{same}/{reference_images}",
           f"{fastest:.2f}", f"{fastest / slow:.0f}x", f"{compile_s - compiled_s:.0f}", f"{same_compiled}/{images}"]
    body = (f"{llm} (random weights, LoRA r 128) in {place.precision} on "
            f"{torch.cuda.get_device_name() if place.device.type == 'cuda' else 'the CPU'}, greedy, every answer "
            f"opened at <boi>; batched: {images} prompts in one batch with a KV cache; compiled: the same with its "
            "one-position step through torch.compile (CUDA graphs on a GPU), after a first call that compiles "
            f"it (`compile s`, about); reference: {reference_images} prompts one at a time, whole sequence re-run "
            "per token. `same ids`: reference images whose 256 ids equal the batched ones, and compiled images "
            "equal to the batched ones (16-bit arithmetic can break exact ties).\n\n"
            + markdown_table(["vision tokens", "images", "reference (img/s)", "batched + KV cache (img/s)",
                              "speed-up", "same ids", "compiled (img/s)", "speed-up, compiled", "compile s",
                              "compiled same ids"], [row]))
    record(f"bench_generate ({scale})", f"python benchmarks/bench_generate.py --random-weights --scale {scale}", body)


def _images_per_s(model, encoded, pad_id: int, kw: dict, compile_step: bool):
    start = time.perf_counter()
    out = decode_batch(model, encoded, None, pad_id=pad_id, compile_step=compile_step, **kw)
    return out, len(encoded) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--scale", default="cpu", choices=["cpu", "tiny", "paper"],
                        help="cpu: the cpu preset; paper: Vicuna-7B-shaped, GPU; tiny: the paper code path, CPU")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--reference-images", type=int, default=2)
    args = parser.parse_args()
    if args.scale in ("tiny", "paper"):
        if not args.random_weights:
            raise SystemExit(f"--scale {args.scale} uses random weights: add --random-weights (nothing is downloaded)")
        if args.scale == "paper" and not torch.cuda.is_available():
            raise SystemExit("--scale paper needs a GPU; --scale tiny runs the same code on the CPU")
        main_paper(args.images, args.reference_images, args.scale)
        return
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
        batched, fast = _images_per_s(model, encoded, tok.pad_token_id, kw, False)
        _images_per_s(model, encoded, tok.pad_token_id, kw, True)  # compiles the step for this shape
        compiled, fastest = _images_per_s(model, encoded, tok.pad_token_id, kw, True)
        start = time.perf_counter()
        reference = [decode_reference(model, p, None, **kw) for p in encoded[:REFERENCE_IMAGES]]
        slow = REFERENCE_IMAGES / (time.perf_counter() - start)
        same = all(torch.equal(r.vision, b.vision) for r, b in zip(reference, batched, strict=False)) and \
            all(torch.equal(a.vision, b.vision) for a, b in zip(batched, compiled, strict=True))
        rows.append([n, f"{slow:.3f}", f"{fast:.2f}", f"{fast / slow:.0f}x", f"{fastest:.2f}",
                     f"{fastest / slow:.0f}x", "yes" if same else "NO"])
    body = (f"cpu-preset LLM (hidden 192, 3 layers), one thread, greedy; batched: {BATCH} prompts in one batch; "
            "compiled: the same with its one-position step through torch.compile (inductor), timed after a call "
            f"that compiles it; reference: {REFERENCE_IMAGES} prompts one at a time, whole sequence re-run per "
            "token. `same ids`: the reference's, the batched and the compiled images all equal.\n\n"
            + markdown_table(["vision tokens", "reference (img/s)", "batched + KV cache (img/s)", "speed-up",
                              "compiled (img/s)", "speed-up, compiled", "same ids"], rows))
    record("bench_generate", "python benchmarks/bench_generate.py", body)


if __name__ == "__main__":
    main()
