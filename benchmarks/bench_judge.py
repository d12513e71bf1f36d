"""The SigLIP-output judge on real stand-in features: does it read content, not length?

Fits (or reuses from $UVLM_CACHE) the embedding judge of the cpu preset's SigLIP stand-in and
scores held-out renders' features as they are, scaled (a head trained with 1 - cosine leaves
its outputs' length free), pulled towards their mean (weaker content, same scale), and the
mean itself (one constant image). It also records how much the features' length varies per
position: generated vectors are fed back at the mean length, so that spread is what the
rescaling cannot recover.
"""

from __future__ import annotations

import torch
from common import markdown_table, record

from uvlm.data.smartwatch import CPU_STYLE
from uvlm.vision.judge import embedding_judge, score_against
from uvlm.vision.pretrain import pretrained_siglip, render_pool

N_HELD = 500


def main() -> None:
    siglip, _ = pretrained_siglip()
    judge, info = embedding_judge(siglip, dict(CPU_STYLE))
    images, attrs = render_pool(N_HELD, 11, CPU_STYLE)  # a seed of its own: renders the judge never saw
    with torch.no_grad():
        x = torch.cat([siglip.targets(images[i:i + 100]) for i in range(0, N_HELD, 100)])
    mean = x.mean(0, keepdim=True)
    cases = [("real features", x)]
    cases += [(f"scaled x{s}", s * x) for s in (0.5, 0.9, 2.0)]
    cases += [(f"pulled {int(100 * f)}% to the mean", mean + (1 - f) * (x - mean)) for f in (0.5, 0.8, 0.95)]
    cases += [("the mean (one constant image)", mean.expand_as(x))]
    rows = []
    for name, features in cases:
        s = score_against(judge.answers(features), attrs)
        rows.append([name, *(f"{s[k]:.1f}" for k in ("time_acc", "weather_acc", "position_acc", "battery_acc",
                                                      "total_acc"))])
    table = markdown_table(["features", "time", "weather", "position", "battery", "total"], rows)
    norms = x.norm(dim=-1)  # (images, positions)
    spread = float((norms.std(0) / norms.mean(0)).mean())
    held = info["held_out"]["total_acc"]
    body = (f"Embedding judge of the SigLIP stand-in (probes on unit-length tokens; total {held:.1f} on its "
            f"own held-out renders), on {N_HELD} other held-out renders' features (VQA-rule "
            f"scores, percent).\n\n{table}\n\nToken length: mean {float(norms.mean()):.1f}, relative spread "
            f"across images at one position {100 * spread:.1f}% (what rescaling to the mean length cannot recover).")
    record("bench_judge", "python benchmarks/bench_judge.py", body)


if __name__ == "__main__":
    main()
