"""The memory plan of a run: what a device holds, and the largest micro-batch that fits.

Per device: the LLM's weights (16-bit for a pretrained LLM in bf16/fp16, fp32 otherwise), for
every trained parameter its fp32 value, gradient and two AdamW moments (16 bytes), the
activations that backward needs for each record of a micro-batch, the logits of the scored
positions, and a fixed overhead (CUDA context and allocator slack).

Activations per decoder layer are linear in the widths. The coefficients below were measured
with saved-tensor hooks on transformers' Llama layers (SDPA attention, peft LoRA on every
linear layer) and fit exactly (to 0.02%) as bytes per token

    a * hidden + b * intermediate + c * heads + d * lora_r

plus, under autocast, the 16-bit copies of trained weights that a layer keeps once per
forward (independent of tokens). With gradient checkpointing a layer keeps only its input, and
one layer's activations exist at a time while it is recomputed. Backward adds scratch (the
gradients flowing between layers and inside the one being differentiated) of about
BACKWARD_SCRATCH x hidden bytes per token. What trains besides the LLM (LoRA) is counted too:
the generation head (67M parameters for a VQ head at Vicuna's width, 1 GiB with its gradient and
AdamW moments) and the adapters. tests/test_memory.py checks the activations against
saved-tensor hooks, and the whole step's peak against torch's MemTracker, at Vicuna-7B widths.

`plan()` is what `uvlm plan` prints; `micro_batch_size()` resolves `train.micro_batch` for
the training loop (`auto`: the plan's choice, then one confirming forward/backward on the
longest records, halving on out-of-memory).

A trained encoder (`train.train_encoder`) adds its fp32 weights, what training them holds (16
bytes a trained parameter) and its activations for one image a record (LLaVA's records show at
most one), estimated with the same per-layer coefficients as the LLM's (fit on Llama layers, not
measured on a ViT's, whose MLP has one matrix fewer).

Sharded (`train.sharding: fsdp`, uvlm.train.sharding), a device holds 1/N of the weights
(trained ones in fp32), gradients and AdamW moments, plus what is gathered whole at a time: the
root unit (embeddings, LM head) for the whole step, and two decoder layers (the one computing
and the one prefetched) with their unsharded gradients (reduce-scattered after every
micro-batch, so accumulation adds nothing). That part is a bound from FSDP's design, not
measured.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from uvlm.errors import UvlmError

# (weights, lora) -> per-token bytes per layer: hidden, intermediate, heads, lora_r (dropout 0), and
# what LoRA dropout > 0 adds on hidden and intermediate.
LAYER_COEFFICIENTS = {
    # refit with transformers 5.25 / peft 0.21 under bf16 autocast (a layer's share within a stack, 2
    # layers - 1, at two token counts), LoRA computing in the run's 16-bit dtype
    # (uvlm.train.build.lora_in_run_dtype): exact at four widths; "e" is bytes per token whatever the
    # widths (rotary tables; head_dim was 128 in every fit). With peft's fp32 input copies a layer
    # keeps 52% more at Vicuna's widths. Keys and values are counted at full width: with grouped-query
    # attention (SmolLM2) a layer keeps a little less than this says.
    ("16-bit", True): {"a": 20, "b": 8, "c": 4, "d": 14, "e": 616, "a_dropout": 20, "b_dropout": 2},
    # the kinds below (the tiny preset's, and full fine-tuning) keep an earlier fit, not rechecked
    ("fp32", True): {"a": 32, "b": 16, "c": 4, "d": 28, "a_dropout": 40, "b_dropout": 4},
    ("fp32", False): {"a": 40, "b": 16, "c": 4, "d": 0, "a_dropout": 0, "b_dropout": 0},
    ("fp32 under autocast", False): {"a": 34, "b": 8, "c": 4, "d": 0, "a_dropout": 0, "b_dropout": 0},
}
# x hidden bytes per token that backward holds beyond the saved activations and the gradients of
# weights: measured with MemTracker at Vicuna widths, 9,728 tokens, without checkpointing (9.8)
BACKWARD_SCRATCH = 10
NON_LAYER_PER_TOKEN = 9  # x hidden bytes: input embeddings, final norm (measured: 4.5 x hidden in 16 bits)
# `gradient_checkpointing: auto` turns it off where a micro-batch of this many tokens fits without
# it: recomputation costs a third more compute, while a GPU's matmuls run near their peak from a
# few thousand rows on (a rule of thumb, to be measured by benchmarks/gpu_check.sh)
CHECKPOINT_FREE_TOKENS = 2048
OVERHEAD_BYTES = 1.5 * 2**30  # CUDA context, allocator slack, kernels' workspaces
FRAGMENTATION = 1.10
GIB = 2**30



@dataclass(frozen=True)
class Shape:
    """The widths of a decoder-only LLM that memory depends on."""

    hidden: int
    intermediate: int
    heads: int
    layers: int
    vocab: int
    tied: bool

    kv_heads: int | None = None  # grouped-query attention's key/value heads; None: as many as heads

    @property
    def kv_width(self) -> int:
        """The width of the key and value projections' outputs."""
        return self.hidden * (self.kv_heads or self.heads) // self.heads

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (attention, MLP, two norms)."""
        return 2 * self.hidden**2 + 2 * self.hidden * self.kv_width + 3 * self.hidden * self.intermediate \
            + 2 * self.hidden

    @property
    def params(self) -> int:
        """Parameters of a Llama-architecture model (embeddings, layers, head)."""
        head = 0 if self.tied else self.vocab * self.hidden
        return self.vocab * self.hidden + self.layers * self.layer_params + self.hidden + head

    def lora_params(self, r: int) -> int:
        """LoRA parameters on every linear layer of every decoder layer."""
        h, m = self.hidden, self.intermediate
        return self.layers * r * (2 * 2 * h + 2 * (h + self.kv_width) + 3 * (h + m))


@dataclass(frozen=True)
class Layout:
    """Tokens of the longest record of a run: what one record costs in activations."""

    tokens: int  # sequence length
    scored: int  # positions the LM head is scored on (answer tokens)
    slots: int  # generation slots (the generation head's positions)
    head_width: int  # the generation head's outputs per slot (VQ codebook size or SigLIP width)


@dataclass(frozen=True)
class Plan:
    shape: Shape
    params: int
    trainable: int
    weights_bytes: float
    optimizer_bytes: float
    per_record_bytes: float
    fixed_bytes: float  # per forward, independent of the micro-batch (16-bit weight copies, one recomputed layer)
    micro_batch: int  # the largest that fits (at least 1), at most the per-device batch
    per_device: int  # records per optimizer step on a device
    device_bytes: float | None  # what was planned against; None: no limit known
    checkpointing: bool = False  # gradient checkpointing, as given or as `auto` decided
    encoder_params: int = 0  # a trained encoder's (frozen encoders are not held by the model)
    vision_params: int = 0  # adapters and generation head

    def total(self, micro: int) -> float:
        return (self.weights_bytes + self.optimizer_bytes + self.fixed_bytes + micro * self.per_record_bytes
                + OVERHEAD_BYTES) * FRAGMENTATION

    @property
    def fits(self) -> bool:
        return self.device_bytes is None or self.total(self.micro_batch) <= self.device_bytes


def layer_bytes(shape: Shape, tokens: int, *, weights16: bool, autocast16: bool, lora_r: int,
                lora_dropout: float) -> tuple[float, float]:
    """(bytes per token, bytes per forward) that one decoder layer keeps for backward."""
    lora = lora_r > 0
    kind = ("16-bit" if weights16 else "fp32") if lora else ("fp32 under autocast" if autocast16 else "fp32")
    k = LAYER_COEFFICIENTS[(kind, lora)]
    h, m = shape.hidden, shape.intermediate
    dropout = lora_dropout > 0
    per_token = ((k["a"] + dropout * k["a_dropout"]) * h + (k["b"] + dropout * k["b_dropout"]) * m
                 + k["c"] * shape.heads + k["d"] * lora_r + k.get("e", 0))
    if lora and autocast16:  # 16-bit copies of LoRA A and B (measured: 22 r h + 6 r m)
        fixed = 22 * lora_r * h + 6 * lora_r * m
    elif autocast16:  # 16-bit copies of the layer's weights
        fixed = 8 * h * h + 6 * h * m
    else:
        fixed = 0.0
    return float(per_token), float(fixed)


def activation_bytes(shape: Shape, layout: Layout, *, weights16: bool, autocast16: bool, lora_r: int,
                     lora_dropout: float, checkpointing: bool) -> tuple[float, float]:
    """(bytes per record, bytes per forward) kept for backward by a whole forward."""
    per_token, fixed = layer_bytes(shape, layout.tokens, weights16=weights16, autocast16=autocast16,
                                   lora_r=lora_r, lora_dropout=lora_dropout)
    # the residual stream is in the weights' dtype (fp32 weights under autocast: fp32 between layers);
    # what autocast's matmuls write is 16-bit
    stream = 2 if weights16 else 4
    act = 2 if (weights16 or autocast16) else 4
    if checkpointing:  # each layer keeps its input; one layer is recomputed at a time
        layers = shape.layers * stream * shape.hidden * layout.tokens + per_token * layout.tokens
    else:
        layers = shape.layers * per_token * layout.tokens
    non_layer = NON_LAYER_PER_TOKEN * shape.hidden * layout.tokens * stream / 2
    # scored logits: the head's output, its fp32 copy and the log-softmax kept for the loss
    logits = layout.scored * shape.vocab * (act + 8) + layout.slots * layout.head_width * (act + 8)
    scratch = BACKWARD_SCRATCH * shape.hidden * layout.tokens
    return layers + non_layer + logits + scratch, shape.layers * fixed


def llm_shape(model_cfg) -> tuple[Shape, str]:
    """The LLM's shape and where it came from: the tiny config, the local HF config, or uvlm's
    table of known models (for planning on a machine that does not hold the model)."""
    from uvlm.train.build import KNOWN_LLMS

    def known(c: dict) -> Shape:
        return Shape(c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_hidden_layers"],
                     c["vocab_size"], c["tie_word_embeddings"], c.get("num_key_value_heads"))

    if model_cfg.llm == "tiny":
        return Shape(model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.heads, model_cfg.layers,
                     vocab=2000, tied=False), "the tiny preset"
    name = model_cfg.llm.removeprefix("random:")
    if model_cfg.llm.startswith("random:") and name in KNOWN_LLMS:
        return known(KNOWN_LLMS[name]), "uvlm's table (random weights)"
    try:
        from transformers import AutoConfig

        from uvlm.train.packaged import llm_source

        c = AutoConfig.from_pretrained(llm_source(model_cfg.llm), local_files_only=True)
        return Shape(c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers, c.vocab_size,
                     bool(getattr(c, "tie_word_embeddings", False)), getattr(c, "num_key_value_heads", None)), \
            "its config.json"
    except (OSError, ValueError):
        if name in KNOWN_LLMS:
            return known(KNOWN_LLMS[name]), "uvlm's table (the model is not in the local HF cache)"
        from uvlm.train.packaged import PACKAGED

        raise UvlmError(f"cannot read the shape of {model_cfg.llm!r}: not in the local HF cache and not one of "
                        f"{', '.join([*KNOWN_LLMS, *PACKAGED])}; give a local folder") from None


def plan(cfg, layout: Layout, device_bytes: float | None, world: int = 1, shape: Shape | None = None,
         gpu: bool | None = None) -> Plan:
    """The memory plan of run config `cfg` for records of `layout` on devices of `device_bytes`.
    `gpu`: plan for a GPU (precision `auto` is then bf16) whatever this machine has; default:
    this machine's device. `train.gradient_checkpointing: auto` is decided first
    (`resolve_checkpointing`); the plan says which it took."""
    from uvlm.device import placement
    from uvlm.model.names import parse_name

    shape = shape or llm_shape(cfg.model)[0]
    cfg = resolve_checkpointing(cfg, layout, device_bytes, world, shape, gpu)
    mixed = (gpu and cfg.train.precision == "auto") or placement(cfg.train.precision).mixed
    pretrained = cfg.model.llm != "tiny"
    weights16 = pretrained and mixed
    lora_r = cfg.model.lora_r
    sharded = cfg.train.sharding == "fsdp" and world > 1
    # sharded, trained weights are held in fp32 (uvlm.train.sharding): without LoRA that is all of them
    held16 = weights16 and not (sharded and not lora_r)
    per_record, fixed = activation_bytes(shape, layout, weights16=held16, autocast16=mixed, lora_r=lora_r,
                                         lora_dropout=cfg.model.lora_dropout,
                                         checkpointing=cfg.train.gradient_checkpointing)
    params = shape.params
    vision = vision_params(cfg, shape.hidden, layout.head_width)  # adapters and generation head, fp32
    if mixed:  # autocast's 16-bit copies of them, kept for backward (VQ's head at Vicuna's width: 128 MiB)
        fixed += 2 * vision
    llm_trained = shape.lora_params(lora_r) + 2 * 3 * shape.hidden if lora_r else 0 if cfg.train.freeze_llm else params
    tower = trained_tower(cfg)
    encoder, encoder_trained, encoder_layer = 0, 0, 0
    if tower is not None:
        encoder, encoder_layer = tower.params, tower.layer_params
        encoder_trained = encoder - encoder_layer  # its last layer is never read (features are layer -2's)
        image = Layout(tower.tokens, 0, 0, 0)
        kept, copies = activation_bytes(tower, image, weights16=False, autocast16=mixed, lora_r=0,
                                        lora_dropout=0.0, checkpointing=cfg.train.gradient_checkpointing)
        per_record += kept - BACKWARD_SCRATCH * tower.hidden * tower.tokens  # scratch: the larger of the two, once
        fixed += copies  # its weights' 16-bit copies under autocast
    trainable = llm_trained + vision + encoder_trained
    # a trained tower that is also the output space (CLIP-CLIP) leaves a frozen copy beside it for targets
    arch = parse_name(cfg.model.name)
    frozen_copy = encoder * 4 if arch.input_space == arch.output_space else 0
    weights = params * (2 if held16 else 4) + (llm_trained * 4 if lora_r else 0) + (vision + encoder) * 4 \
        + frozen_copy
    optimizer = trainable * 12  # gradient, two AdamW moments (fp32); the fp32 values are in `weights`
    if sharded:
        root = params - shape.layers * shape.layer_params
        gathered = root + 2 * shape.layer_params
        width = 2 if held16 else 4
        weights = (params * width + (llm_trained * 4 if lora_r else 0) + vision * 4 + encoder * 4) / world \
            + gathered * width + vision * 4 + 2 * encoder_layer * 4 + frozen_copy
        # a unit's whole gradients, unscattered (the LLM's, or a trained tower's layers)
        optimizer = optimizer / world + (0 if lora_r else gathered * 4) + 2 * encoder_layer * 4
    global_batch = cfg.train.global_batch or cfg.train.batch_size
    per_device = math.ceil(global_batch / world)
    partial = Plan(shape, params, trainable, weights, optimizer, per_record, fixed, 1, per_device, device_bytes,
                   bool(cfg.train.gradient_checkpointing), encoder, vision)
    micro = per_device
    if device_bytes is not None:
        room = device_bytes / FRAGMENTATION - weights - optimizer - fixed - OVERHEAD_BYTES
        largest = max(1, min(per_device, int(room // per_record)))
        micro = math.ceil(per_device / math.ceil(per_device / largest))  # as many steps, equal micro-batches
    return Plan(**{**partial.__dict__, "micro_batch": micro})


def trained_tower(cfg) -> ViTShape | None:
    """A trained encoder's shape, its tokens per image among it; None where the encoder is frozen."""
    if not cfg.train.train_encoder:
        return None
    from uvlm.model.names import parse_name

    hidden, intermediate, heads, layers, patch, size = vision_tower_config(cfg.data.encoders()[
        parse_name(cfg.model.name).input_space])
    tokens = (size // patch) ** 2 + 1  # CLIP's class token (SigLIP has none: one token's error)
    return ViTShape(hidden, intermediate, heads, layers, vocab=0, tied=True, patch=patch, tokens=tokens)


@dataclass(frozen=True)
class ViTShape(Shape):
    """A vision transformer's widths (`params` count a ViT's: a two-matrix MLP, biases, patch and
    position embeddings) and its tokens per image."""

    patch: int = 14
    tokens: int = 577

    @property
    def layer_params(self) -> int:
        h, m = self.hidden, self.intermediate
        return 4 * h * h + 4 * h + 2 * h * m + h + m + 4 * h

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + 3 * self.patch**2 * self.hidden + self.tokens * self.hidden \
            + 5 * self.hidden


# The paper's towers (SigLIP-base, LLaVA-1.5's CLIP ViT-L/14-336), for planning where their configs
# are not on this machine: hidden, intermediate, heads, layers, patch, image size
KNOWN_TOWERS = {"siglip:google/siglip-base-patch16-224": (768, 3072, 12, 12, 16, 224),
                "clip:openai/clip-vit-large-patch14-336": (1024, 4096, 16, 24, 14, 336)}


def vision_tower_config(spec: str) -> tuple[int, int, int, int, int, int]:
    """(hidden, intermediate, heads, layers, patch, image size) of a SigLIP or CLIP encoder spec,
    from its config where this machine has it (no weights read)."""
    kind, _, source = spec.partition(":")
    if kind == "tiny-clip":
        from uvlm.vision.clip import TINY_CLIP as c

        return (c["hidden_size"], c["intermediate_size"], c["num_attention_heads"], c["num_hidden_layers"],
                c["patch_size"], c["image_size"])
    if kind == "cpu-siglip":
        from uvlm.vision.pretrain import stand_in_config

        c = stand_in_config(spec)
        return c.hidden_size, 4 * c.hidden_size, c.heads, c.layers, c.patch_size, c.style["size"]
    try:
        from transformers import CLIPVisionConfig, SiglipVisionConfig

        from uvlm.vision.load import weights_path

        c = (CLIPVisionConfig if kind == "clip" else SiglipVisionConfig).from_pretrained(weights_path(source),
                                                                                         local_files_only=True)
        return c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers, c.patch_size, \
            c.image_size
    except (OSError, ValueError):
        if spec in KNOWN_TOWERS:
            return KNOWN_TOWERS[spec]
        raise UvlmError(f"cannot read the shape of encoder {spec!r} on this machine") from None


def vision_params(cfg, hidden: int, head_width: int) -> int:
    """Parameters of a run's understanding and generation adapters and generation head (all
    trained, in fp32), from its encoders' widths (`space_tokens`)."""
    from uvlm.model.adapters import default_adapter
    from uvlm.model.names import parse_name

    arch = parse_name(cfg.model.name)
    specs = cfg.data.encoders()

    def adapter(kind: str, space: str) -> int:
        kind = default_adapter(space) if kind == "auto" else kind
        first = space_tokens(specs[space])[1] * hidden + hidden
        return first + (hidden * hidden + hidden if kind == "mlp2" else 0)

    n = adapter(cfg.model.understanding_adapter, arch.input_space) if arch.input_space else 0
    if arch.output_space:
        if not arch.shared_adapter:
            n += adapter(cfg.model.generation_adapter, arch.output_space)
        n += hidden * head_width + head_width
    return n


def resolve_checkpointing(cfg, layout: Layout, device_bytes: float | None, world: int = 1, shape: Shape | None = None,
                          gpu: bool | None = None):
    """`cfg` with `train.gradient_checkpointing: auto` decided: off where the run's micro-batch fits
    without it (`micro_batch: auto`: where one of at least CHECKPOINT_FREE_TOKENS tokens, or the
    whole per-device batch, does), and where no device limit is known (the CPU); on otherwise.
    true and false stay as they are."""
    t = cfg.train
    if t.gradient_checkpointing != "auto":
        return cfg
    off = dataclasses.replace(cfg, train=dataclasses.replace(t, gradient_checkpointing=False))
    if device_bytes is None:
        return off
    without = plan(off, layout, device_bytes, world, shape, gpu)
    if t.micro_batch == "auto":
        needed = min(without.per_device, math.ceil(CHECKPOINT_FREE_TOKENS / layout.tokens))
        fits = without.micro_batch >= needed and without.fits
    else:  # a micro-batch as given (or the whole batch): it must fit as it is
        fits = without.total(min(int(t.micro_batch or t.batch_size), without.per_device)) <= device_bytes
    return off if fits else dataclasses.replace(cfg, train=dataclasses.replace(t, gradient_checkpointing=True))


def checkpointing_for(cfg, data, out_space, accelerator):
    """The run config with `gradient_checkpointing: auto` decided for this device and the run's
    longest records (`resolve_checkpointing`)."""
    if cfg.train.gradient_checkpointing != "auto":
        return cfg
    return resolve_checkpointing(cfg, layout_of(data.encoded, out_space), device_memory(accelerator.device),
                                 accelerator.num_processes)


def device_memory(device: torch.device) -> float | None:
    """Bytes a device holds (GPU), or None where the limit is the host's (CPU)."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return None


def layout_of(encoded: list, out_space) -> Layout:
    """The layout of the longest records of tokenised records (`Encoded`): the longest sequence,
    the most scored tokens and the most generation slots of any record."""
    from uvlm.model.prompt import GENERATE, IGNORE

    width = 0 if out_space is None else (out_space.vocab_size if out_space.discrete else out_space.feature_dim)
    return Layout(max(len(e) for e in encoded), max(int((e.labels != IGNORE).sum()) for e in encoded),
                  max(int((e.kinds == GENERATE).sum()) for e in encoded), width)


@contextmanager
def out_of_memory_named(micro: int) -> Iterator[None]:
    """A device out-of-memory error becomes one line naming the settings that lower memory."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise UvlmError(f"out of device memory at micro-batch {micro}: set train.micro_batch lower (or auto), "
                        "or train.gradient_checkpointing=true; `uvlm plan CONFIG` shows the estimate") from None


