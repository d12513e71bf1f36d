"""A researcher's own variants (uvlm.suites.variants, docs/variants.md): read, run, reported."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uvlm.suites import findings
from uvlm.suites.results import Results
from uvlm.suites.runner import record_jobs
from uvlm.suites.spec import expand
from uvlm.suites.variants import parse_variants

from .helpers import toy_judge
from .test_report import fake_run

DOCS = Path(__file__).resolve().parents[1] / "docs" / "variants.md"


def docs_file() -> dict:
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", DOCS.read_text(), re.S).group(1))


def docs_commands() -> list[list[str]]:
    return [shlex.split(line) for block in re.findall(r"```sh\n(.*?)```", DOCS.read_text(), re.S)
            for line in block.splitlines() if line.startswith("uvlm ")]


def test_the_paper_grid_and_its_findings_stay_as_they_are(tmp_path):
    """Variants add their own rows and a family of their own: the paper's jobs, run names and
    Holm p are those of a folder without them."""
    variants = parse_variants(docs_file(), "cpu", "docs")
    plain = expand("all", "cpu", 2)
    with_variants = expand("all", "cpu", 2, variants=variants)
    assert [j.key for j in with_variants if not j.variant] == [j.key for j in plain]
    added = {(j.table, j.label) for j in with_variants if j.variant}
    assert added == {("A3", "VQ-VQ image-loss 1"), ("dose-weather", "VQ-VQ p=0.1"), ("dose-weather", "VQ_u p=0.1"),
                     ("dose-weather", "VQ_u p=0.1 (step-matched)")}
    # the mutual suite gets the A3 variant only; its config is VQ-VQ's with the change
    mine = [j for j in expand("mutual", "cpu", 1, variants=variants) if j.variant]
    assert [j.label for j in mine] == ["VQ-VQ image-loss 1"]
    base = next(j for j in expand("mutual", "cpu", 1) if j.label == "VQ-VQ")
    assert mine[0].config["model"] == {**base.config["model"], "image_loss_weight": 1}
    # the step-matched control of the _u variant trains VQ-VQ's steps on the same dose
    control = next(j for j in with_variants if j.label == "VQ_u p=0.1 (step-matched)")
    unified = next(j for j in with_variants if j.label == "VQ-VQ p=0.1" and j.seed == control.seed)
    assert control.config["data"] == unified.config["data"]
    from uvlm.suites.spec import planned_steps

    assert planned_steps(control.resolved) == planned_steps(unified.resolved)

    # fake results: the paper's family and its Holm p do not move when the variants' are tested
    results = tmp_path / "results"
    jobs = [j for j in with_variants if j.table == "A3" and j.label in ("VQ-VQ", "VQ_u", "VQ-VQ image-loss 1",
                                                                        "VQ_u (step-matched)", "VQ-SigLIP")]
    for i, job in enumerate(jobs):
        fake_run(results, job, 0.8 if job.label.startswith("VQ-VQ") else 0.6, i, gen=False)
    record_jobs(results, jobs)
    res = Results(results)
    before = [(t.finding.text, t.comparison.p_adjusted) for t in findings.tested(res)]
    after = findings.tested(res, variants.comparisons)
    assert [(t.finding.text, t.comparison.p_adjusted) for t in after if t.family != "variants"] == before
    own = [t for t in after if t.family == "variants"]
    assert [t.finding.text for t in own] == [variants.comparisons[0].text] and own[0].family_size == 1


def test_rows_picks_one_sweep_point():
    jobs = expand("transfer-weather", "cpu", 1, rows=("VQ-VQ p=0.2", "VQ_u p=0.2"))
    assert sorted(j.label for j in jobs) == ["VQ-VQ p=0.2", "VQ_u p=0.2", "VQ_u p=0.2 (step-matched)"]
    variants = parse_variants(docs_file(), "cpu", "docs")
    # a model name does not pick a variant of it; the variant's label picks it and its control
    assert not any(j.variant for j in expand("transfer-weather", "cpu", 1, rows=("VQ_u",), variants=variants))
    picked = expand("transfer-weather", "cpu", 1, rows=("VQ_u p=0.1",), variants=variants)
    assert sorted(j.label for j in picked) == ["VQ_u p=0.1", "VQ_u p=0.1 (step-matched)"]


def _with(change) -> dict:
    raw = docs_file()
    change(raw)
    return raw


BAD_FILES = [
    (lambda r: r["variants"][0].update(colour="red"), "variant 1: unknown key 'colour'"),
    (lambda r: r["variants"][0].update(table="A9"), "table 'A9' is not one a variant can join"),
    (lambda r: r["variants"][0].update(base="VQ-VQQ"), "unknown model name 'VQ-VQQ'"),
    (lambda r: r["variants"][0].update(label="image loss 1"), "its label must be its base's name, a space"),
    (lambda r: r["variants"][0].update(label="VQ-VQ p=0.2"), "a row of that label exists already"),
    (lambda r: r["variants"][0].update(set=["model.image_loss_weight=-1"]),
     "variant 'VQ-VQ image-loss 1': bad config: image_loss_weight -1.0 must be >= 0"),
    (lambda r: r["variants"][0].update(set=["model.colour=1"]), "colour"),
    (lambda r: r["variants"][0].update(control="matched"), "control 'matched': use none or step-matched"),
    (lambda r: r["variants"][0].update(base="VQ_g", label="VQ_g x", control="step-matched"), "has no step-matched"),
    (lambda r: r["comparisons"][0].update(than="VQ-VQ image loss 1"), "'VQ-VQ image loss 1' is no row"),
    (lambda r: r["comparisons"][0].update(column="colour_acc"), "column 'colour_acc'"),
    (lambda r: r["comparisons"][1].update(than="VQ-VQ"), "its rows are in no one table"),
    (lambda r: r["comparisons"][1].update(better="VQ-VQ", than="VQ_u"), "its rows are in several tables; give table"),
    (lambda r: r.update(extras=1), "unknown key 'extras'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_FILES)
def test_a_bad_variants_file_is_one_line_and_writes_nothing(cli, tmp_path, change, message):
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(_with(change)))
    code, _, err = cli("suite", "run", "mutual", "--variants", path, "--out", tmp_path / "results")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not (tmp_path / "results").exists()


def test_a_folder_keeps_its_variants_and_refuses_a_redefined_one(cli, tmp_path):
    from uvlm.suites.variants import FILE_NAME, merged_variants, record_variants

    results = tmp_path / "results"
    results.mkdir()
    first = parse_variants({"variants": docs_file()["variants"][:1]}, "cpu", "a")
    record_variants(results, first)
    second = parse_variants({"variants": docs_file()["variants"][1:], "comparisons": docs_file()["comparisons"][1:]},
                            "cpu", "b")
    both = merged_variants(results, second, "cpu")
    assert [v.label for v in both.rows] == ["VQ-VQ image-loss 1", "VQ-VQ p=0.1", "VQ_u p=0.1"]
    redefined = parse_variants(_with(lambda r: r["variants"][0].update(set=["model.image_loss_weight=2"])), "cpu", "c")
    with pytest.raises(Exception, match="defines variant 'VQ-VQ image-loss 1' otherwise"):
        merged_variants(results, redefined, "cpu")
    assert (results / FILE_NAME).exists()


def test_the_docs_walk_through_runs(tmp_path, encoders):
    """docs/variants.md's file and commands as they stand (2 seeds instead of 3, so that the
    comparison gets a verdict), with tiny models appended through --set."""
    root = tmp_path
    (root / "variants.yaml").write_text(yaml.safe_dump(docs_file(), sort_keys=False))
    cache = root / "cache"
    from uvlm.suites.presets import preset_style

    toy_judge(cache, preset_style("cpu2"))
    env = {**os.environ, "UVLM_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    tiny = ["model.hidden_size=32", "model.layers=1", "model.heads=2", "model.intermediate_size=64",
            "data.train.n_vqa=16", "data.train.n_caption=16", "data.train.n_generation=16",
            "data.test.n_vqa=12", "data.test.n_generation=4", f"data.vq={encoders['vq']}",
            f"data.siglip={encoders['siglip']}", "train.batch_size=4", "train.eval_points=0"]
    outputs = []
    for args in docs_commands():
        assert args[0] == "uvlm"
        args = ["2" if a == "3" and args[i - 1] == "--seeds" else a for i, a in enumerate(args)]
        if args[1] == "suite":
            args += [a for s in tiny for a in ("--set", s)] + ["--workers", "2"]
        proc = subprocess.run([sys.executable, "-m", "uvlm.cli", *args[1:]], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        outputs.append(proc.stdout)
    assert "seed 1: 2 to run" in outputs[0]  # the status: VQ-VQ and its variant, per seed
    assert (root / "results-mine" / "variants.yaml").exists()
    report = (root / "report-mine" / "README.md").read_text()
    table = report.split("## Table A3")[1].split("\n## ")[0]
    assert re.search(r"^\| VQ-VQ image-loss 1 \| 2 \|", table, re.M) and re.search(r"^\| VQ-VQ \| 2 \|", table, re.M)
    own = report.split("### Your variants' comparisons")[1].split("\n## ")[0]
    row = next(line for line in own.splitlines() if line.startswith("| an image loss of weight 1"))
    assert re.search(r"\| 2 \| [\d.]+ \| [\d.]+ \| .* \| \*\*[a-z ]+\*\* \|$", row), row  # seeds, p, Holm p, verdict
    assert "| VQ-VQ p=0.1 vs VQ_u p=0.1 (step-matched) (dose-weather weather_acc) | not run |" in own
    assert (root / "report-mine" / "fig-A3.png").exists()


def test_a_dose_variant_joins_the_dose_figure(tmp_path, monkeypatch):
    """`VQ-VQ p=0.1` (a variant under the sweep's own label) is a point of the dose-response curve."""
    from uvlm.suites import figures as figures_module

    variants = parse_variants(docs_file(), "cpu", "docs")
    jobs = [j for j in expand("transfer-weather", "cpu", 1, variants=variants) if j.table == "dose-weather"]
    results = tmp_path / "results"
    for i, job in enumerate(jobs):
        fake_run(results, job, 0.5, i, gen=False)
    record_jobs(results, jobs)
    asked = []
    real = figures_module._interval
    monkeypatch.setattr(figures_module, "_interval", lambda res, table, label, column: asked.append(label)
                        or real(res, table, label, column))
    assert figures_module._dose_figure(Results(results), "weather", tmp_path / "dose.png")
    assert {"VQ-VQ p=0.1", "VQ_u p=0.1", "VQ_u p=0.1 (step-matched)", "VQ-VQ p=0.05"} <= set(asked)
