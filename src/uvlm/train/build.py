"""Build a run's model: vision spaces, tokenizer, LLM (tiny or pretrained, optionally LoRA)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from uvlm.data.folder import read_manifest
from uvlm.data.smartwatch import RenderStyle
from uvlm.device import Placement, placement
from uvlm.errors import UvlmError
from uvlm.model.names import Architecture, parse_name
from uvlm.model.prompt import SPECIAL_TOKENS, PromptEncoder
from uvlm.model.tokenizer import template_corpus, train_tokenizer
from uvlm.model.unified import SpaceInfo, UnifiedVLM
from uvlm.train.config import RunConfig
from uvlm.train.packaged import llm_source
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
    place: Placement = field(default_factory=placement)  # where the model computes
    faces: tuple[Path, Path] | None = None  # a CelebA run's (train, test) folders: its judge is trained on them

    def style(self) -> dict:
        """The render style of the run's test set (RenderStyle.to_dict: what the judges are keyed by)."""
        return manifest_style(self.test_root)


def manifest_style(root: Path) -> dict:
    """The render style a dataset folder was made with, as RenderStyle.to_dict gives it."""
    return RenderStyle.of(read_manifest(root)["config"]).to_dict()


def space_info(space: VisionSpace | None) -> SpaceInfo | None:
    if space is None:
        return None
    return SpaceInfo(space.name, space.feature_dim, space.n_tokens, space.discrete, space.vocab_size)


def load_spaces(cfg: RunConfig, arch: Architecture, place: Placement | None = None,
                faces: tuple[Path, Path] | None = None) -> tuple[VisionSpace | None, VisionSpace | None]:
    """The encoders of the input and output spaces (each loaded once), on the run's device.
    `faces`: a CelebA run's (train, test) folders (uvlm.train.data.face_folders), whose faces its
    stand-ins (cpu-*) are pretrained on. A run that trains its encoder gets its own copy of the
    input space's, so that a SigLIP-SigLIP or CLIP-CLIP output space stays frozen."""
    specs = cfg.data.encoders()
    used = {arch.input_space, arch.output_space} - {None}
    device = (place or placement(cfg.train.precision)).device
    loaded = {space: load_space(specs[space], faces).to(device) for space in used}
    in_space, out_space = loaded.get(arch.input_space), loaded.get(arch.output_space)
    if cfg.train.train_encoder and in_space is out_space:
        in_space = load_space(specs[arch.input_space], faces).to(device)
    return in_space, out_space


# Llama shapes uvlm can build with random weights (`llm: random:NAME`), for speed and memory
# measurements that download nothing; "llama-tiny" runs the same code on a CPU.
KNOWN_LLMS = {
    "lmsys/vicuna-7b-v1.5": {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                             "num_key_value_heads": 32, "num_hidden_layers": 32, "vocab_size": 32000,
                             "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    "llama-tiny": {"hidden_size": 64, "intermediate_size": 172, "num_attention_heads": 4, "num_key_value_heads": 4,
                   "num_hidden_layers": 2, "vocab_size": 32000, "max_position_embeddings": 4096,
                   "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
}


def build_tokenizer(cfg: RunConfig):
    """The run's tokenizer: the pretrained LLM's, or (tiny and random LLMs) a word-level one
    trained on the phrases of the run's dataset and its system prompt."""
    if cfg.train.init_from:  # a later stage reads text as the run it starts from did
        if not (Path(cfg.train.init_from) / "final.json").exists():
            raise UvlmError(f"train.init_from {cfg.train.init_from} is not a finished run (no final.json); give "
                            "the folder of a run that finished, or finish it first (`uvlm train --resume`)")
        return AutoTokenizer.from_pretrained(Path(cfg.train.init_from) / "weights" / "tokenizer")
    if cfg.model.llm == "tiny" or cfg.model.llm.startswith("random:"):
        from uvlm.train.data import dataset_domain

        domain = dataset_domain(cfg.data.train)
        if domain == "llava":
            from uvlm.data.llava_folder import llava_corpus
            from uvlm.model.tokenizer import train_byte_tokenizer

            return train_byte_tokenizer(llava_corpus(Path(cfg.data.train)), SPECIAL_TOKENS)
        corpus = template_corpus(domain)
        system = cfg.model.system_prompt.strip()
        return train_tokenizer([*corpus, system, " " + system] if system else corpus, SPECIAL_TOKENS)
    source = llm_source(cfg.model.llm)  # a packaged LLM is converted here: its own errors, not "cannot load"
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UvlmError(f"cannot load the tokenizer of {cfg.model.llm!r} ({str(e).splitlines()[0]}); "
                        "give a local folder or a hub id already in the HF cache") from None
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def attention_implementation(choice: str, place: Placement) -> str:
    """`auto`: flash-attention 2 on a GPU in 16 bits where the package is installed, else SDPA."""
    if choice != "auto":
        return choice
    if place.device.type == "cuda" and place.mixed and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def tiny_llm_config(cfg: RunConfig, tokenizer) -> LlamaConfig:
    """The cpu preset's LLM: a Llama trained from scratch, sized by the config."""
    m = cfg.model
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=m.hidden_size, num_hidden_layers=m.layers,
                       num_attention_heads=m.heads, num_key_value_heads=m.heads,
                       intermediate_size=m.intermediate_size, max_position_embeddings=512,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)


