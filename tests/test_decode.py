"""Decoding: the cached batched path equals the authors' re-run-everything loop (greedy)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from uvlm.errors import UvlmError
from uvlm.eval.decode import Sampling, decode_batch, decode_reference
from uvlm.model.names import parse_name
from uvlm.model.prompt import PromptEncoder
from uvlm.train.build import build_model, build_tokenizer, load_spaces
from uvlm.train.config import from_dict


def model_for(name: str, encoders: dict):
    cfg = from_dict({"model": {"name": name, "hidden_size": 64, "layers": 2, "heads": 2,
                               "intermediate_size": 128}, "data": encoders})
    in_space, out_space = load_spaces(cfg, parse_name(name))
    tok = build_tokenizer(cfg)
    model = build_model(cfg, in_space, out_space, tok).eval()
    prompts = PromptEncoder(tok, (in_space or out_space).n_tokens, (out_space or in_space).n_tokens)
    return model, tok, prompts, in_space, out_space


QUESTIONS = ["What is the weather?", "Where is the battery displayed on this smart watch today?", "What time is it?"]
DRAW = ["Draw a smart watch showing 01:02:03.", "Can you draw a smart watch with 45% battery at the top-left?"]


@pytest.mark.parametrize("name", ["VQ-VQ", "SigLIP-SigLIP", "VQ-SigLIP"])
def test_batched_cache_equals_reference_loop(name, encoders):
    torch.manual_seed(0)
    model, tok, prompts, in_space, out_space = model_for(name, encoders)
    n = out_space.n_tokens
    und = [prompts.prompt(q) for q in QUESTIONS]
    feats = [torch.randn(in_space.n_tokens, in_space.feature_dim) for _ in QUESTIONS]
    gen = [prompts.encode([{"from": "human", "value": d}, {"from": "gpt", "value": "Sure: <image>"}],
                          answer_image=False) for d in DRAW]
    kw = dict(eos_id=tok.eos_token_id, boi_id=prompts.boi_id, n_vision=n)
    batched = decode_batch(model, und, torch.cat(feats), pad_id=tok.pad_token_id, max_new_tokens=12, **kw)
    batched_gen = decode_batch(model, gen, None, pad_id=tok.pad_token_id, max_new_tokens=12, **kw)
    for p, f, b in zip(und, feats, batched, strict=True):
        ref = decode_reference(model, p, f, max_new_tokens=12, **kw)
        assert ref.text_ids == b.text_ids and len(b.text_ids) > 0
    for p, b in zip(gen, batched_gen, strict=True):
        ref = decode_reference(model, p, None, max_new_tokens=12, **kw)
        assert b.vision is not None and len(b.vision) == n and b.text_ids == ref.text_ids == []
        if out_space.discrete:
            assert torch.equal(ref.vision, b.vision)
        else:
            assert torch.allclose(ref.vision, b.vision, atol=1e-4)


def test_sampling_is_seeded_and_guidance_changes_ids(encoders):
    torch.manual_seed(0)
    model, tok, prompts, _, out_space = model_for("VQ_g", encoders)
    gen = [prompts.encode([{"from": "human", "value": d}, {"from": "gpt", "value": "Sure: <image>"}],
                          answer_image=False) for d in DRAW]
    uncond = [prompts.encode([{"from": "human", "value": ""}, {"from": "gpt", "value": "Sure: <image>"}],
                             answer_image=False) for _ in DRAW]
    kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, boi_id=prompts.boi_id, n_vision=out_space.n_tokens)
    s1 = decode_batch(model, gen, None, sampling=Sampling(temperature=1.0, top_k=8, seed=3), **kw)
    s2 = decode_batch(model, gen, None, sampling=Sampling(temperature=1.0, top_k=8, seed=3), **kw)
    s3 = decode_batch(model, gen, None, sampling=Sampling(temperature=1.0, top_k=8, seed=4), **kw)
    assert all(torch.equal(a.vision, b.vision) for a, b in zip(s1, s2, strict=True))
    assert any(not torch.equal(a.vision, b.vision) for a, b in zip(s1, s3, strict=True))
    greedy = decode_batch(model, gen, None, **kw)
    guided = decode_batch(model, gen, None, sampling=Sampling(cfg_scale=3.0), uncond=uncond, **kw)
    assert all(g.vision.max() < out_space.vocab_size for g in guided)
    assert any(not torch.equal(a.vision, b.vision) for a, b in zip(greedy, guided, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("autocast", [False, True])
def test_decoding_in_every_precision_with_and_without_autocast(encoders, dtype, autocast):
    """A 16-bit LLM beside fp32 adapters and heads (a pretrained LLM's weights in bf16/fp16):
    text and image decoding work with autocast (training's evaluation points) and without it."""
    for name in ("VQ-VQ", "SigLIP-SigLIP"):
        torch.manual_seed(0)
        model, tok, prompts, in_space, out_space = model_for(name, encoders)
        model.llm.to(dtype)
        n = out_space.n_tokens
        und = [prompts.prompt(q) for q in QUESTIONS[:2]]
        feats = torch.randn(2 * in_space.n_tokens, in_space.feature_dim)
        opened = [prompts.encode([{"from": "human", "value": d}, {"from": "gpt", "value": "<image>"}],
                                 answer_image=False) for d in DRAW]
        kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, boi_id=prompts.boi_id, n_vision=n)
        context = torch.autocast("cpu", dtype=dtype) if autocast and dtype != torch.float32 else nullcontext()
        with context:
            answers = decode_batch(model, und, feats, max_new_tokens=4, **kw)
            images = decode_batch(model, opened, None, max_new_tokens=4, **kw)
        assert all(len(a.text_ids) > 0 for a in answers)
        assert all(i.vision is not None and len(i.vision) == n for i in images)
        if not out_space.discrete:
            assert torch.isfinite(torch.stack([i.vision for i in images]).float()).all()


@pytest.fixture
def fresh_dynamo():
    """dynamo's caches and counters empty before, and emptied after (for the tests that follow)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


def test_a_compiled_decode_step_gives_the_same_output_and_compiles_once_per_shape(encoders, monkeypatch,
                                                                                  fresh_dynamo):
    """compile_step: every step has one shape (mask and cache preallocated, the cache length
    rounded up), so a batch of other prompts whose lengths round to the same length reuses the
    compiled step; its images and text equal the eager step's, also on a second batch that reuses
    the first's cache. (dynamo's graphs run eagerly, without inductor: what is under test is
    uvlm's step, not the compiler.)"""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, **{**kw, "backend": "eager", "mode": None}))
    torch.manual_seed(0)
    model, tok, prompts, in_space, out_space = model_for("VQ-VQ", encoders)
    kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, boi_id=prompts.boi_id, n_vision=out_space.n_tokens,
              max_new_tokens=12)
    draw = [prompts.encode([{"from": "human", "value": d}, {"from": "gpt", "value": "Sure: <image>"}],
                           answer_image=False) for d in (*DRAW, "Draw a smart watch.", "Draw a watch at 10:00.")]
    und = [prompts.prompt(q) for q in QUESTIONS]
    feats = torch.cat([torch.randn(in_space.n_tokens, in_space.feature_dim) for _ in QUESTIONS])
    for batch, features in ((draw[:2], None), (und, feats)):
        eager = decode_batch(model, batch, features, **kw)
        for _ in range(2):  # the second reuses the first's cache
            compiled = decode_batch(model, batch, features, compile_step=True, **kw)
            assert [o.text_ids for o in eager] == [o.text_ids for o in compiled]
            assert all((a.vision is None and b.vision is None) or torch.equal(a.vision, b.vision)
                       for a, b in zip(eager, compiled, strict=True))
    assert any(o.vision is not None for o in eager) or any(o.text_ids for o in eager)
    graphs = fresh_dynamo["stats"]["unique_graphs"]
    assert graphs > 0

    other = draw[2:]  # 7 tokens shorter: 49 positions to fill, not 56
    assert max(len(p) for p in draw[:2]) - max(len(p) for p in other) == 7
    decode_batch(model, other, None, compile_step=True, **kw)
    assert fresh_dynamo["stats"]["unique_graphs"] == graphs
    # flash-attention takes the mask's length as the keys': a mask over the whole cache would let
    # a step attend to empty slots
    model.llm.config._attn_implementation = "flash_attention_2"
    with pytest.raises(UvlmError, match="needs sdpa or eager attention"):
        decode_batch(model, other, None, compile_step=True, **kw)