def micro_batch_size(cfg, model, data, pad_id: int, accelerator, confirm: bool = True) -> int:
    """`train.micro_batch` resolved: a number as given; unset: batch_size; `auto`: the memory plan's
    largest micro-batch for this device, confirmed (unless `confirm` is off) by one
    forward/backward on the longest records (halved on out-of-memory)."""
    t = cfg.train
    per_device = math.ceil((t.global_batch or t.batch_size) / accelerator.num_processes)
    if t.micro_batch is None:
        return t.batch_size
    if t.micro_batch != "auto":
        return min(int(t.micro_batch), per_device)
    limit = device_memory(accelerator.device)
    if limit is None:  # on the CPU there is nothing to confirm against: the per-device batch at once
        return per_device
    out_space = accelerator.unwrap_model(model).generation_head
    width = 0 if out_space is None else out_space.proj.out_features
    layout = layout_of(data.encoded, None)
    layout = Layout(layout.tokens, layout.scored, layout.slots, width)
    micro = plan(cfg, layout, limit, accelerator.num_processes).micro_batch
    return _confirm(model, data, pad_id, accelerator, micro) if confirm else micro


def _confirm(model, data, pad_id: int, accelerator, micro: int) -> int:
    """The largest micro-batch up to `micro` that survives a forward/backward on the longest records."""
    from uvlm.train.build import lora_in_run_dtype
    from uvlm.train.data import collate

    longest = sorted(range(len(data)), key=lambda i: -len(data.encoded[i]))
    while True:
        try:
            batch = collate(data, longest[:micro], pad_id).to(accelerator.device)
            with accelerator.autocast(), lora_in_run_dtype(accelerator.unwrap_model(model)):
                accelerator.backward(model(batch)["loss"])
            model.zero_grad(set_to_none=True)
            return micro
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if micro == 1:
                raise UvlmError("out of device memory with one record per micro-batch: turn on "
                                "train.gradient_checkpointing, or use a device with more memory") from None
            micro //= 2


