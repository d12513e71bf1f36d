"""Tiny random models saved in the real formats (LlamaGen checkpoint, transformers folder), and
a run killed with SIGKILL at a chosen point."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from uvlm.vision.siglip import SiglipImageProcessor
from uvlm.vision.vq import VQConfig

TINY_VQ = VQConfig(image_size=32, base_channels=32, channel_multiplier=(1, 2), num_res_blocks=1,
                   latent_channels=32, embed_dim=8, num_embeddings=64)


def llamagen_state(cfg: VQConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under LlamaGen VQModel's parameter names, built from its published
    structure (encoder/decoder `conv_blocks[i].res[j]`, `.attn[j]`, `mid[0..2]`, ...)."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}

    def conv(name, cin, cout, k):
        s[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * 0.05
        s[f"{name}.bias"] = torch.zeros(cout)

    def norm(name, c):
        s[f"{name}.weight"], s[f"{name}.bias"] = torch.ones(c), torch.zeros(c)

    def res(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    ch, mult, n, r, z = cfg.base_channels, cfg.channel_multiplier, len(cfg.channel_multiplier), \
        cfg.num_res_blocks, cfg.latent_channels
    conv("encoder.conv_in", 3, ch, 3)
    block_in = ch
    for i in range(n):
        for j in range(r):
            res(f"encoder.conv_blocks.{i}.res.{j}", block_in, ch * mult[i])
            block_in = ch * mult[i]
            if i == n - 1:
                attn(f"encoder.conv_blocks.{i}.attn.{j}", block_in)
        if i != n - 1:
            conv(f"encoder.conv_blocks.{i}.downsample.conv", block_in, block_in, 3)
    for part in ("encoder", "decoder"):
        c = ch * mult[-1]
        res(f"{part}.mid.0", c, c)
        attn(f"{part}.mid.1", c)
        res(f"{part}.mid.2", c, c)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, z, 3)
    block_in = ch * mult[-1]
    conv("decoder.conv_in", z, block_in, 3)
    for idx, i in enumerate(reversed(range(n))):
        for j in range(r + 1):
            res(f"decoder.conv_blocks.{idx}.res.{j}", block_in, ch * mult[i])
            block_in = ch * mult[i]
            if i == n - 1:
                attn(f"decoder.conv_blocks.{idx}.attn.{j}", block_in)
        if i != 0:
            conv(f"decoder.conv_blocks.{idx}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, 3, 3)
    s["quantize.embedding.weight"] = torch.randn(cfg.num_embeddings, cfg.embed_dim, generator=g)
    s["quantize.codebook_used"] = torch.zeros(65536)
    conv("quant_conv", z, cfg.embed_dim, 1)
    conv("post_quant_conv", cfg.embed_dim, z, 1)
    return s


def write_llamagen(path: Path, cfg: VQConfig, with_sidecar: bool = True) -> Path:
    torch.save({"model": llamagen_state(cfg)}, path)
    if with_sidecar:
        path.with_suffix(".json").write_text(json.dumps({**cfg.__dict__,
                                                         "channel_multiplier": list(cfg.channel_multiplier)}))
    return path


def tiny_siglip_folder(path: Path, size: int = 32, patch: int = 8) -> Path:
    torch.manual_seed(0)
    cfg = SiglipVisionConfig(image_size=size, patch_size=patch, hidden_size=32, num_hidden_layers=3,
                             num_attention_heads=2, intermediate_size=64)
    SiglipVisionModel(cfg).save_pretrained(path)
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(path)
    return path


def tiny_clip_folder(path: Path, size: int = 28, patch: int = 7) -> Path:
    """A 2-layer CLIP vision tower with its processor, saved as transformers saves CLIP-L/14-336."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from uvlm.vision.clip import CLIPImageProcessor

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(image_size=size, patch_size=patch, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, projection_dim=16)
    CLIPVisionModel(cfg).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(path)
    return path


# 16 vision tokens in both spaces: small enough for training tests, unified models can mix them.
TRAIN_VQ = VQConfig(image_size=16, base_channels=32, channel_multiplier=(1, 2, 2), num_res_blocks=1,
                    latent_channels=32, embed_dim=8, num_embeddings=64)


def tiny_encoders(folder: Path) -> dict[str, str]:
    """Encoder specs for a run config: a 16-token VQ and a 16-token SigLIP."""
    folder.mkdir(parents=True, exist_ok=True)
    vq = write_llamagen(folder / "vq.pt", TRAIN_VQ)
    siglip = tiny_siglip_folder(folder / "siglip", size=16, patch=4)
    return {"vq": f"vq:{vq}", "siglip": f"siglip:{siglip}"}


def uvlm(args: list, env: dict) -> subprocess.CompletedProcess:
    """Run `uvlm ARGS...` in a child process to its end, as a suite runs its children (from the
    fork server, uvlm.suites.children: a fresh interpreter's imports are seconds a command)."""
    from uvlm.suites.children import start, uvlm_command

    cmd = uvlm_command(*map(str, args))
    child = start(cmd, env, stdout=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(child.stdout.read()))
    reader.start()
    err = child.stderr.read()
    reader.join()
    return subprocess.CompletedProcess(cmd, child.wait(), out[0], err)


def kill_when(args: list, env: dict, marker: Path, timeout: float = 300) -> None:
    """Start `uvlm ARGS...` (as `uvlm` does), SIGKILL it as soon as `marker` exists (e.g. a
    checkpoint's state.json)."""
    from uvlm.suites.children import start, uvlm_command

    child = start(uvlm_command(*map(str, args)), env)
    drain = threading.Thread(target=child.stderr.read)  # a child blocked on a full pipe never gets there
    drain.start()
    deadline = time.time() + timeout
    while time.time() < deadline and not marker.exists() and child.poll() is None:
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):  # it ended first: the caller's checks say so
        child.send_signal(signal.SIGKILL)
    drain.join(timeout=30)
    child.wait()


def toy_judge(cache: Path, style: dict | None = None) -> None:
    """An untrained pixel judge in `cache` under the real judge's key for `style` (default: the cpu
    style), for tests of evaluation plumbing: training the real one takes minutes."""
    from dataclasses import asdict

    from uvlm.data.smartwatch import CPU_STYLE
    from uvlm.vision.cache import cached_artifact
    from uvlm.vision.judge import JudgeCNN, JudgeConfig, PixelJudge

    style = dict(style or CPU_STYLE)
    old = os.environ.get("UVLM_CACHE")
    os.environ["UVLM_CACHE"] = str(cache)
    try:
        torch.manual_seed(0)
        cached_artifact("judge", asdict(JudgeConfig(style=style)),
                        lambda folder: PixelJudge(JudgeCNN(style["size"])).save(folder) or {"held_out": {}})
    finally:
        if old is None:
            os.environ.pop("UVLM_CACHE")
        else:
            os.environ["UVLM_CACHE"] = old

