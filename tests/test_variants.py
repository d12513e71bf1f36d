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


def _unified_control(r):
    r["variants"][0]["control"] = "step-matched"


BAD_FILES = [
    (lambda r: r["variants"][0].update(colour="red"), "variant 1: unknown key 'colour'"),
    (lambda r: r["variants"][0].update(table="A9"), "table 'A9' is not one a variant can join"),
    (lambda r: r["variants"][0].update(table=["A3"]), "variant 1: give its table (a string)"),
    (lambda r: r["variants"][0].update(base="VQ-VQQ"), "variant 'VQ-VQ image-loss 1': unknown model name 'VQ-VQQ'"),
    (lambda r: r["variants"][0].update(label="image loss 1"), "its label must be its base's name, a space"),
    (lambda r: r["variants"][0].update(label="VQ-VQ a, b"), "a label holds no comma"),
    (lambda r: r["variants"][0].update(label="VQ-VQ p=0.2"), "a row labelled 'VQ-VQ p=0.2' exists already"),
    (lambda r: r["variants"][0].update(set=[]), "its runs would be row 'VQ-VQ''s"),
    (lambda r: r["variants"][0].update(set=["model.image_loss_weight=-1"]),
     "variant 'VQ-VQ image-loss 1': bad config: image_loss_weight -1.0 must be >= 0"),
    (lambda r: r["variants"][0].update(set=["model.colour=1"]), "colour"),
    (lambda r: r["variants"][0].update(set=["train.lr"]), "variant 'VQ-VQ image-loss 1': bad --set 'train.lr'"),
    (lambda r: r["variants"][0].update(set="train.lr=1"), "write set as a list"),
    (lambda r: r["variants"][0].update(set=["model.name=SigLIP-SigLIP"]), "keeps its base's model"),
    (lambda r: r["variants"][0].update(set=["data.test.n_vqa=10"]), "its table's test set"),
    (lambda r: r["variants"][0].update(control="matched"), "control 'matched': use none or step-matched"),
    (lambda r: r["variants"][0].update(base="VQ_g", label="VQ_g x", control="step-matched"), "has no step-matched"),
    (lambda r: r["variants"][0].update(table="fig7", control="step-matched"), "Fig 7 probes rows"),
    (lambda r: r["variants"].append({"label": "VQ_u p=0.1 (step-matched)", "base": "VQ_u", "table": "dose-weather",
                                     "set": ["data.train.bias_vqa_prob=0.3"]}),
     "a row labelled 'VQ_u p=0.1 (step-matched)' exists already"),
    (lambda r: r["comparisons"][0].update(than="VQ-VQ image loss 1"), "'VQ-VQ image loss 1' is no row"),
    (lambda r: r["comparisons"][0].update(column="colour_acc"), "column 'colour_acc'"),
    (lambda r: r["comparisons"][0].update(column="probe"), "column 'probe'"),
    (lambda r: r["comparisons"][1].update(better="VQ_u p=0.1", column="gen"), "column 'gen'"),
    (lambda r: r["comparisons"][0].update(table=["A3"]), "comparison 1: table is a string"),
    (lambda r: r["comparisons"][0].update(than="VQ-VQ image-loss 1"), "its rows cancel out"),
    (lambda r: r["comparisons"][1].update(than="VQ-VQ"), "its rows are in no one table"),
    (lambda r: r["comparisons"][1].update(better="VQ-VQ", than="VQ_u"), "its rows are in several tables; give table"),
    (lambda r: r.update(extras=1), "unknown key 'extras'"),
    (lambda r: r.update(variants={"a": 1}), "write a mapping with lists under variants"),
]


@pytest.mark.parametrize(("change", "message"), BAD_FILES)
def test_a_bad_variants_file_is_one_line_and_writes_nothing(cli, tmp_path, change, message):
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(_with(change)))
    for command in (("suite", "status", "mutual"), ("suite", "run", "mutual", "--preset", "cpu")):
        code, _, err = cli(*command, "--variants", path, "--out", tmp_path / "results")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err and not (tmp_path / "results").exists()


def test_variants_and_celeba_do_not_mix(cli, tmp_path):
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(docs_file()))
    from uvlm.data.fake_celeba import write_fake_celeba

    copy = write_fake_celeba(tmp_path / "celeba", n=40)
    code, _, err = cli("suite", "status", "affine", "--dataset", "celeba", "--celeba", copy, "--variants", path,
                       "--out", tmp_path / "r")
    assert code == 2 and "variants join the SmartWatch tables" in err