def space_tokens(spec: str) -> tuple[int, int, int | None]:
    """(tokens per image, feature width, codebook size or None) of an encoder spec, read from its
    config files where they are on this machine, without loading weights."""
    from uvlm.vision.pretrain import stand_in_config
    from uvlm.vision.vq import VQConfig

    kind, _, source = spec.partition(":")
    if kind in ("cpu-siglip", "tiny-clip") or (kind in ("siglip", "clip") and source):
        hidden, _, _, _, patch, size = vision_tower_config(spec)
        return (size // patch) ** 2, hidden, None
    if kind == "cpu-vq":
        c = stand_in_config(spec)
        grid = c.style["size"] // 2 ** (len(c.channel_multiplier) - 1)
        return grid**2, c.embed_dim, c.num_embeddings
    if kind == "synthetic":
        from uvlm.vision.synthetic import SHAPES

        if source in SHAPES:
            return SHAPES[source]
    if kind == "tiny-vq":
        from uvlm.vision.vq import TINY_VQ

        c = VQConfig.from_dict({k: v for k, v in TINY_VQ.items() if k != "seed"})
        return c.grid**2, c.embed_dim, c.num_embeddings
    if kind == "vq" and source:
        import json
        from pathlib import Path

        sidecar = Path(source).with_suffix(".json")
        c = VQConfig.from_dict(json.loads(sidecar.read_text())) if sidecar.exists() else VQConfig()
        return c.grid**2, c.embed_dim, c.num_embeddings
    from uvlm.vision.load import SPEC_HELP

    raise UvlmError(f"unknown encoder {spec!r}; {SPEC_HELP}")


def sample_encoded(cfg, sample: int = 300) -> tuple[list, str, int]:
    """The first `sample` records of each task the run trains on, made as text only (no images)
    and tokenised with the run's tokenizer where this machine has it (else the template's): the
    records (`Encoded`), which tokenizer, and the generation head's width."""
    from uvlm.data.celeba import ATTRIBUTES as FACE_ATTRIBUTES
    from uvlm.data.faces import make_face_record
    from uvlm.data.mixture import image_attributes, image_name, make_record
    from uvlm.model.names import parse_name
    from uvlm.model.prompt import PromptEncoder
    from uvlm.train.build import build_tokenizer
    from uvlm.train.data import TASKS_OF, dataset_config

    arch = parse_name(cfg.model.name)
    specs = cfg.data.encoders()
    spaces = {s: space_tokens(specs[s]) for s in {arch.input_space, arch.output_space} - {None}}
    n_in = spaces[arch.input_space or arch.output_space][0]
    n_out, width, vocab = spaces[arch.output_space or arch.input_space]
    # a described dataset (a folder may not be on this machine: planned as SmartWatch's)
    spec = cfg.data.train if isinstance(cfg.data.train, dict) else {}
    try:
        tokenizer, source = build_tokenizer(cfg), "the run's tokenizer"
    except UvlmError:  # a pretrained LLM that is not on this machine: text lengths from our template's
        from uvlm.model.prompt import SPECIAL_TOKENS
        from uvlm.model.tokenizer import template_corpus, train_tokenizer

        corpus = template_corpus("celeba" if spec.get("domain") == "celeba" else "smartwatch")
        tokenizer, source = train_tokenizer(corpus, SPECIAL_TOKENS), "the template tokenizer"
    prompts = PromptEncoder(tokenizer, n_in, n_out, system=cfg.model.system_prompt, template=cfg.model.template)
    mixture = dataset_config(spec)
    encoded = []
    for task in TASKS_OF[arch.tasks]:
        for j in range(min(sample, mixture.counts[task])):
            if spec.get("domain") == "celeba":  # every combination of values comes round
                values = {a: bool(j >> i & 1) for i, a in enumerate(FACE_ATTRIBUTES)}
                record = make_face_record(mixture, task, j, values, image_name(j))
            else:
                record = make_record(mixture, task, j, image_attributes(mixture, mixture.image_index(task, j)),
                                     image_name(j))
            encoded.append(prompts.encode(record["conversations"]))
    return encoded, source, 0 if arch.output_space is None else (vocab or width)


def planned_layout(cfg, sample: int = 300) -> tuple[Layout, str]:
    """The layout of the longest of `sample` records of each task the run trains on (`sample_encoded`)."""
    encoded, source, head = sample_encoded(cfg, sample)
    layout = layout_of(encoded, None)
    return Layout(layout.tokens, layout.scored, layout.slots, head), source


def describe_plan(cfg, layout: Layout, layout_source: str, gpus: int = 1,
                  gpu_mem: float | None = None) -> list[tuple[str, str]]:
    """The memory plan of `cfg` on `gpus` devices of `gpu_mem` GB (default: this machine's), as
    (what, how much) rows for people: `uvlm plan` and `uvlm llava plan` print them."""
    from uvlm.device import placement

    if gpu_mem is not None and not (math.isfinite(gpu_mem) and gpu_mem > 0):
        raise UvlmError(f"--gpu-mem {gpu_mem} must be a positive number of GB")
    if gpus < 1:
        raise UvlmError(f"--gpus {gpus} must be >= 1")
    if gpus > (cfg.train.global_batch or cfg.train.batch_size):
        raise UvlmError(f"--gpus {gpus} is more than the run's {cfg.train.global_batch or cfg.train.batch_size} "
                        "records per step; each GPU needs at least one")
    shape, shape_source = llm_shape(cfg.model)
    limit = gpu_mem * 1e9 if gpu_mem is not None else device_memory(placement(cfg.train.precision).device)
    p = plan(cfg, layout, limit, gpus, shape, gpu=limit is not None or cfg.train.device == "cuda")
    micro = p.micro_batch if cfg.train.micro_batch in (None, "auto") else int(cfg.train.micro_batch)
    if cfg.train.micro_batch is None:
        micro = cfg.train.batch_size
    micro = min(micro, p.per_device)  # as the loop takes it (uvlm.train.memory.micro_batch_size)
    steps = -(-p.per_device // micro)
    fits = limit is None or p.total(micro) <= limit
    trained = (f" (LoRA r {cfg.model.lora_r})" if cfg.model.lora_r
               else (" (the LLM frozen: adapters, head and encoder)" if p.encoder_params
                     else " (the LLM frozen: adapters and head)")
               if cfg.train.freeze_llm else "")
    parts = f"{p.params / 1e6:,.1f}M LLM + {p.vision_params / 1e6:,.1f}M adapters and head" \
        + (f" + {p.encoder_params / 1e6:,.1f}M encoder" if p.encoder_params else "")
    global_batch = cfg.train.global_batch or cfg.train.batch_size
    uneven = global_batch % gpus != 0  # the busiest device's share
    return [("LLM", f"{cfg.model.llm} ({shape.layers} layers, hidden {shape.hidden}; shape from {shape_source})"),
            ("parameters", f"{parts}, {p.trainable / 1e6:,.1f}M trained{trained}"),
            ("longest record", f"{layout.tokens} tokens, {layout.scored} scored, {layout.slots} generation slots "
                               f"({layout_source})"),
            ("weights", f"{p.weights_bytes / GIB:.1f} GiB"
                        + (f" (sharded over {gpus} GPUs, FSDP)" if cfg.train.sharding == "fsdp" and gpus > 1 else "")),
            ("gradients + AdamW", f"{p.optimizer_bytes / GIB:.1f} GiB"),
            ("activations", f"{p.per_record_bytes / GIB:.2f} GiB per record"
                            + (f" (gradient checkpointing {'on' if p.checkpointing else 'off'}, chosen by the plan)"
                               if cfg.train.gradient_checkpointing == "auto"
                               else " (gradient checkpointing)" if p.checkpointing else "")),
            ("micro-batch", f"{micro} of {'up to ' if uneven else ''}{p.per_device} records per device per step "
                            f"({steps} accumulation step{'s' * (steps > 1)}"
                            + (f"; {global_batch} over {gpus} GPUs)" if uneven else ")")
                            + (", chosen to fit (train.micro_batch: auto)" if cfg.train.micro_batch == "auto" else "")),
            ("memory per device", f"{p.total(micro) / GIB:.1f} GiB"
                                  + (f" of {limit / GIB:.1f} GiB: {'fits' if fits else 'DOES NOT FIT'}"
                                     if limit else " (no device limit known: pass --gpu-mem)"))]


def check_host_memory(cfg, runs: int = 1) -> None:
    """On the CPU, refuse (one line) a run whose memory plan, times the `runs` trained side by
    side, is more than the machine has free, before anything is written: the kernel's
    out-of-memory killer would take down more than it."""
    from uvlm.device import placement
    from uvlm.resources import need_memory

    if placement(cfg.train.precision).device.type != "cpu":
        return
    p = plan(cfg, planned_layout(cfg)[0], None)
    need = p.total(p.micro_batch) - OVERHEAD_BYTES * FRAGMENTATION  # no CUDA context on the CPU
    what = f"training {cfg.model.name} ({p.params:,} LLM parameters, micro-batch {p.micro_batch})"
    if runs > 1:
        need_memory(runs * need, f"{what}, {runs} runs at a time", "use fewer --workers")
    need_memory(need, what,
                "use a smaller model (model.hidden_size, model.layers) or a smaller train.batch_size or micro_batch")
