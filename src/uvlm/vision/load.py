"""Vision spaces by name: the paper's real encoders or the CPU preset's stand-ins.

    cpu-siglip | cpu-vq          the cached stand-ins (trained on first use): on SmartWatch
                                 renders, or, for a CelebA run, on its dataset's faces;
    cpu-vq:{detail_weight: 4}    a stand-in with pretraining fields changed (a YAML mapping)
    siglip:<folder or hub id>    a transformers SigLIP (hub ids must be in the local cache)
    clip:<folder or hub id>      a transformers CLIP vision tower (Table 2's LLaVA case)
    tiny-clip | tiny-vq          a tiny CLIP tower, a tiny VQ: random weights (Table 2's tiny preset: plumbing)
    vq:<checkpoint.pt>           a LlamaGen VQ checkpoint (sidecar .json for other sizes)
    synthetic:<shape>            the paper encoders' output shapes, no encoder (speed and memory only)

A relative path (the paper preset's `vq:checkpoints/vq_ds16_c2i.pt`) is read from $UVLM_WEIGHTS
where that variable names a folder holding it, else from the working directory: a job that a
cluster starts elsewhere finds the weights through the variable, and the config, which names
the run's folder, stays the same on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from uvlm.errors import UvlmError
from uvlm.vision.space import VisionSpace

SPEC_HELP = ("use cpu-siglip, cpu-vq, tiny-clip, tiny-vq, siglip:<folder or hub id>, clip:<folder or hub id>, "
             "vq:<checkpoint.pt> or synthetic:<shape>")


def weights_path(source: str) -> str:
    """`source` under $UVLM_WEIGHTS when it is relative and there, else as given (a hub id, an
    absolute path, or a path from the working directory)."""
    root = os.environ.get("UVLM_WEIGHTS")
    if root and not Path(source).is_absolute() and (Path(root) / source).exists():
        return str(Path(root) / source)
    return source


def missing_weights(spec: str) -> str | None:
    """What a real encoder named by `spec` needs and this machine lacks, in words (None when
    nothing is missing, and for stand-ins, which are built on first use). It looks for the VQ
    checkpoint file and SigLIP's config, and reads no weights: a partial download passes here
    and fails, in one line, where the run loads it."""
    kind, _, source = spec.partition(":")
    if kind == "vq" and source and not Path(weights_path(source)).is_file():
        return f"the VQ checkpoint {source} (under $UVLM_WEIGHTS or the working directory)"
    if kind in ("siglip", "clip") and source:
        from transformers import CLIPVisionConfig, SiglipVisionConfig

        config_class, label = (SiglipVisionConfig, "SigLIP") if kind == "siglip" else (CLIPVisionConfig, "CLIP")
        try:
            config_class.from_pretrained(weights_path(source), local_files_only=True)
        except (OSError, ValueError):
            return f"{label} {source} (a folder, or a hub id in the HF cache)"
    return None


def load_space(spec: str, faces: tuple[Path, Path] | None = None) -> VisionSpace:
    """The vision space named by `spec`; a clear error for anything else. `faces`: the (train,
    test) folders of a CelebA run, whose images the stand-ins are pretrained on."""
    kind, _, source = spec.partition(":")
    if kind in ("cpu-siglip", "cpu-vq"):
        from uvlm.vision.pretrain import face_siglip, face_vq, pretrained_siglip, pretrained_vq, stand_in_config

        cfg = stand_in_config(spec)
        if faces:
            return (face_vq if kind == "cpu-vq" else face_siglip)(*faces, cfg)[0]
        return (pretrained_vq(cfg) if kind == "cpu-vq" else pretrained_siglip(cfg))[0]
    if kind == "siglip" and source:
        from uvlm.vision.siglip import SiglipSpace

        return SiglipSpace.load(weights_path(source))
    if kind == "clip" and source:
        from uvlm.vision.clip import ClipSpace

        return ClipSpace.load(weights_path(source))
    if kind == "tiny-clip" and not source:
        from uvlm.vision.clip import ClipSpace, tiny_clip

        return ClipSpace.load(str(tiny_clip()))
    if kind == "tiny-vq" and not source:
        from uvlm.vision.vq import VQSpace, tiny_vq

        return VQSpace.load(tiny_vq())
    if kind == "vq" and source:
        from uvlm.vision.vq import VQSpace

        return VQSpace.load(weights_path(source))
    if kind == "synthetic":
        from uvlm.vision.synthetic import SHAPES, SyntheticSpace

        if source not in SHAPES:
            raise UvlmError(f"unknown synthetic space {source!r}; use one of {', '.join(SHAPES)}")
        return SyntheticSpace(source)
    raise UvlmError(f"unknown encoder {spec!r}; {SPEC_HELP}")