def build_llm(cfg: RunConfig, tokenizer, place: Placement | None = None):
    """The LLM: the tiny one in fp32 (trained whole, computing under autocast), or a pretrained one
    with its frozen weights in the precision's dtype (a 7B in fp32 would double its memory), both
    with the resolved attention and, if asked, gradient checkpointing."""
    m = cfg.model
    place = place or placement(cfg.train.precision)
    attention = attention_implementation(m.attention, place)
    if m.llm == "tiny":
        config = tiny_llm_config(cfg, tokenizer)
        config._attn_implementation = attention
        llm = LlamaForCausalLM(config)
    elif m.llm.startswith("random:"):
        name = m.llm.removeprefix("random:")
        if name not in KNOWN_LLMS:
            raise UvlmError(f"unknown random LLM {name!r}; use one of {', '.join(KNOWN_LLMS)}")
        config = LlamaConfig(**KNOWN_LLMS[name], pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        config._attn_implementation = attention
        with torch.device(place.device):  # a 7B initialised where it will train, in the weights' dtype
            llm = LlamaForCausalLM(config).to(place.dtype)
    else:
        source = llm_source(m.llm)
        try:
            llm = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, dtype=place.dtype,
                                                       attn_implementation=attention)
        except (OSError, ValueError) as e:
            raise UvlmError(f"cannot load the LLM {m.llm!r} ({str(e).splitlines()[0]}); give a local folder "
                            "or a hub id already in the HF cache") from None
        # new rows (the added tokens) start at the mean of the old ones, in the weights' dtype
        llm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if cfg.train.gradient_checkpointing is True:  # `auto` is decided before (uvlm.train.memory.checkpointing_for)
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        llm.config.use_cache = False
    return llm


def add_lora(llm, cfg: RunConfig, tokenizer):
    """Wrap the LLM (only) with LoRA. The added special tokens stay trainable where they are read
    (input embeddings) and, for an LLM whose output layer is not tied to them (Vicuna), where
    they are written: without that, the output rows of `<boi>` and `<eoi>` stay at their
    initial values and the model cannot learn to open an image."""
    from peft import LoraConfig, get_peft_model

    new_ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    tokens = {"embed_tokens": new_ids}
    if not llm.config.tie_word_embeddings:
        tokens["lm_head"] = new_ids
    lora = LoraConfig(r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lora_dropout=cfg.model.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM", trainable_token_indices=tokens)
    model = get_peft_model(llm, lora)
    # peft resolves "all-linear" to a set and saves it in the set's order, which each process's
    # string hashes decide: sorted, the saved adapter_config.json has the same bytes in every run
    config = model.peft_config["default"]
    if isinstance(config.target_modules, set | list):  # a regex string stays as it is
        config.target_modules = sorted(config.target_modules)
    return model


@contextmanager
def lora_in_run_dtype(model) -> Iterator[None]:
    """A context in which LoRA computes in the run's 16-bit dtype: peft casts each LoRA module's
    input to its fp32 weights' dtype and runs dropout on that copy (about 60% of a step's
    elementwise memory traffic at Vicuna's widths, a third of its activations); under autocast the
    matmuls run in 16 bits either way, and the weights, which AdamW updates, stay fp32. Training
    wraps forward and backward in it (checkpointing recomputes inside backward), entered under
    autocast; with fp32 weights (every cpu-scale run), or no autocast of their dtype, it changes
    nothing. (peft's own `disable_input_dtype_casting`
    fails on the trainable-token layers that uvlm adds.)"""
    llm = getattr(model, "llm", None)
    frozen = next((p for p in llm.parameters() if not p.requires_grad), None) if llm is not None else None
    # only where autocast computes in the frozen weights' dtype (a CPU has no fp16 autocast)
    kind = frozen.device.type if frozen is not None else "cpu"
    active = (frozen is not None and frozen.dtype in (torch.bfloat16, torch.float16)
              and torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == frozen.dtype)
    layers = [m for m in llm.modules() if hasattr(m, "cast_input_dtype_enabled")] if active else []
    before = [m.cast_input_dtype_enabled for m in layers]
    for m in layers:
        m.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for m, value in zip(layers, before, strict=True):
            m.cast_input_dtype_enabled = value


def prompt_encoder(cfg: RunConfig, tokenizer, in_space: VisionSpace | None,
                   out_space: VisionSpace | None) -> PromptEncoder:
    """The prompt layout of a run: its spaces' token counts and the config's system prompt."""
    return PromptEncoder(tokenizer, (in_space or out_space).n_tokens, (out_space or in_space).n_tokens,
                         system=cfg.model.system_prompt, template=cfg.model.template)


def build_model(cfg: RunConfig, in_space: VisionSpace | None, out_space: VisionSpace | None,
                tokenizer, place: Placement | None = None) -> UnifiedVLM:
    """The UnifiedVLM of `cfg`, its weights initialised from the run seed (on the CPU)."""
    arch = parse_name(cfg.model.name)
    torch.manual_seed(cfg.train.seed)
    llm = build_llm(cfg, tokenizer, place)
    if cfg.model.lora_r > 0:
        llm = add_lora(llm, cfg, tokenizer)
    codebook = None
    if out_space is not None and out_space.discrete:
        codebook = out_space.codebook.clone()
    m = cfg.model
    encoder = None
    if cfg.train.train_encoder:
        from uvlm.model.encoder import TrainedEncoder

        encoder = TrainedEncoder(in_space, checkpointing=cfg.train.gradient_checkpointing is True)
    return UnifiedVLM(arch, llm, space_info(in_space), space_info(out_space),
                      understanding_adapter=m.understanding_adapter, generation_adapter=m.generation_adapter,
                      affine_strength=m.affine_strength, affine_seed=m.affine_seed,
                      affine_place=m.affine_place, image_loss_weight=m.image_loss_weight, codebook=codebook,
                      standardize=m.standardize, encoder=encoder)
