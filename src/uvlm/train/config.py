"""Run configuration: dataclasses loaded from YAML, overridable with `--set key=value`.

    model:  name: VQ-VQ          # the paper's name: spaces, tasks, adapters, affine
            llm: tiny            # "tiny" (Llama architecture from scratch) or an HF name/path
    data:   train: {...}         # a dataset folder, or a SmartWatch mixture built in the cache
            test: {...}
            siglip: cpu-siglip   # encoder specs (uvlm.vision.load)
            vq: cpu-vq
    train:  batch_size, lr, ...
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from uvlm.errors import UvlmError
from uvlm.identity import without_neutral
from uvlm.io import read_text_file
from uvlm.model.adapters import ADAPTER_KINDS
from uvlm.model.names import parse_name
from uvlm.model.prompt import TEMPLATES

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cuda")
SHARDINGS = ("none", "fsdp")
ATTENTIONS = ("auto", "sdpa", "eager", "flash_attention_2")
FEATURE_DTYPES = ("float32", "float16")
RECORD_ORDERS = ("random", "modality")


@dataclass
class ModelConfig:
    name: str = "VQ-VQ"
    llm: str = "tiny"
    hidden_size: int = 192  # tiny LLM only
    layers: int = 3
    heads: int = 4
    intermediate_size: int = 512
    lora_r: int = 0  # 0: train the whole LLM (tiny); the paper: 128
    lora_alpha: int = 256
    understanding_adapter: str = "auto"  # linear | mlp2 | auto (the paper's per space)
    generation_adapter: str = "auto"
    affine_strength: float = 0.3
    affine_seed: int = 0
    affine_place: str = "before"  # the release's placement; "after" is the paper text's
    image_loss_weight: float | None = None  # None: 0.2 for VQ targets, 1 for SigLIP
    standardize: bool = True  # fixed per-dimension standardisation of adapter inputs (train-set stats)
    lora_dropout: float = 0.0  # the authors' release: 0.05 (peft's default, never overridden)
    system_prompt: str = ""  # text before the first turn; the paper preset uses vicuna_v1's
    attention: str = "auto"  # auto (flash-attention 2 on a GPU where installed, else sdpa) | sdpa | eager
    template: str = "chat"  # chat (USER:/ASSISTANT: turns) | plain (LLaVA's stage-1 form: image, then answer)


@dataclass
class DataConfig:
    train: Any = field(default_factory=lambda: {"n_vqa": 12000, "n_caption": 12000, "n_generation": 12000})
    test: Any = field(default_factory=lambda: {"split": "test", "seed": 1, "n_vqa": 1000, "n_caption": 0,
                                               "n_generation": 500, "share_images": False})
    siglip: str = "cpu-siglip"
    vq: str = "cpu-vq"
    clip: str = "clip:openai/clip-vit-large-patch14-336"  # Table 2's CLIP models (LLaVA-1.5's encoder)
    feature_dtype: str = "float32"  # how cached encoder features are stored: float32 | float16

    def encoders(self) -> dict[str, str]:
        """The encoder spec of each vision space, by the space's name."""
        return {"siglip": self.siglip, "vq": self.vq, "clip": self.clip}


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: float = 1.0
    batch_size: int = 32  # records per forward/backward on a device, and per optimizer step, unless the next two say
    global_batch: int | None = None  # records per optimizer step, all devices together; None = batch_size
    micro_batch: int | str | None = None  # records per forward/backward on a device: N, "auto" (the
    # largest that fits, uvlm.train.memory), or None (= batch_size); accumulation makes up the rest
    gradient_checkpointing: bool | str = False  # recompute each layer's activations in backward; auto: only
    # where the memory plan needs it to fit a micro-batch of CHECKPOINT_FREE_TOKENS (uvlm.train.memory)
    lr: float = 1e-3  # LLM (or LoRA) parameters
    adapter_lr: float = 1e-3  # adapters and generation head
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    grad_clip: float = 1.0
    checkpoint_every: int = 200  # steps
    keep_checkpoints: int = 2
    eval_points: int = 5  # evaluations during training (the paper's Fig 3 curves)
    eval_samples: int = 300  # validation records per evaluation point
    eval_metrics: bool = True  # also VQA accuracy and judged generation at each point (slower)
    threads: int = 1  # CPU threads; suites run one-thread jobs side by side
    precision: str = "auto"  # auto (bf16 on a supporting GPU, fp16 on others, fp32 on CPU) | bf16 | fp16 | fp32
    device: str = "auto"  # auto (a GPU where torch sees one, else the CPU) | cuda (refuse to start without one)
    sharding: str = "none"  # none (each process holds the whole model) | fsdp (sharded: uvlm.train.sharding)
    compile: bool = False  # the LLM decoder through torch.compile (inductor; minutes to compile, then faster)
    freeze_llm: bool = False  # train the adapters and generation head only (LLaVA's stage 1)
    init_from: str | None = None  # a finished run folder whose weights this run starts from (LLaVA's stage 2)
    max_tokens: int | None = None  # cut each training record at this many tokens, image slots included
    # (LLaVA-1.5's 2,048); None: never cut
    train_encoder: bool = False  # train the input space's encoder (SigLIP or CLIP) with the LLM, from pixels
    record_order: str = "random"  # random (a seeded permutation an epoch) | modality (optimizer steps all
    # records with an image or all without, the leftovers last, as LLaVA's group_by_modality_length)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        arch = parse_name(self.model.name)
        m, t = self.model, self.train
        checks = [
            (t.lr > 0 and t.adapter_lr > 0, f"learning rates must be positive (lr={t.lr}, adapter_lr={t.adapter_lr})"),
            (t.batch_size >= 1, f"batch_size {t.batch_size} must be >= 1"),
            (t.global_batch is None or t.global_batch >= 1, f"global_batch {t.global_batch} must be >= 1"),
            (t.micro_batch in (None, "auto") or (isinstance(t.micro_batch, int) and t.micro_batch >= 1),
             f"micro_batch {t.micro_batch!r}: use a number >= 1, auto, or leave it unset"),
            (t.epochs > 0, f"epochs {t.epochs} must be positive"),
            (t.gradient_checkpointing in (True, False, "auto"),
             f"gradient_checkpointing {t.gradient_checkpointing!r}: use true, false or auto"),
            (0 <= t.warmup_ratio < 1, f"warmup_ratio {t.warmup_ratio} must be in [0, 1)"),
            (t.checkpoint_every >= 1, f"checkpoint_every {t.checkpoint_every} must be >= 1"),
            (t.eval_points >= 0, f"eval_points {t.eval_points} must be >= 0"),
            (t.threads >= 1, f"threads {t.threads} must be >= 1"),
            (t.precision in PRECISIONS, f"precision {t.precision!r}: use {', '.join(PRECISIONS)}"),
            (t.device in DEVICES, f"train.device {t.device!r}: use {', '.join(DEVICES)}"),
            (t.sharding in SHARDINGS, f"sharding {t.sharding!r}: use {', '.join(SHARDINGS)}"),
            (not (t.sharding == "fsdp" and t.precision == "fp16"), FSDP_NOT_FP16),
            (not (t.compile and t.sharding == "fsdp"), "train.compile with train.sharding fsdp is not supported yet; "
                                                       "turn one of them off"),
            (m.attention in ATTENTIONS, f"attention {m.attention!r}: use {', '.join(ATTENTIONS)}"),
            (m.template in TEMPLATES, f"model.template {m.template!r}: use {', '.join(TEMPLATES)}"),
            (t.record_order in RECORD_ORDERS, f"train.record_order {t.record_order!r}: use {', '.join(RECORD_ORDERS)}"),
            (not t.train_encoder or arch.input_space in ("siglip", "clip"),
             f"train.train_encoder trains a SigLIP or CLIP input encoder; {arch.name} reads "
             f"{arch.input_space or 'no image'} (VQ ids are not differentiable): set it false"),
            (not t.train_encoder or arch.input_space not in ("siglip", "clip")
             or self.data.encoders()[arch.input_space].partition(":")[0] in TRAINABLE_ENCODERS,
             f"train.train_encoder needs an encoder with weights (one of {', '.join(TRAINABLE_ENCODERS)}); "
             f"data.{arch.input_space} is {self.data.encoders().get(arch.input_space or '', '')!r}"),
            (not (t.train_encoder and m.standardize), "train.train_encoder with model.standardize: the "
             "standardisation is fitted on the frozen encoder's features, which a trained one leaves; set "
             "model.standardize=false"),
            (not (t.freeze_llm and m.lora_r > 0), f"train.freeze_llm with model.lora_r {m.lora_r}: LoRA would not "
                                                  "train; set lora_r: 0 to train the adapters alone"),
            (0 <= m.lora_dropout < 1, f"lora_dropout {m.lora_dropout} must be in [0, 1)"),
            (self.data.feature_dtype in FEATURE_DTYPES,
             f"feature_dtype {self.data.feature_dtype!r}: use {', '.join(FEATURE_DTYPES)}"),
            (m.understanding_adapter in (*ADAPTER_KINDS, "auto"), f"unknown adapter {m.understanding_adapter!r}"),
            (m.generation_adapter in (*ADAPTER_KINDS, "auto"), f"unknown adapter {m.generation_adapter!r}"),
            (m.affine_place in ("before", "after"), f"affine_place {m.affine_place!r}: use before or after"),
            (not arch.affine or 0 < m.affine_strength < 1, f"affine_strength {m.affine_strength} must be in (0, 1)"),
            (m.lora_r >= 0, f"lora_r {m.lora_r} must be >= 0"),
            (m.lora_alpha > 0, f"lora_alpha {m.lora_alpha} must be positive"),
            (m.llm != "tiny" or min(m.hidden_size, m.layers, m.heads, m.intermediate_size) >= 1,
             f"the tiny LLM's hidden_size, layers, heads and intermediate_size must be >= 1 (got {m.hidden_size}, "
             f"{m.layers}, {m.heads}, {m.intermediate_size})"),
            (m.llm != "tiny" or m.heads < 1 or m.hidden_size % m.heads == 0, "hidden_size must be a multiple of heads"),
            (m.llm != "tiny" or (m.hidden_size <= 8192 and m.layers <= 256),
             f"a tiny LLM of hidden {m.hidden_size} and {m.layers} layers is not tiny: use a pretrained llm"),
            (m.image_loss_weight is None or m.image_loss_weight >= 0,
             f"image_loss_weight {m.image_loss_weight} must be >= 0"),
            (t.weight_decay >= 0, f"weight_decay {t.weight_decay} must be >= 0"),
            (t.max_tokens is None or (isinstance(t.max_tokens, int) and t.max_tokens >= 8),
             f"max_tokens {t.max_tokens} must be a whole number >= 8, or null (never cut)"),
            (t.grad_clip > 0, f"grad_clip {t.grad_clip} must be positive"),
            (t.keep_checkpoints >= 1, f"keep_checkpoints {t.keep_checkpoints} must be >= 1 (the last is what "
                                      "--resume continues from)"),
            (t.eval_samples >= 1, f"eval_samples {t.eval_samples} must be >= 1"),
            (t.seed >= 0, f"seed {t.seed} must be >= 0"),
            (t.epochs <= 1000, f"epochs {t.epochs} is more than 1000"),
            *_celeba_checks(self.data.train, self.data.test),
        ]
        for ok, message in checks:
            if not ok:
                raise UvlmError(f"bad config: {message}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """What names a run: the resolved config, less the fields added after results were first
        published while they hold the value that reproduces the behaviour before them, so runs made
        before a field existed keep their folders (uvlm.suites.spec.Job.key) and can be resumed."""
        return {section: without_neutral(settings, LATER_FIELDS.get(section, {}))
                for section, settings in self.to_dict().items()}


# encoder specs whose weights a run can train (train.train_encoder): a transformers tower
TRAINABLE_ENCODERS = ("siglip", "clip", "cpu-siglip", "tiny-clip")


# Checked here when the config says fp16, and by the loop when `auto` resolves to it (a GPU without bf16).
FSDP_NOT_FP16 = ("train.sharding: fsdp trains in bf16 or fp32, not fp16 (there is no gradient scaler for sharded "
                 "gradients here); set train.precision: bf16")

# Per section, the fields added after the committed results, with the value under which a run
# behaves exactly as before them (uvlm.identity; a changed default must not be listed).
LATER_FIELDS = {
    "model": {"lora_dropout": 0.0, "system_prompt": "", "attention": "auto", "template": "chat"},
    "data": {"feature_dtype": "float32", "clip": "clip:openai/clip-vit-large-patch14-336"},
    "train": {"micro_batch": None, "gradient_checkpointing": False, "sharding": "none", "device": "auto",
              "compile": False, "freeze_llm": False, "init_from": None, "max_tokens": None,
              "train_encoder": False, "record_order": "random"},
}


def _celeba_checks(train, test) -> list[tuple[bool, str]]:
    """A CelebA dataset mapping names its copy, and train and test come from one dataset."""
    def domain(spec) -> str | None:
        return spec.get("domain", "smartwatch") if isinstance(spec, dict) else None  # a folder: known when read

    checks = []
    for role, spec in (("train", train), ("test", test)):
        checks += [(domain(spec) in (None, "smartwatch", "celeba"),
                    f"data.{role}.domain {domain(spec)!r}: use smartwatch or celeba"),
                   (not (domain(spec) == "celeba" and not spec.get("celeba")),
                    f"data.{role} is a CelebA dataset without its source; add celeba: PATH (your copy of CelebA)")]
    both = domain(train), domain(test)
    checks.append((None in both or both[0] == both[1],
                   f"data.train is {both[0]} and data.test is {both[1]}: train and test must come from one dataset"))
    return checks


def _number(value, kind: str, where: str):
    """An int or a float from YAML (which reads "3e-3" as a string), finite."""
    if isinstance(value, bool):
        raise UvlmError(f"bad config: {where} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UvlmError(f"bad config: {where} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UvlmError(f"bad config: {where} must be finite, got {value!r}")
    if kind == "int":
        if not number.is_integer():
            raise UvlmError(f"bad config: {where} must be a whole number, got {value!r}")
        return int(number)
    return number


def _coerce(value, annotation: str, where: str):
    """A YAML value checked against the field's type: numbers (also written as strings), booleans
    (true/false only), strings; `None` only where the type allows it."""
    kinds = [k.strip() for k in annotation.split("|")]
    if "Any" in kinds:
        return value
    if value is None:
        if "None" in kinds:
            return None
        raise UvlmError(f"bad config: {where} needs a value")
    if "bool" in kinds:
        if isinstance(value, bool):
            return value
        if not (isinstance(value, str) and "str" in kinds):  # a word is checked by validate()
            raise UvlmError(f"bad config: {where} must be true or false, got {value!r}")
    if isinstance(value, str) and "str" in kinds:
        looks_numeric = value.strip().lstrip("+-").replace(".", "", 1).replace("e", "", 1).isdigit()
        if not (looks_numeric and ({"int", "float"} & set(kinds))):
            return value  # a word where one is allowed ("auto", a name, a path)
    for kind in ("int", "float"):
        if kind in kinds:
            return _number(value, kind, where)
    if "str" in kinds:
        # an unquoted `cpu-vq:{...}` spec reads as a mapping: say how to keep it text
        hint = (" (quote an encoder spec whole: --set \"data.vq='cpu-vq:{detail_weight: 4}'\")"
                if isinstance(value, dict) and where in ("data.vq", "data.siglip", "data.clip") else "")
        raise UvlmError(f"bad config: {where} must be text, got {value!r}{hint}")
    return value


def _section(cls, values, where: str):
    if not isinstance(values, dict):
        example = {"model": "model: {name: VQ-VQ}", "data": "data: {siglip: cpu-siglip}",
                   "train": "train: {lr: 3e-4}"}[where]
        raise UvlmError(f"bad config: {where} must be a mapping of keys, got {values!r} (e.g. {example})")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UvlmError(f"bad config: unknown key {where}.{unknown[0]}; known: {', '.join(sorted(known))}")
    return cls(**{k: _coerce(v, str(known[k].type), f"{where}.{k}") for k, v in values.items()})


def from_dict(d: dict) -> RunConfig:
    if not isinstance(d, dict):
        raise UvlmError(f"bad config: must be a mapping of sections (model, data, train), got {d!r}")
    unknown = sorted(set(d) - {"model", "data", "train"})
    if unknown:
        raise UvlmError(f"bad config: unknown section {unknown[0]!r}; use model, data and train")
    return RunConfig(*(_section(cls, d[name] if d.get(name) is not None else {}, name)
                       for name, cls in (("model", ModelConfig), ("data", DataConfig),
                                         ("train", TrainConfig)))).validate()


def apply_override(d: dict, assignment: str) -> None:
    """`section.key=value` (value parsed as YAML) into a nested dict."""
    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2:
        raise UvlmError(f"bad --set {assignment!r}: use section.key=value, e.g. train.lr=3e-4")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UvlmError(f"bad --set {assignment!r}: {p} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise UvlmError(f"bad --set {assignment!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None


def load_config(path: Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config (or the defaults), apply overrides, validate."""
    d: dict = {}
    if path is not None:
        text = read_text_file(path, "config", "a YAML file (e.g. configs/cpu/VQ-VQ.yaml)")
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UvlmError(f"config {path} is not valid YAML ({str(e).splitlines()[0]})") from None
        if d is None:
            raise UvlmError(f"config {path} is empty; give model, data and train sections (see configs/)")
        if not isinstance(d, dict):
            raise UvlmError(f"config {path} must be a mapping of sections (model, data, train), got {d!r}")
    for o in overrides:
        apply_override(d, o)
    try:
        return from_dict(d)
    except TypeError as e:
        raise UvlmError(f"bad config: {e}") from None
