"""The unified VLM family: names, prompt layout and loss masks, adapters, affine map, LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvlm.errors import UvlmError
from uvlm.model.adapters import AffineDistortion, Standardize
from uvlm.model.names import parse_name
from uvlm.model.prompt import BOI, EOI, GENERATE, IGNORE, SPECIAL_TOKENS, TEXT, UNDERSTAND, PromptEncoder
from uvlm.model.tokenizer import template_corpus, train_tokenizer
from uvlm.train.build import build_model, build_tokenizer, load_spaces
from uvlm.train.config import from_dict
from uvlm.train.data import collate, load_record_set, resolve_dataset

PAPER_ROWS = ["SigLIP_u", "SigLIP-VQ", "SigLIP-SigLIP", "VQ_u", "VQ_g", "VQ-SigLIP", "VQ-VQ", "SigLIP*_u",
              "SigLIP*-SigLIP", "VQ*_u", "VQ*-VQ", "SigLIP-SigLIP-D", "VQ-VQ-D"]
TINY_MODEL = {"hidden_size": 64, "layers": 2, "heads": 2, "intermediate_size": 128}
TINY_DATA = {"train": {"n_vqa": 12, "n_caption": 12, "n_generation": 12},
             "test": {"split": "test", "seed": 1, "n_vqa": 6, "n_caption": 0, "n_generation": 3,
                      "share_images": False}}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


def config(name: str, encoders: dict, **model) -> dict:
    return {"model": {"name": name, **TINY_MODEL, **model}, "data": {**TINY_DATA, **encoders},
            "train": {"batch_size": 4, "eval_points": 0}}


def test_names_round_trip():
    for name in [*PAPER_ROWS, "VQ*-SigLIP", "SigLIP_g"]:
        assert parse_name(name).name == name
    assert parse_name("VQ-VQ").shared_adapter and not parse_name("VQ-VQ-D").shared_adapter
    assert not parse_name("SigLIP-VQ").shared_adapter
    assert parse_name("VQ_u").tasks == "understanding" and parse_name("VQ_g").tasks == "generation"
    assert parse_name("SigLIP*-SigLIP").affine and parse_name("SigLIP*-SigLIP").tasks == "both"


def test_every_table_row_is_a_name():
    from uvlm.suites.results import paper_tables

    tables = paper_tables()  # the paper's numbers, shipped inside the package
    for key in ("A3_smartwatch_mutual", "A5_weather_biased", "A6_battery_biased", "T2_llava"):
        for name in tables[key]["rows"]:
            assert parse_name(name).name == name


@pytest.mark.parametrize("bad", ["CLIP-DINO", "LLaVA_u", "VQ-VQ-X", "VQ*_g", "SigLIP-VQ-D", "vq", ""])
def test_bad_names(bad):
    with pytest.raises(UvlmError):
        parse_name(bad)


@pytest.fixture(scope="module")
def prompts():
    return PromptEncoder(train_tokenizer(template_corpus(), SPECIAL_TOKENS), n_understand=5)


def test_loss_only_on_answers(prompts):
    tok = prompts.tokenizer
    conv = [{"from": "human", "value": "<image>\nWhat is the weather?"}, {"from": "gpt", "value": "sunny"},
            {"from": "human", "value": "Where is the battery indicator?"}, {"from": "gpt", "value": "top-left"}]
    e = prompts.encode(conv)
    learned = [int(i) for i in e.labels if i != IGNORE]
    assert tok.decode(learned) == " sunny</s> top-left</s>"
    assert (e.labels[e.kinds != TEXT] == IGNORE).all()
    assert (e.kinds == UNDERSTAND).sum() == 5 and (e.kinds == GENERATE).sum() == 0
    # the understanding slots sit right after "USER: "
    first = int((e.kinds == UNDERSTAND).argmax())
    assert tok.decode(e.input_ids[:first]) == "<s>USER: "


def test_generation_layout(prompts):
    tok = prompts.tokenizer
    conv = [{"from": "human", "value": "Draw a smart watch showing 01:02:03."},
            {"from": "gpt", "value": "Here you go: <image>"}]
    e = prompts.encode(conv)
    slots = (e.kinds == GENERATE).nonzero()[0]
    assert len(slots) == 5 and (e.kinds == UNDERSTAND).sum() == 0
    assert tok.convert_ids_to_tokens(int(e.input_ids[slots[0] - 1])) == BOI  # <boi> predicts slot 1
    assert tok.convert_ids_to_tokens(int(e.input_ids[slots[-1] + 1])) == EOI
    learned = tok.decode([int(i) for i in e.labels if i != IGNORE])
    assert learned == f" Here you go: {BOI}{EOI}</s>"
    mixed = PromptEncoder(tok, n_understand=3, n_generate=7)  # e.g. 196 SigLIP in, 256 VQ out
    assert (mixed.encode(conv).kinds == GENERATE).sum() == 7
    prompt = prompts.encode(conv, answer_image=False)
    assert tok.convert_ids_to_tokens(int(prompt.input_ids[-1])) == BOI and len(prompt) < len(e)


@pytest.mark.parametrize("name", PAPER_ROWS)
def test_every_row_builds_and_takes_a_step(name, encoders):
    cfg = from_dict(config(name, encoders))
    arch = parse_name(name)
    in_space, out_space = load_spaces(cfg, arch)
    tok = build_tokenizer(cfg)
    model = build_model(cfg, in_space, out_space, tok)
    data = load_record_set(resolve_dataset(cfg.data.train, "train"), arch, PromptEncoder(tok, 16), in_space,
                           out_space)
    tasks = {r["task"] for r in data.records}
    assert tasks == {"understanding": {"vqa", "caption"}, "generation": {"generation"},
                     "both": {"vqa", "caption", "generation"}}[arch.tasks]
    batch = collate(data, list(range(len(data))), tok.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = model(batch)
    out["loss"].backward()
    opt.step()
    assert torch.isfinite(out["loss"])
    assert (out["image_loss"] > 0) == (arch.output_space is not None)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    if arch.input_space:
        assert any(n.startswith("understanding_adapter") for n in changed)
    if arch.output_space:
        assert any(n.startswith("generation_head") for n in changed)


def test_shared_and_detached_adapters(encoders):
    def adapters(name):
        cfg = from_dict(config(name, encoders))
        in_space, out_space = load_spaces(cfg, parse_name(name))
        return build_model(cfg, in_space, out_space, build_tokenizer(cfg))

    shared = adapters("VQ-VQ")
    assert shared.generation_adapter is shared.understanding_adapter
    assert shared.generation_adapter.weight is shared.understanding_adapter.weight
    n_shared = len(shared.adapter_parameters())
    detached = adapters("VQ-VQ-D")
    assert detached.generation_adapter is not detached.understanding_adapter
    assert detached.generation_adapter.weight.data_ptr() != detached.understanding_adapter.weight.data_ptr()
    assert len(detached.adapter_parameters()) == n_shared + 2  # one more linear: weight and bias
    mixed = adapters("SigLIP-VQ")
    assert mixed.generation_adapter is not mixed.understanding_adapter


def test_affine_map_is_invertible_fixed_and_only_on_understanding(encoders):
    a = AffineDistortion(8, 0.3, seed=0)
    x = torch.randn(20, 8)
    assert torch.allclose(a.inverse(a(x)), x, atol=1e-4)
    assert torch.equal(AffineDistortion(8, 0.3, seed=0).matrix, a.matrix)
    assert not torch.equal(AffineDistortion(8, 0.3, seed=1).matrix, a.matrix)
    singular = torch.linalg.svdvals(a.matrix.double())
    assert singular.min() >= 0.7 - 1e-6 and singular.max() <= 1.3 + 1e-6  # Q S with S in [0.7, 1.3]
    assert list(dict(a.named_parameters())) == []  # buffers: never trained
    cfg = from_dict(config("VQ*-VQ", encoders))
    in_space, out_space = load_spaces(cfg, parse_name("VQ*-VQ"))
    model = build_model(cfg, in_space, out_space, build_tokenizer(cfg))
    codes = torch.randn(3, 8)
    adapter = model.understanding_adapter
    assert torch.allclose(model.understand(codes), adapter(model.affine(codes)))
    ids = torch.tensor([1, 2, 3])
    assert torch.allclose(model.generate_input(ids), adapter(model.codebook[ids]))  # undistorted


def test_lora_wraps_only_the_llm(tmp_path, encoders):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(template_corpus())
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64)).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    cfg = from_dict(config("VQ-VQ", encoders, llm=str(tmp_path / "llm"), lora_r=4, lora_alpha=8))
    in_space, out_space = load_spaces(cfg, parse_name("VQ-VQ"))
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, in_space, out_space, tokenizer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert lora and all(n.startswith("llm.") for n in lora)
    assert not any("lora_" in n for n, _ in model.named_parameters() if not n.startswith("llm."))
    assert all(p.requires_grad for p in model.adapter_parameters())
    frozen_base = [n for n, p in model.named_parameters() if n.startswith("llm.") and "lora_" not in n
                   and "trainable_tokens" not in n and not p.requires_grad]
    assert frozen_base, "the base LLM weights stay frozen"
    assert len(tokenizer) == len(tok) + 3


def test_standardization_is_fitted_fixed_and_shared_with_the_adapter(encoders):
    def model_of(name):
        cfg = from_dict(config(name, encoders))
        in_space, out_space = load_spaces(cfg, parse_name(name))
        return build_model(cfg, in_space, out_space, build_tokenizer(cfg))

    g = torch.Generator().manual_seed(0)
    features = 5 + 3 * torch.randn(50, 4, 8, generator=g)
    shared = model_of("VQ-VQ")
    assert shared.output_norm is shared.input_norm
    shared.fit_standardization(features, torch.randint(0, 16, (50, 4), generator=g))
    z = shared.input_norm(features.reshape(-1, 8))
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)
    assert torch.allclose(z.std(0), torch.ones(8), atol=1e-5)
    assert torch.allclose(shared.understand(features[0]), shared.understanding_adapter(z[:4]), atol=1e-5)
    assert not any(n.startswith(("input_norm", "output_norm")) for n, _ in shared.named_parameters())

    detached = model_of("VQ-VQ-D")
    ids = torch.randint(0, 16, (50, 4), generator=g)
    detached.fit_standardization(features, ids)
    codes = detached.codebook[ids].reshape(-1, 8)
    assert torch.allclose(detached.output_norm.mean, codes.mean(0), atol=1e-5)
    assert not torch.allclose(detached.output_norm.mean, detached.input_norm.mean)

    off = from_dict(config("VQ-VQ", encoders, standardize=False))
    in_space, out_space = load_spaces(off, parse_name("VQ-VQ"))
    plain = build_model(off, in_space, out_space, build_tokenizer(off))
    assert plain.input_norm is None and plain.output_norm is None


def test_standardization_fits_in_chunks_as_in_one_pass():
    g = torch.Generator().manual_seed(1)
    x = 7 + 2 * torch.randn(300, 5, 6, generator=g, dtype=torch.float16).float()
    one, chunked = Standardize(6), Standardize(6)
    one.fit(x, chunk=len(x) * 5)
    chunked.fit(x, chunk=7)  # 1500 rows in 215 chunks, the last one short
    flat = x.reshape(-1, 6).double()
    assert torch.allclose(chunked.mean.double(), flat.mean(0), atol=1e-6)
    assert torch.allclose(chunked.std.double(), flat.std(0), atol=1e-6)
    assert torch.allclose(chunked.mean, one.mean, atol=1e-6) and torch.allclose(chunked.std, one.std, atol=1e-6)


def test_siglip_generation_regenerates_memorised_images():
    """A SigLIP-output model that memorised 16 images (teacher forcing) regenerates them, decoding
    greedily, closer than the per-position mean of its targets does. The head is trained with
    1 - cosine, so its raw output has no set length: fed back raw, decoding drifts further from
    the targets than the mean (measured here: 0.61 vs 0.39, 1 - cos); rescaled to the targets'
    length, 0.21."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from uvlm.eval.decode import decode_batch
    from uvlm.model.unified import SpaceInfo, UnifiedVLM
    from uvlm.train.data import RecordSet

    torch.manual_seed(0)
    n_tok, dim, n_img = 8, 32, 16
    g = torch.Generator().manual_seed(0)
    common = torch.randn(dim, generator=g)
    # like our SigLIP stand-in: one dominant direction shared by every token, then position and image
    targets = 45 * common / common.norm() + 4 * torch.randn(n_tok, dim, generator=g) + \
        12 * torch.randn(n_img, n_tok, dim, generator=g)
    tok = train_tokenizer(template_corpus(), SPECIAL_TOKENS)
    prompts = PromptEncoder(tok, n_tok)
    convs = [[{"from": "human", "value": f"Can you draw a smart watch showing {i + 1:02d}:{7 * i:02d}:{3 * i:02d}?"},
              {"from": "gpt", "value": "Here you go: <image>"}] for i in range(n_img)]
    data = RecordSet([prompts.encode(c) for c in convs], np.arange(n_img), [], None, targets)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=2, intermediate_size=128,
                                       max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    model = UnifiedVLM(parse_name("SigLIP_g"), llm, None, SpaceInfo("siglip", dim, n_tok, False))
    model.fit_standardization(None, targets)
    assert torch.allclose(model.target_norm, targets.norm(dim=-1).mean(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = collate(data, list(range(n_img)), tok.pad_token_id)
    for _ in range(250):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["image_loss"] < 0.01  # memorised under teacher forcing
    model.eval()
    opened = [prompts.encode(c, answer_image=False) for c in convs]

    def distance() -> float:
        outs = decode_batch(model, opened, None, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                            boi_id=prompts.boi_id, n_vision=n_tok)
        made = torch.stack([o.vision for o in outs])
        return float((1 - torch.nn.functional.cosine_similarity(made, targets, dim=-1)).mean())

    mean = targets.mean(0, keepdim=True).expand_as(targets)
    baseline = float((1 - torch.nn.functional.cosine_similarity(mean, targets, dim=-1)).mean())
    rescaled = distance()
    model.target_norm.zero_()  # unfitted: the head's raw output is fed back
    raw = distance()
    assert rescaled < 0.75 * baseline and raw > baseline, (rescaled, baseline, raw)


def test_validation_losses_do_not_depend_on_how_records_fall_into_batches(encoders):
    """Image loss per generation slot, text loss per answer token: a VQA-only batch adds no zero
    image loss (which diluted it about 2x in unified runs), and batch size changes nothing."""
    from uvlm.train.loop import validation_loss

    cfg = from_dict(config("VQ-VQ", encoders))
    arch = parse_name("VQ-VQ")
    in_space, out_space = load_spaces(cfg, arch)
    tok = build_tokenizer(cfg)
    model = build_model(cfg, in_space, out_space, tok)
    data = load_record_set(resolve_dataset(cfg.data.train, "train"), arch, PromptEncoder(tok, 16), in_space,
                           out_space, ("vqa", "generation"))  # 12 VQA records, then 12 generation records
    whole = validation_loss(model, data, tok.pad_token_id, len(data), "cpu")
    for size in (4, 5):
        split = validation_loss(model, data, tok.pad_token_id, size, "cpu")
        for key, value in whole.items():
            assert split[key] == pytest.approx(value, rel=1e-5), (size, key)
    assert whole["val_image_loss"] > 0


def test_system_prompt_opens_every_sequence_and_is_never_learned(prompts):
    tok = prompts.tokenizer
    system = PromptEncoder(tok, n_understand=5, system="smart watch answers")
    conv = [{"from": "human", "value": "<image>\nWhat is the weather?"}, {"from": "gpt", "value": "sunny"}]
    plain, opened = prompts.encode(conv), system.encode(conv)
    extra = len(opened) - len(plain)
    assert extra == len(tok("smart watch answers ", add_special_tokens=False)["input_ids"]) > 0
    assert (opened.labels[1:1 + extra] == IGNORE).all() and (opened.labels[1 + extra:] == plain.labels[1:]).all()


def test_one_space_in_both_roles_is_read_from_one_cache_entry(encoders):
    cfg = from_dict(config("SigLIP-SigLIP", encoders))
    arch = parse_name("SigLIP-SigLIP")
    in_space, out_space = load_spaces(cfg, arch)
    assert in_space is out_space
    tok = build_tokenizer(cfg)
    data = load_record_set(resolve_dataset(cfg.data.train, "train"), arch, PromptEncoder(tok, 16), in_space,
                           out_space)
    assert data.und_features is data.gen_targets  # one memory-mapped array, not two loads


def test_a_record_cut_at_max_tokens_keeps_the_first_slots_of_its_last_image(encoders):
    """train.max_tokens cuts records as LLaVA-1.5 cuts at 2,048 tokens, through an image's slots
    if need be: the batch carries that image's first slots only, and the model trains on it."""
    cfg = from_dict(config("VQ-VQ", encoders))
    arch = parse_name("VQ-VQ")
    in_space, out_space = load_spaces(cfg, arch)
    tok = build_tokenizer(cfg)
    model = build_model(cfg, in_space, out_space, tok)
    prompts = PromptEncoder(tok, 16)
    root = resolve_dataset(cfg.data.train, "train")
    whole = load_record_set(root, arch, prompts, in_space, out_space, ("vqa", "generation"))
    generation = next(i for i, r in enumerate(whole.records) if r["task"] == "generation")
    vqa = next(i for i, r in enumerate(whole.records) if r["task"] == "vqa")
    slots = np.flatnonzero(whole.encoded[generation].kinds == GENERATE)
    cut_at = int(slots[5])  # five of the image's 16 generation slots kept
    cut = load_record_set(root, arch, prompts, in_space, out_space, ("vqa", "generation"), max_tokens=cut_at)
    assert len(cut.encoded[generation]) == cut_at and all(len(e) <= cut_at for e in cut.encoded)
    assert (cut.encoded[generation].input_ids == whole.encoded[generation].input_ids[:cut_at]).all()
    batch = collate(cut, [vqa, generation], tok.pad_token_id)
    assert batch.gen_targets.shape[0] == 5
    assert torch.equal(batch.gen_targets, whole.gen_targets[whole.image_rows[generation]][:5])
    out = model(batch)
    assert torch.isfinite(out["loss"]) and out["n_slots"] == 5
    short = load_record_set(root, arch, prompts, in_space, out_space, ("vqa",), max_tokens=10_000)
    assert all(len(a) == len(b) for a, b in zip(short.encoded, whole.encoded, strict=False))  # nothing to cut
    from uvlm.train.config import RunConfig

    assert RunConfig().identity() == from_dict({"train": {"max_tokens": None}}).identity()  # old runs keep their names
    with pytest.raises(UvlmError, match="max_tokens 4 must be a whole number >= 8"):
        from_dict({"train": {"max_tokens": 4}})
