"""`make demo`: the CPU-scale study in one command, about 15 minutes on 2 cores, install included.

1. renders a small SmartWatch set and its gallery;
2. loads the VQ stand-in and the judge, which uvlm ships (uvlm/assets: they are the ones every
   committed cpu2 run used; a machine without them pretrains them, about 20 minutes);
3. runs the headline comparison in VQ space, two at a time, one thread each: VQ-VQ vs VQ_u vs
   VQ_g on the default mix (table A3), and VQ_u on the weather-biased set (A5) with Fig 7's probe
   of its adapter output (the finding that holds at this scale); one seed on the cpu2 preset, and
   smaller data than its suites (DEMO_RECORDS records per task instead of the preset's);
4. draws VQ-VQ's images for test prompts, and writes the report (the same code as `uvlm report`).
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
# VQ rows only: the SigLIP stand-in is not shipped and would cost 14 minutes of one core. Longest
# first, so that the two workers finish together; the weather-biased VQ_u is also Fig 7's probed run.
HEADLINE = (("A3", "default", "VQ-VQ"), ("A5", "weather-biased", "VQ_u"), ("A3", "default", "VQ_u"),
            ("A3", "default", "VQ_g"))
PROBED = (("fig7", "weather-biased", "VQ_u"),)  # (table, mix, row): probed, and so is its A5 twin
STAND_INS = ("vq", "judge")
SAMPLES = 12  # test prompts VQ-VQ draws for the report


def demo_jobs() -> list[Job]:
    """The headline runs at seed 0: the demo preset's rows with DEMO_OVERRIDES (Fig 7's probed
    run is the weather-biased VQ_u's own, trained once)."""
    probed = {(mix, name) for _, mix, name in PROBED}
    return [Job(table, name, 0, seed_config(DEMO_PRESET, name, mix, 0, DEMO_OVERRIDES), probe=(mix, name) in probed)
            for table, mix, name in (*HEADLINE, *PROBED)]


def draw_samples(results: Path, job: Job, out: Path) -> int:
    """VQ-VQ's images for the first SAMPLES generation prompts of its test set, on a sheet."""
    from uvlm.data.folder import read_records
    from uvlm.eval.sheet import draw_sheet
    from uvlm.train.load import load_trained

    model, parts = load_trained(results / "runs" / job.key)
    prompts = [r["conversations"][0]["value"] for r in read_records(parts.test_root, "generation")[:SAMPLES]]
    return draw_sheet(model, parts, prompts, out, columns=6)


def run_demo(out: Path, echo: Callable[[str], None] = print) -> Path:
    from uvlm.suites.report import write_report
    from uvlm.suites.runner import claim_results, run_suite, with_folders

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

    echo("2/4 loading the VQ stand-in and the judge (shipped with uvlm; pretrained where missing)")
    pretrain_stand_ins(stand_in_configs(DEMO_PRESET, STAND_INS), workers=workers, echo=echo)

    echo("3/4 training and evaluating the headline runs, and probing Fig 7's")
    jobs = with_folders(demo_jobs(), results)  # a demo folder from an older uvlm keeps its runs
    run_suite(jobs, results, workers=workers, echo=lambda s: echo("  " + s))

    echo("4/4 drawing VQ-VQ's images and writing the report")
    draw_samples(results, jobs[0], out / "samples.png")
    return write_report(results, out / "report", samples=out / "samples.png")
