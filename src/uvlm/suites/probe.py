"""Fig 7: is the weather in the understanding adapter's output at the weather icon's patch?

For a trained model: render fresh images (test pool, their own seed), encode them, take the
vision token whose patch holds the weather icon's centre, pass it through the understanding
path (affine map and adapter), then fit a linear probe on 4,000 and test on 1,000 (the
paper's split), and draw a t-SNE of all of them coloured by weather.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from uvlm.data.mixture import MixtureConfig, image_attributes
from uvlm.data.smartwatch import WEATHERS, RenderStyle, layout, render
from uvlm.errors import UvlmError
from uvlm.eval.probe import linear_probe
from uvlm.io import atomic_write_bytes, atomic_write_json, exclusive
from uvlm.model.names import parse_name
from uvlm.suites.figures import save_figure
from uvlm.suites.runner import PROBE_SPLIT, probe_folder
from uvlm.train.data import face_folders


def icon_token(attrs, style: RenderStyle, grid: int) -> int:
    """Row-major index of the grid cell that holds the weather icon's centre."""
    x0, y0, x1, y1 = layout(attrs, style).icon
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return int(cy / style.size * grid) * grid + int(cx / style.size * grid)


def adapter_probe(run: Path, n_train: int = PROBE_SPLIT[0], n_test: int = PROBE_SPLIT[1], seed: int = 2,
                  tsne: bool = True) -> dict:
    """Probe accuracy (percent) of the weather at the icon's token; writes probe_folder(run, ...)."""
    from uvlm.train.loop import load_run_config

    run = Path(run)
    cfg = load_run_config(run)  # a folder that holds no run: one line, before anything is locked
    if parse_name(cfg.model.name).tasks == "generation":
        raise UvlmError(f"{run} is a generation-only run ({cfg.model.name}); the probe reads the understanding "
                        "adapter's output, so probe a run that reads images")
    if face_folders(cfg.data.train, cfg.data.test) is not None:
        raise UvlmError(f"{run} is a CelebA run; the probe reads the weather icon of SmartWatch images")
    with exclusive(run, "`uvlm train`, `uvlm eval` or `uvlm probe`"):
        return _probe(run, n_train, n_test, seed, tsne)


def adapter_outputs(model, features: torch.Tensor) -> np.ndarray:
    """The understanding adapter's output for encoder features, on the CPU as numpy. The
    encoders hand back CPU tensors while the model may sit on a GPU: the features go to it."""
    device = next(model.parameters()).device
    return model.understand(features.to(device)).float().cpu().numpy()


@torch.no_grad()
def _probe(run: Path, n_train: int, n_test: int, seed: int, tsne: bool) -> dict:
    from uvlm.train.load import load_trained

    model, parts = load_trained(run)
    style_dict = parts.style()
    style = RenderStyle(**style_dict)
    cfg = MixtureConfig(seed=seed, split="test", n_vqa=n_train + n_test, n_caption=0, n_generation=0, **style_dict)
    grid = round(parts.in_space.n_tokens**0.5)
    vectors, labels = [], []
    for start in range(0, n_train + n_test, 250):
        attrs = [image_attributes(cfg, i) for i in range(start, min(start + 250, n_train + n_test))]
        images = torch.from_numpy(np.stack([np.asarray(render(a, style)) for a in attrs])).permute(0, 3, 1, 2)
        feats = parts.in_space.encode(images)
        idx = torch.tensor([icon_token(a, style, grid) for a in attrs])
        vectors.append(adapter_outputs(model, feats[torch.arange(len(attrs)), idx]))
        labels += [WEATHERS.index(a.weather) for a in attrs]
    x, y = np.concatenate(vectors), np.array(labels)
    accuracy, pred = linear_probe(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
    out = probe_folder(run, n_train, n_test)
    out.mkdir(exist_ok=True)
    result = {"weather_probe_acc": accuracy, "n_train": n_train, "n_test": n_test, "model": model.arch.name,
              "correct": (pred == y[n_train:]).astype(int).tolist()}  # per test image, for paired statistics
    if tsne:
        from sklearn.manifold import TSNE

        # perplexity 30 (the usual) needs more points than that; a small probe gets a smaller one
        points = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(x) - 1)).fit_transform(x)
        buffer = io.BytesIO()
        np.save(buffer, np.concatenate([points, y[:, None]], axis=1).astype(np.float32))
        atomic_write_bytes(out / "tsne.npy", buffer.getvalue())
    atomic_write_json(out / "probe.json", result)
    return result


def tsne_figure(points_by_model: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(points_by_model), figsize=(3.2 * len(points_by_model), 3.2))
    for ax, (name, pts) in zip(np.atleast_1d(axes), points_by_model.items(), strict=True):
        for k, (weather, color) in enumerate(zip(WEATHERS, ("#d62728", "#2ca02c", "#1f77b4"), strict=True)):
            sel = pts[:, 2] == k
            ax.scatter(pts[sel, 0], pts[sel, 1], s=2, c=color, label=weather)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=7, markerscale=4)
    fig.tight_layout()
    save_figure(fig, path)

