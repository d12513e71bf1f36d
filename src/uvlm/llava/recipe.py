"""Table 2's two-stage recipe: LLaVA-1.5's training, with or without image-generation records.

    stage 1   the adapters and the generation head alone (LLM and CLIP frozen): lr 1e-3, 256 a step
    stage 2   the whole LLM with them (CLIP frozen or trained, see below): lr 2e-5, 128 a step, sharded
Both: one epoch, cosine schedule, 3% warmup, bf16, checkpointing where the memory plan needs it.

A model's two stages are two runs, `OUT/stage1` and `OUT/stage2`, each an ordinary `uvlm train`
run (resumable to the bit); stage 2 starts from stage 1's final weights (`train.init_from`),
so a two-stage run cut anywhere resumes with the same command.

Where the paper and the authors' release differ (see ../shared/paper/notes.md), one flag,
`--recipe`, chooses. `release` (the default: its models gave Table 2's numbers) and `paper` (the
paper's text, and upstream LLaVA-1.5's recipe where the paper follows it without saying more):

                          release                          paper
    CLIP in stage 2       frozen (cached features)         trained with the LLM, at its lr, from pixels
    stage-1 template      the chat template, as stage 2    `plain`: the image, then the caption
    record order          a seeded random order            stage 2's steps all with images or all without
                                                           (LLaVA's group_by_modality_length)

The fourth difference, which 350K generation records (the release's first in file order, the
paper's "sample"), is fixed when the data is built: `uvlm llava data --select first|random`.
"""

from __future__ import annotations

import copy
from pathlib import Path

from uvlm.errors import UvlmError
from uvlm.model.names import parse_name
from uvlm.train.config import apply_override, from_dict
from uvlm.train.memory import Layout

MODELS = ("LLaVA", "CLIP-CLIP", "CLIP-VQ")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")

# LLaVA-1.5 cuts a conversation at 2,048 tokens, image slots included (model_max_length): the
# paper preset does too (train.max_tokens), and its memory plan is sized for that length
MAX_TOKENS = 2048
_PAPER_MODEL = {"llm": "lmsys/vicuna-7b-v1.5", "lora_r": 0, "understanding_adapter": "mlp2",
                "generation_adapter": "mlp2", "standardize": False, "system_prompt": VICUNA_SYSTEM}
_PAPER_TRAIN = {"epochs": 1, "warmup_ratio": 0.03, "micro_batch": "auto", "gradient_checkpointing": "auto",
                "precision": "bf16", "device": "cuda", "eval_points": 0, "checkpoint_every": 200,
                "max_tokens": MAX_TOKENS}
# Per preset, per stage: the settings of a run config (its data.train and model.name are added).
PRESETS = {
    "paper": {
        "encoders": {"clip": "clip:openai/clip-vit-large-patch14-336", "vq": "vq:checkpoints/vq_ds16_t2i.pt"},
        "stage1": {"model": _PAPER_MODEL, "train": {**_PAPER_TRAIN, "freeze_llm": True, "lr": 1e-3, "adapter_lr": 1e-3,
                                                    "batch_size": 256, "global_batch": 256}},
        "stage2": {"model": _PAPER_MODEL, "train": {**_PAPER_TRAIN, "lr": 2e-5, "adapter_lr": 2e-5, "batch_size": 128,
                                                    "global_batch": 128, "sharding": "fsdp"}},
    },
    # Plumbing on a CPU in minutes: a 2-layer LLM trained from scratch (byte-level BPE on the
    # data's text), a random tiny CLIP and a random tiny VQ (nothing to pretrain). Stage 2 keeps stage 1's learning
    # rate: at 2e-5 a randomly initialised LLM would learn nothing in a few dozen steps.
    "tiny": {
        "encoders": {"clip": "tiny-clip", "vq": "tiny-vq"},
        "stage1": {"model": {"llm": "tiny", "hidden_size": 64, "layers": 2, "heads": 4, "intermediate_size": 128,
                             "understanding_adapter": "mlp2", "generation_adapter": "mlp2", "standardize": False},
                   "train": {"freeze_llm": True, "lr": 1e-3, "adapter_lr": 1e-3, "batch_size": 8, "epochs": 1,
                             "eval_points": 0, "checkpoint_every": 4}},
        "stage2": {"model": {"llm": "tiny", "hidden_size": 64, "layers": 2, "heads": 4, "intermediate_size": 128,
                             "understanding_adapter": "mlp2", "generation_adapter": "mlp2", "standardize": False},
                   "train": {"lr": 1e-3, "adapter_lr": 1e-3, "batch_size": 8, "epochs": 1, "eval_points": 0,
                             "checkpoint_every": 4}},
    },
}


# Per recipe, per stage: the settings that differ from the preset's (as --set assignments, so a
# run's config says plainly what its recipe changed).
RECIPES = {
    "release": {"stage1": [], "stage2": []},
    "paper": {"stage1": ["model.template=plain"],
              "stage2": ["train.train_encoder=true", "train.record_order=modality"]},
}


def known_model(name: str) -> str:
    """One of Table 2's models, refused in one line otherwise."""
    if name not in MODELS:
        raise UvlmError(f"unknown Table 2 model {name!r}; use one of {', '.join(MODELS)}")
    return parse_name(name).name


