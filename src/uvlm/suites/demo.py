"""`make demo`: the CPU-scale study in one command, about 45 minutes on 2 cores.

1. renders a small SmartWatch set and its gallery;
2. pretrains (or reuses) the VQ stand-in and the judge side by side, printing their quality;
3. runs the headline comparisons in VQ space, two at a time, one thread each: VQ-VQ vs VQ_u
   vs VQ_g on the default mix (table A3), VQ-VQ vs VQ_u on the weather-biased set (A5); one
   seed on the cpu2 preset, and smaller data than its suites (DEMO_RECORDS records per task
   instead of the preset's), so that it fits;
4. writes the report (the same code as `uvlm report`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from uvlm.data.folder import build_dataset, cpu_count
from uvlm.data.gallery import gallery
from uvlm.data.mixture import MixtureConfig
from uvlm.io import make_folder
from uvlm.suites.presets import preset_style, pretrain_stand_ins, stand_in_configs
from uvlm.suites.spec import Job, seed_config

DEMO_PRESET = "cpu2"
DEMO_RECORDS = 5000
# recorded as the demo folder's settings, so that no full-size suite mixes its runs into it
DEMO_OVERRIDES = (*(f"data.train.{n}={DEMO_RECORDS}" for n in ("n_vqa", "n_caption", "n_generation")),
                  "train.eval_points=3")
# VQ rows only: the SigLIP stand-in would cost 14 more minutes of one core, which 45 minutes
# do not hold beside these runs. Longest first, so that the two workers finish together.
HEADLINE = (("A3", "default", "VQ-VQ"), ("A5", "weather-biased", "VQ-VQ"), ("A3", "default", "VQ_u"),
            ("A5", "weather-biased", "VQ_u"), ("A3", "default", "VQ_g"))
STAND_INS = ("vq", "judge")


def demo_jobs() -> list[Job]:
    """The headline runs at seed 0: the demo preset's rows with DEMO_OVERRIDES."""
    return [Job(table, name, 0, seed_config(DEMO_PRESET, name, mix, 0, DEMO_OVERRIDES))
            for table, mix, name in HEADLINE]


def run_demo(out: Path, echo: Callable[[str], None] = print) -> Path:
    from uvlm.suites.report import write_report
    from uvlm.suites.runner import claim_results, run_suite

    out = Path(out)
    workers = min(2, cpu_count())
    make_folder(out, "demo")
    # one folder per preset, claimed before the long steps: a folder of other settings fails at once
    results = out / f"results-{DEMO_PRESET}"
    claim_results(results, DEMO_OVERRIDES, DEMO_PRESET)
    echo("1/4 rendering a sample of the SmartWatch data")
    sample = MixtureConfig(seed=0, n_vqa=24, n_caption=24, n_generation=24, **preset_style(DEMO_PRESET))
    build_dataset(sample, out / "sample", workers=workers)
    gallery(out / "sample", out / "gallery.png", n=12, columns=6)

    echo("2/4 pretraining the VQ stand-in and the judge (cached after the first time)")
    pretrain_stand_ins(stand_in_configs(DEMO_PRESET, STAND_INS), workers=workers, echo=echo)

    echo("3/4 training and evaluating the headline runs")
    run_suite(demo_jobs(), results, workers=workers, echo=lambda s: echo("  " + s))

    echo("4/4 writing the report")
    return write_report(results, out / "report")
