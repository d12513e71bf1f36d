"""Padding in training micro-batches, with and without grouping them by length.

A step's records (the global batch, in the stream's order) are cut into micro-batches of the
size the memory plan picks on one 80 GB GPU; each pads to its longest record. Grouped
(uvlm.train.data.micro_batches): sorted by length first. Records are the presets' own, made as
text (`uvlm.train.memory.sample_encoded`: their token counts include the image slots), drawn in
the mix's proportions; lengths come from the run's tokenizer where it is on this machine, else
the template's.
"""

from __future__ import annotations

import numpy as np
from common import markdown_table, record

from uvlm.suites.presets import row_config
from uvlm.train.config import from_dict
from uvlm.train.data import RecordSet, micro_batches, padding_share
from uvlm.train.memory import Layout, layout_of, plan, sample_encoded

STEPS = 50


def measure(preset: str, name: str) -> list:
    cfg = from_dict(row_config(preset, name))
    encoded, source, head = sample_encoded(cfg, 300)
    data = RecordSet(encoded, np.zeros(len(encoded), dtype=int), [], None, None)
    layout = layout_of(encoded, None)
    micro = plan(cfg, Layout(layout.tokens, layout.scored, layout.slots, head), 80e9, gpu=True).micro_batch
    batch = cfg.train.global_batch or cfg.train.batch_size
    count = -(-batch // micro)
    rng = np.random.default_rng(0)
    shares = {False: [], True: []}
    for _ in range(STEPS):
        step = rng.choice(len(encoded), size=batch, replace=True).tolist()
        shares[False].append(padding_share(data, [step[i:i + micro] for i in range(0, batch, micro)]))
        shares[True].append(padding_share(data, micro_batches(data, step, micro, count)))
    return [preset, name, batch, micro, source, f"{100 * np.mean(shares[False]):.1f}%",
            f"{100 * np.mean(shares[True]):.2f}%"]


def main() -> None:
    rows = [measure(p, n) for p in ("paper", "smol") for n in ("VQ-VQ", "SigLIP-SigLIP", "SigLIP-VQ")]
    table = markdown_table(["preset", "model", "global batch", "micro-batch (80 GB)", "lengths from",
                            "padding, stream order", "padding, grouped by length"], rows)
    body = (f"Padding share of token positions over {STEPS} steps of records drawn from each preset's mix "
            "(uvlm.train.data.micro_batches). A step in one micro-batch (every cpu-scale run) is not "
            "regrouped.\n\n" + table)
    record("bench_padding", "python benchmarks/bench_padding.py", body)


if __name__ == "__main__":
    main()
