"""Vision side: pretraining wall times and quality, and the feature cache's payoff.

- Trains (or reuses from $UVLM_CACHE) the CPU stand-ins and the judge; reports their wall
  times as recorded when they were trained, and their quality figures.
- Encodes a 10K-image dataset with each stand-in twice: the first call computes and stores
  the features, the second reads them back. The ratio is the cache's speed-up.
- Peak resident memory of a process that builds the 10K-image SigLIP cache and then reads every
  row in training-sized batches: before (batches gathered in a list, concatenated, saved and
  loaded whole) and now (written in place, read memory-mapped; 16-bit storage too).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import markdown_table, record

from uvlm.data.folder import build_dataset
from uvlm.data.mixture import MixtureConfig
from uvlm.data.smartwatch import CPU_STYLE
from uvlm.vision.cache import cached_features
from uvlm.vision.judge import pretrained_judge, score_against
from uvlm.vision.pretrain import pretrained_siglip, pretrained_vq, render_pool

N_IMAGES = 10_000


def fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def cols(scores: dict) -> list[str]:
    return [fmt(scores[k]) for k in ("time_acc", "weather_acc", "position_acc", "battery_acc", "total_acc")]


def _rss_child(mode: str, ds: str, cache: str, out: mp.Queue) -> None:
    """Build a SigLIP cache of `ds` the way `mode` says, read every row in batches of 64; report
    this process's peak RSS (MiB) beyond what it held before the build began."""
    import numpy as np
    from safetensors.torch import load_file, save_file

    from uvlm.vision.cache import dataset_images
    from uvlm.vision.space import load_images

    siglip, _ = pretrained_siglip()  # from the usual cache
    os.environ["UVLM_CACHE"] = cache  # features go to a cache of their own
    Path(cache).mkdir(parents=True, exist_ok=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    root = Path(ds)
    names = dataset_images(root)
    if mode == "before":  # the previous cache: a list of batches, one concatenated copy, a file loaded whole
        feats = [siglip.encode(load_images([root / n for n in names[i:i + 64]])) for i in range(0, len(names), 64)]
        path = Path(cache) / "before.safetensors"
        save_file({"features": torch.cat(feats).contiguous()}, str(path))
        del feats
        features = load_file(str(path))["features"]
    else:
        features = cached_features(siglip, root, dtype=mode)["features"]
    total = 0.0
    for i in range(0, len(features), 64):
        total += float(np.asarray(features[i:i + 64].float().sum()))
    out.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)


def peak_rss(ds: Path, tmp: Path) -> list[list]:
    rows = []
    ctx = mp.get_context("spawn")
    for mode, text in (("before", "list + concatenation, loaded whole (float32)"),
                       ("float32", "written in place, memory-mapped (float32)"),
                       ("float16", "written in place, memory-mapped (float16)")):
        q = ctx.Queue()
        p = ctx.Process(target=_rss_child, args=(mode, str(ds), str(tmp / f"cache-{mode}"), q))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"the {mode} measurement failed (exit code {p.exitcode})")
        mib = q.get()
        rows.append([text, f"{mib:.0f}"])
    return rows


def main() -> None:
    vq, vq_info = pretrained_vq()
    siglip, siglip_info = pretrained_siglip()
    judge, judge_info = pretrained_judge()

    rows = []
    for name, info in (("VQ", vq_info), ("SigLIP", siglip_info)):
        acc, vqa = info["probe"]["accuracy"], info["probe"]["vqa"]
        rows.append([name, info["train_seconds"], info["tokens"], fmt(info.get("psnr_db")),
                     fmt(acc["weather"]), fmt(acc["weather_pos"]), fmt(acc["battery_pos"]),
                     fmt(vqa["time_acc"]), fmt(vqa["battery_acc"]), fmt(vqa["total_acc"])])
    quality = markdown_table(
        ["encoder", "train (s)", "tokens", "PSNR (dB)", "weather probe", "weather pos", "battery pos",
         "time (VQA score)", "battery (VQA score)", "total (VQA score)"], rows)
    held = judge_info["held_out"]
    # The ceiling of VQ generation: the judge reading VQ reconstructions of real renders.
    renders, attrs = render_pool(500, 7, CPU_STYLE)
    recon = torch.cat([vq.decode(vq.targets(renders[i:i + 100])) for i in range(0, 500, 100)])
    ceiling = score_against(judge.answers(recon), attrs)
    judge_rows = [["real renders (held out)", judge_info["train_seconds"], *cols(held)],
                  ["VQ reconstructions of renders", "-", *cols(ceiling)]]
    judge_table = markdown_table(["judge reading", "train (s)", "time", "weather", "position", "battery", "total"],
                                 judge_rows)

    tmp = Path(tempfile.mkdtemp(prefix="uvlm-bench-vision-"))
    old_cache = os.environ.get("UVLM_CACHE")
    try:
        ds = tmp / "ds"
        build_dataset(MixtureConfig(seed=0, n_vqa=N_IMAGES, n_caption=0, n_generation=0, **CPU_STYLE), ds, 2)
        rss_rows = peak_rss(ds, tmp)  # before the fresh cache below: each child builds its own
        os.environ["UVLM_CACHE"] = str(tmp / "cache")  # a fresh feature cache; encoders already loaded
        cache_rows = []
        for name, space in (("VQ", vq), ("SigLIP", siglip)):
            start = time.perf_counter()
            cached_features(space, ds)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            cached_features(space, ds)
            warm = time.perf_counter() - start
            cache_rows.append([name, f"{cold:.1f}", f"{warm:.2f}", f"{cold / warm:.0f}x"])
    finally:
        if old_cache is None:
            os.environ.pop("UVLM_CACHE", None)
        else:
            os.environ["UVLM_CACHE"] = old_cache
        shutil.rmtree(tmp)
    cache_table = markdown_table(["encoder", "encode + store (s)", "read from cache (s)", "speed-up"],
                                 cache_rows)
    rss_table = markdown_table(["SigLIP feature cache, 10,000 images, built and read once", "peak RSS added (MiB)"],
                               rss_rows)
    body = (f"Stand-in encoders at the CPU style {CPU_STYLE}; probes: logistic regression on frozen "
            "features, 2,000 train / 500 test held-out renders (percent; time and battery as VQA scores, "
            "with partial credit). Judge: VQA-rule scores of its answers on 2,000 held-out renders, and on 500 "
            "renders passed through the VQ (encode, decode): the most a VQ-generated image can score.\n\n"
            f"{quality}\n\n{judge_table}\n\nFeature cache, {N_IMAGES:,} images (64 px):\n\n{cache_table}\n\n"
            "Memory of the feature cache (a child process per row: build, then read every row in batches of 64; "
            "the features are 10,000 x 64 x 128 floats, 328 MB in float32). The paper's 60K x 196 x 768 SigLIP "
            "features are 36 GB in float32 and 18 GB in float16, which the page cache now holds instead of the "
            f"process:\n\n{rss_table}")
    record("bench_vision", "python benchmarks/bench_vision.py", body)


if __name__ == "__main__":
    main()
