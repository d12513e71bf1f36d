"""Load a trained run back: its config, encoders, tokenizer and weights (final or a checkpoint)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from transformers import AutoTokenizer

from uvlm.device import placement, require_device
from uvlm.errors import UvlmError
from uvlm.model.names import parse_name
from uvlm.model.unified import UnifiedVLM
from uvlm.train.build import RunParts, build_model, load_spaces, prompt_encoder
from uvlm.train.checkpoint import load_final_weights, verify_digests
from uvlm.train.data import face_folders, resolve_dataset
from uvlm.train.loop import load_run_config


def load_trained(run: Path, checkpoint: int | None = None) -> tuple[UnifiedVLM, RunParts]:
    """The model of a run folder with its final weights, or those of checkpoint `checkpoint`, on the
    device (and with the weights' precision) that uvlm.device resolves for the run's config."""
    run = Path(run)
    cfg = load_run_config(run)
    require_device(cfg.train.device)  # a GPU run evaluated or probed where none is: one line, not the CPU
    place = placement(cfg.train.precision)
    weights = run / "weights"
    if not (weights / "adapters.safetensors").exists():
        if (run / "final.json").exists():  # finished, then lost them: suite folders keep weights out of git
            raise UvlmError(f"{run} finished training but its final weights are gone (trained on another "
                            "machine?); train it anew: move the folder aside and run its `uvlm train` (or its "
                            "suite) again, which redoes its evaluation too")
        raise UvlmError(f"{run} has no final weights (weights/adapters.safetensors); finish it with "
                        "`uvlm train --resume` or pass --checkpoint STEP")
    fix = f"delete {run} and train it again (its training command retrains it), or restore the folder"
    verify_digests(weights, "weights file", fix)
    arch = parse_name(cfg.model.name)
    faces = face_folders(cfg.data.train, cfg.data.test)
    in_space, out_space = load_spaces(cfg, arch, place, faces)
    try:
        tokenizer = AutoTokenizer.from_pretrained(weights / "tokenizer")
    except Exception as e:  # a missing or damaged tokenizer folder, whatever the library raises
        raise UvlmError(f"the tokenizer in {weights / 'tokenizer'} is missing or corrupt ({type(e).__name__}); "
                        f"{fix}") from None
    model = build_model(cfg, in_space, out_space, tokenizer, place)
    load_final_weights(model, weights, lora=cfg.model.lora_r > 0, fix=fix)
    if checkpoint is not None:
        folder = run / "checkpoints" / f"step-{checkpoint:07d}"
        if not (folder / "state.json").exists():
            kept = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
            raise UvlmError(f"{run} has no checkpoint at step {checkpoint}; kept: {kept or 'none'}")
        verify_digests(folder, "checkpoint file", "use another --checkpoint")
        try:
            model.load_state_dict(load_file(str(folder / "trainable.safetensors")), strict=False)
        except Exception as e:
            raise UvlmError(f"checkpoint {folder} is corrupt ({type(e).__name__}); use another --checkpoint") from None
    if model.encoder is not None:  # it encodes with the weights the run trained: features cached under their own key
        in_space.weights_changed()
    model.eval().to(place.device)
    prompts = prompt_encoder(cfg, tokenizer, in_space, out_space)
    test_root = faces[1] if faces else resolve_dataset(cfg.data.test, "test")
    return model, RunParts(tokenizer, prompts, in_space, out_space, test_root, place, faces)
