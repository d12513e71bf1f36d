"""`make demo`: the CPU-scale walk-through. At this stage: data and a gallery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from uvlm.data.folder import build_dataset, cpu_count
from uvlm.data.gallery import gallery
from uvlm.data.mixture import MixtureConfig
from uvlm.io import atomic_write_text


def run_demo(out: Path, echo: Callable[[str], None] = print) -> Path:
    """Render a small train and test set at 224 px, draw their galleries, write a summary."""
    out = Path(out)
    workers = min(2, cpu_count())
    sets = {
        "train": MixtureConfig(seed=0, split="train", n_vqa=512, n_caption=512, n_generation=512),
        "train-weather-biased": MixtureConfig(seed=0, split="train", n_vqa=512, n_caption=512,
                                              n_generation=512, bias="weather"),
        "test": MixtureConfig(seed=1, split="test", n_vqa=1000, n_caption=0, n_generation=500,
                              share_images=False),
    }
    lines = ["# uvlm demo", "", "| set | images | VQA | caption | generation | gallery |",
             "|---|---|---|---|---|---|"]
    for name, cfg in sets.items():
        echo(f"rendering {name} ({cfg.n_images} images)")
        manifest = build_dataset(cfg, out / "data" / name, workers)
        sheet = out / f"gallery-{name}.png"
        gallery(out / "data" / name, sheet, n=12, columns=6)
        c = manifest["counts"]
        lines.append(f"| {name} | {c['images']} | {c['vqa']} | {c['caption']} | {c['generation']} "
                     f"| ![{name}]({sheet.name}) |")
    report = out / "README.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