def test_a_unified_variants_control_is_the_papers_where_it_can_be():
    """VQ-VQ with another image-loss weight gets VQ_u trained for VQ-VQ's steps: the weight means
    nothing to VQ_u, so its control is the paper's own step-matched VQ_u run."""
    variants = parse_variants(_with(_unified_control), "cpu", "docs")
    mine = expand("mutual", "cpu", 1, variants=variants)
    control = next(j for j in mine if j.label.startswith("VQ_u (step-matched to"))
    paper = next(j for j in expand("mutual", "cpu", 1) if j.label == "VQ_u (step-matched)")
    assert control.identity == paper.identity


def test_a_second_file_may_name_the_folders_variants_and_a_report_may_not_redefine_them(cli, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    from uvlm.suites.variants import record_variants

    record_variants(results, parse_variants({"variants": docs_file()["variants"][:1]}, "cpu", "a"))
    record_jobs(results, expand("mutual", "cpu", 1, rows=("VQ-VQ",)))
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump({"comparisons": [{"better": "VQ-VQ image-loss 1", "than": "VQ-VQ"}]}))
    code, out, err = cli("suite", "status", "mutual", "--preset", "cpu", "--seeds", 1, "--rows", "VQ-VQ image-loss 1",
                         "--variants", second, "--out", results)
    assert code == 0 and "seed 0: 1 to run" in out, err
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(_with(lambda r: r["variants"][0].update(set=["model.image_loss_weight=2"]))))
    code, _, err = cli("report", results, "--out", tmp_path / "report", "--variants", other)
    assert code == 2 and "defines variant 'VQ-VQ image-loss 1' otherwise" in err


def test_a_run_recorded_but_not_begun_keeps_its_name(tmp_path):
    """A suite that recorded (or submitted to a cluster) a run it has not begun: another suite
    needing the same run uses that name, and the report finds a run by identity."""
    from uvlm.suites.runner import with_folders

    mutual = expand("mutual", "cpu", 1, rows=("VQ_g",))
    record_jobs(tmp_path, mutual)
    scaling = [j for j in expand("scaling", "cpu", 1, rows=("VQ_g",)) if j.label == "VQ_g und 0K gen 60K"]
    assert scaling[0].key != mutual[0].key
    assert with_folders(scaling, tmp_path)[0].key == mutual[0].key
    # the scaling job ran under its own name (an older record): the A3 row still finds it
    fake_run(tmp_path, scaling[0], 0.5, 0, gen=True)
    assert Results(tmp_path).groups[("A3", "VQ_g")] == [scaling[0].key]


def test_dose_labels_the_figure_cannot_read_are_not_points():
    from uvlm.suites.figures import _dose_of

    assert _dose_of("VQ-VQ p=0.1") == 0.1 and _dose_of("VQ_u p=0.1 (step-matched)") is None
    assert _dose_of("VQ-VQ p=0.10") is None and _dose_of("VQ-VQ p=0.1.2") is None and _dose_of("VQ-VQ p=.") is None
    assert _dose_of("SigLIP-VQ p=0.1") is None  # not a pair of the sweep


def test_a_folder_keeps_its_variants_and_refuses_a_redefined_one(tmp_path):
    from uvlm.errors import UvlmError
    from uvlm.suites.variants import merged_variants, record_variants

    results = tmp_path / "results"
    results.mkdir()
    record_variants(results, parse_variants({"variants": docs_file()["variants"][:1]}, "cpu", "a"))
    second = tmp_path / "b.yaml"
    second.write_text(yaml.safe_dump({"variants": docs_file()["variants"][1:],
                                      "comparisons": docs_file()["comparisons"]}))
    both = merged_variants(results, second, "cpu")
    assert [v.label for v in both.rows] == ["VQ-VQ image-loss 1", "VQ-VQ p=0.1", "VQ_u p=0.1"]
    assert len(both.comparisons) == 2
    # the same settings written otherwise (1.0 for 1) are the same variant
    same = tmp_path / "c.yaml"
    same.write_text(yaml.safe_dump(_with(lambda r: r["variants"][0].update(set=["model.image_loss_weight=1.0"]))))
    assert next(v.label for v in merged_variants(results, same, "cpu").rows) == "VQ-VQ image-loss 1"
    redefined = tmp_path / "d.yaml"
    redefined.write_text(yaml.safe_dump(_with(lambda r: r["variants"][0].update(set=["model.image_loss_weight=2"]))))
    with pytest.raises(UvlmError, match="defines variant 'VQ-VQ image-loss 1' otherwise"):
        merged_variants(results, redefined, "cpu")


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
