"""Load a trained run back: its config, encoders, tokenizer and weights (final or a checkpoint)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from transformers import AutoTokenizer

from uvlm.device import placement
from uvlm.errors import UvlmError
from uvlm.model.names import parse_name
from uvlm.model.unified import UnifiedVLM
from uvlm.train.build import RunParts, build_model, load_spaces, prompt_encoder
from uvlm.train.data import resolve_dataset
from uvlm.train.loop import load_run_config


def load_trained(run: Path, checkpoint: int | None = None) -> tuple[UnifiedVLM, RunParts]:
    """The model of a run folder with its final weights, or those of checkpoint `checkpoint`, on the
    device (and with the weights' precision) that uvlm.device resolves for the run's config."""
    run = Path(run)
    cfg = load_run_config(run)
    place = placement(cfg.train.precision)
    weights = run / "weights"
    if not (weights / "adapters.safetensors").exists():
        raise UvlmError(f"{run} has no final weights (weights/adapters.safetensors); finish it with "
                        "`uvlm train --resume` or pass --checkpoint STEP")
    arch = parse_name(cfg.model.name)
    in_space, out_space = load_spaces(cfg, arch, place)
    tokenizer = AutoTokenizer.from_pretrained(weights / "tokenizer")
    model = build_model(cfg, in_space, out_space, tokenizer, place)
    try:
        if cfg.model.lora_r > 0:  # the base comes from its own source; the run holds the LoRA weights
            from peft.utils import set_peft_model_state_dict

            set_peft_model_state_dict(model.llm, load_file(str(weights / "llm" / "adapter_model.safetensors")))
        else:
            model.llm = type(model.llm).from_pretrained(weights / "llm")
        model.load_state_dict(load_file(str(weights / "adapters.safetensors")), strict=False)
    except (OSError, ValueError, RuntimeError) as e:
        raise UvlmError(f"the weights in {weights} are missing or corrupt ({type(e).__name__}); "
                        "retrain or restore them") from None
    if checkpoint is not None:
        folder = run / "checkpoints" / f"step-{checkpoint:07d}"
        if not (folder / "state.json").exists():
            kept = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
            raise UvlmError(f"{run} has no checkpoint at step {checkpoint}; kept: {kept or 'none'}")
        model.load_state_dict(load_file(str(folder / "trainable.safetensors")), strict=False)
    model.eval().to(place.device)
    prompts = prompt_encoder(cfg, tokenizer, in_space, out_space)
    return model, RunParts(tokenizer, prompts, in_space, out_space, resolve_dataset(cfg.data.test, "test"), place)