def known_preset(preset: str) -> str:
    """One of PRESETS, refused in one line otherwise."""
    if preset not in PRESETS:
        raise UvlmError(f"unknown LLaVA preset {preset!r}; use one of {', '.join(PRESETS)}")
    return preset


def known_recipe(recipe: str) -> str:
    """One of RECIPES, refused in one line otherwise."""
    if recipe not in RECIPES:
        raise UvlmError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    return recipe


def stage_config(preset: str, stage: str, model: str, train_folder: Path, overrides: list[str] = (),
                 init_from: Path | None = None, recipe: str = "release") -> dict:
    """The run config (as a dict) of one stage of one model under one preset and recipe.
    `overrides`: `--set` assignments applied to both stages (section.key=value), after the recipe's."""
    settings = copy.deepcopy(PRESETS[known_preset(preset)][stage])
    # resolved paths: a run's identity must not depend on the folder the command was typed in
    folder = str(Path(train_folder).resolve())
    cfg = {"model": {"name": known_model(model), **settings["model"]},
           "data": {"train": folder, "test": folder, **PRESETS[preset]["encoders"]},
           "train": settings["train"]}
    if init_from is not None:
        cfg["train"]["init_from"] = str(Path(init_from).resolve())
    for assignment in [*RECIPES[known_recipe(recipe)][stage], *overrides]:
        apply_override(cfg, assignment)
    from_dict(cfg)  # every mistake in one line, before anything is built
    return cfg


def stage_data(data: Path, preset: str, stage: str, overrides: list[str] = ()) -> Path:
    """The dataset folder of a stage, its images padded and sized for the preset's CLIP."""
    from uvlm.data.llava_folder import stage_folder
    from uvlm.vision.clip import clip_geometry

    probe = {"data": {"clip": PRESETS[preset]["encoders"]["clip"]}}
    for assignment in overrides:
        if assignment.strip().startswith("data.clip="):
            apply_override(probe, assignment)
    size, colour = clip_geometry(probe["data"]["clip"])
    return stage_folder(Path(data), stage, size, colour)


def planned_layout(cfg) -> Layout:
    """What the memory plan sizes a stage by: a record of LLaVA's longest, every text token scored,
    and (for a unified model) a whole image's generation slots besides."""
    from uvlm.train.memory import space_tokens

    arch = parse_name(cfg.model.name)
    specs = cfg.data.encoders()
    n_in = space_tokens(specs[arch.input_space])[0]
    n_out, width, vocab = space_tokens(specs[arch.output_space]) if arch.output_space else (0, 0, None)
    return Layout(MAX_TOKENS, MAX_TOKENS - n_in, n_out, vocab or width)


def plans(model: str, preset: str, gpus: int, gpu_mem: float | None, overrides: list[str] = (),
          recipe: str = "release") -> dict:
    """Both stages' memory plans (uvlm.train.memory.describe_plan rows) for `gpus` devices."""
    from uvlm.train.memory import describe_plan

    out = {}
    for stage in ("stage1", "stage2"):
        cfg = from_dict(stage_config(preset, stage, model, Path("DATA") / "folders" / stage, overrides,
                                     Path("OUT") / "stage1" if stage == "stage2" else None, recipe))
        out[stage] = describe_plan(cfg, planned_layout(cfg), f"LLaVA's {MAX_TOKENS}-token limit", gpus, gpu_mem)
    return out


def train_two_stages(data: Path, model: str, out: Path, preset: str = "tiny", overrides: list[str] = (),
                     progress=None, recipe: str = "release") -> dict:
    """Both stages of `model` into OUT/stage1 and OUT/stage2 (each resumed where it stopped); return
    stage 2's final summary."""
    from uvlm.io import atomic_write_json, make_folder, read_json
    from uvlm.train.loop import train

    out = Path(out)
    known_model(model), known_preset(preset), known_recipe(recipe)
    stages = ("stage1", "stage2")
    # both stages' data and settings checked (their folders built) before the run's folder is written
    folders = {stage: stage_data(data, preset, stage, overrides) for stage in stages}
    configs = {stage: from_dict(stage_config(preset, stage, model, folders[stage], overrides,
                                             out / "stage1" if stage == "stage2" else None, recipe))
               for stage in stages}
    make_folder(out, "two-stage run")
    about = {"model": model, "preset": preset, "recipe": recipe, "overrides": list(overrides)}
    if (out / "llava.json").exists():
        held = read_json(out / "llava.json", "the run's record", "delete the folder and train again")
        held.setdefault("recipe", "release")  # folders from before --recipe trained the release's
        if held != about:
            raise UvlmError(f"{out} holds a {held.get('model')} run of preset {held.get('preset')}, recipe "
                            f"{held['recipe']}, with {held.get('overrides') or 'no --set'}; resume it with those, "
                            "or give another --out")
    atomic_write_json(out / "llava.json", about)
    summary: dict = {}
    for stage in stages:
        summary = train(configs[stage], out / stage, resume=(out / stage / "config.yaml").exists(),
                        progress=(lambda done, total, note="", s=stage: progress(s, done, total, note)) if progress
                        else None)
    return summary
