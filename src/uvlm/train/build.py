"""Build a run's model: vision spaces, tokenizer, LLM (tiny or pretrained, optionally LoRA)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from uvlm.data.folder import read_manifest
from uvlm.errors import UvlmError
from uvlm.model.names import Architecture, parse_name
from uvlm.model.prompt import SPECIAL_TOKENS, PromptEncoder
from uvlm.model.tokenizer import template_corpus, train_tokenizer
from uvlm.model.unified import SpaceInfo, UnifiedVLM
from uvlm.train.config import RunConfig
from uvlm.vision.load import load_space
from uvlm.vision.space import VisionSpace


@dataclass
class RunParts:
    """What a run's model works with besides its weights: evaluation and probes start from it."""

    tokenizer: object
    prompts: PromptEncoder
    in_space: VisionSpace | None
    out_space: VisionSpace | None
    test_root: Path

    def style(self) -> dict:
        """The render style (size, detail scale, face radius) of the run's test set."""
        config = read_manifest(self.test_root)["config"]
        return {k: config[k] for k in ("size", "detail_scale", "face_radius")}


def space_info(space: VisionSpace | None) -> SpaceInfo | None:
    if space is None:
        return None
    return SpaceInfo(space.name, space.feature_dim, space.n_tokens, space.discrete, space.vocab_size)


def load_spaces(cfg: RunConfig, arch: Architecture) -> tuple[VisionSpace | None, VisionSpace | None]:
    """The frozen encoders of the input and output spaces (each loaded once)."""
    specs = {"siglip": cfg.data.siglip, "vq": cfg.data.vq}
    loaded = {space: load_space(specs[space]) for space in {arch.input_space, arch.output_space} - {None}}
    return loaded.get(arch.input_space), loaded.get(arch.output_space)


def build_tokenizer(cfg: RunConfig):
    if cfg.model.llm == "tiny":
        return train_tokenizer(template_corpus(), SPECIAL_TOKENS)
    try:
        tok = AutoTokenizer.from_pretrained(cfg.model.llm, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UvlmError(f"cannot load the tokenizer of {cfg.model.llm!r} ({str(e).splitlines()[0]}); "
                        "give a local folder or a hub id already in the HF cache") from None
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def build_llm(cfg: RunConfig, tokenizer):
    m = cfg.model
    if m.llm == "tiny":
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=m.hidden_size, num_hidden_layers=m.layers,
                             num_attention_heads=m.heads, num_key_value_heads=m.heads,
                             intermediate_size=m.intermediate_size, max_position_embeddings=512,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
        return LlamaForCausalLM(config)
    try:
        llm = AutoModelForCausalLM.from_pretrained(m.llm, local_files_only=True, torch_dtype="auto")
    except (OSError, ValueError) as e:
        raise UvlmError(f"cannot load the LLM {m.llm!r} ({str(e).splitlines()[0]}); give a local folder "
                        "or a hub id already in the HF cache") from None
    llm.resize_token_embeddings(len(tokenizer))
    return llm


def add_lora(llm, cfg: RunConfig, tokenizer):
    """Wrap the LLM (only) with LoRA; the added special tokens' embeddings stay trainable."""
    from peft import LoraConfig, get_peft_model

    new_ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    lora = LoraConfig(r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM",
                      trainable_token_indices={"embed_tokens": new_ids})
    return get_peft_model(llm, lora)


def build_model(cfg: RunConfig, in_space: VisionSpace | None, out_space: VisionSpace | None,
                tokenizer) -> UnifiedVLM:
    """The UnifiedVLM of `cfg`, its weights initialised from the run seed."""
    arch = parse_name(cfg.model.name)
    torch.manual_seed(cfg.train.seed)
    llm = build_llm(cfg, tokenizer)
    if cfg.model.lora_r > 0:
        llm = add_lora(llm, cfg, tokenizer)
    codebook = None
    if out_space is not None and out_space.discrete:
        codebook = out_space.model.quantize.embedding.weight.detach().clone()
    m = cfg.model
    return UnifiedVLM(arch, llm, space_info(in_space), space_info(out_space),
                      understanding_adapter=m.understanding_adapter, generation_adapter=m.generation_adapter,
                      affine_strength=m.affine_strength, affine_seed=m.affine_seed,
                      affine_place=m.affine_place, image_loss_weight=m.image_loss_weight, codebook=codebook,
                      standardize=m.standardize)
