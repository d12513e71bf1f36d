"""Suites: the right runs for each table, shared runs trained once, skip and resume."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from uvlm.errors import UvlmError
from uvlm.io import atomic_write_json, exclusive
from uvlm.suites.presets import A3_ROWS, BIASED_ROWS
from uvlm.suites.report import write_report
from uvlm.suites.runner import check_encoder_weights, claim_results, run_suite, suite_status
from uvlm.suites.spec import DOSES, PROBE_ROWS, SCALING_ROWS, expand, scaling_curves, scaling_rows, step_matched
from uvlm.train.config import from_dict


def labels(jobs, table):
    return {j.label for j in jobs if j.table == table}


def finish(results, job):
    """What a finished job leaves: its evaluation, and its probe when it is probed."""
    atomic_write_json(results / "runs" / job.key / "eval" / "metrics.json", {"vqa": None})
    if job.probe:
        atomic_write_json(results / "runs" / job.key / "probe" / "probe.json", {"weather_probe_acc": 50.0})


def test_mutual_is_table_a3_with_step_matched_controls():
    jobs = expand("mutual", "cpu", seeds=3)
    u_rows = [r for r in A3_ROWS if r.endswith("_u")]
    assert labels(jobs, "A3") == set(A3_ROWS) | {f"{r} (step-matched)" for r in u_rows}
    assert len(jobs) == 3 * (len(A3_ROWS) + len(u_rows))
    assert {j.seed for j in jobs} == {0, 1, 2}
    vq_u = next(j for j in jobs if j.label == "VQ_u" and j.seed == 0)
    matched = next(j for j in jobs if j.label == "VQ_u (step-matched)" and j.seed == 0)
    unified = next(j for j in jobs if j.label == "VQ-VQ" and j.seed == 0)
    train = unified.config["data"]["train"]
    records = train["n_vqa"] + train["n_caption"] + train["n_generation"]
    understanding = train["n_vqa"] + train["n_caption"]
    # step-matched: as many records seen (hence steps) as the unified run, understanding only
    assert matched.config["train"]["epochs"] * understanding == pytest.approx(records)
    assert vq_u.config["train"].get("epochs", 1.0) == 1.0
    assert matched.key != vq_u.key


@pytest.mark.parametrize("suite, table, bias", [("transfer-weather", "A5", "weather"),
                                                ("transfer-battery", "A6", "battery")])
def test_transfer_suites(suite, table, bias):
    jobs = expand(suite, "cpu", seeds=1)
    rows = labels(jobs, table)
    assert set(BIASED_ROWS) <= rows
    assert all(j.config["data"]["train"]["bias"] == bias for j in jobs)
    doses = [j for j in jobs if j.table == f"dose-{bias}"]
    assert {j.config["data"]["train"]["bias_vqa_prob"] for j in doses} == set(DOSES)
    # every unified-vs-_u comparison has its step-matched control, except at p = 0 (never asked)
    assert labels(doses, f"dose-{bias}") >= {"VQ_u p=0.2 (step-matched)", "SigLIP_u p=0.01 (step-matched)"}
    assert not any("p=0.0 (step-matched)" in j.label for j in doses)
    assert len(doses) == len(DOSES) * 4 + (len(DOSES) - 1) * 2  # one seed
    assert all(j.config["data"]["test"].get("bias") is None for j in jobs)
    # Fig 7 probes A5's runs of the probe rows, as each finishes: its jobs are those runs, probed
    probed = {j.key for j in jobs if j.probe}
    a5_probe_rows = {j.key for j in jobs if j.table == "A5" and j.label in PROBE_ROWS}
    assert probed == {j.key for j in jobs if j.table == "fig7"} == (a5_probe_rows if bias == "weather" else set())
    assert probed == {j.key for j in expand("probe", "cpu", seeds=1)} or bias == "battery"
    assert all(j.probe for j in jobs if j.key in probed), "the A5 and dose jobs of a probed run probe it too"


def test_shared_runs_are_trained_once():
    everything = expand("all", "cpu", seeds=1)
    keys = {j.key for j in everything}
    siglip_u = [j for j in everything if j.label == "SigLIP_u" and j.config["data"]["train"].get("bias") is None]
    assert {j.table for j in siglip_u} == {"A3", "T1"} and len({j.key for j in siglip_u}) == 1
    dose = next(j for j in everything if j.label == "SigLIP_u p=0.05" and j.table == "dose-weather")
    a5 = next(j for j in everything if j.label == "SigLIP_u" and j.table == "A5")
    assert dose.key == a5.key  # the A5 run is the dose curve's 0.05 point
    assert len(keys) < len(everything)


def test_scaling_is_table_a4_at_the_papers_ratios():
    jobs = expand("scaling", "cpu", seeds=1)
    by_label = {j.label: j for j in jobs}
    train = {label: j.config["data"]["train"] for label, j in by_label.items()}
    default, double = train["VQ-VQ und 120K gen 60K"], train["VQ-VQ und 240K gen 60K"]
    assert double["n_vqa"] == 2 * default["n_vqa"] and double["n_generation"] == default["n_generation"]
    assert train["SigLIP-VQ und 120K gen 180K"]["n_generation"] == 3 * default["n_generation"]
    # the paper's grid for both of its models; the 0K points are the task-specific models
    for name in SCALING_ROWS:
        for sweep in scaling_curves(name).values():
            assert all(label in by_label for _, label in sweep)
    assert [k for k, _ in scaling_curves("VQ-VQ")["gen"]] == [0, 60, 90, 120, 180]
    assert sorted(scaling_rows()) == sorted(by_label)  # the report's row order covers every run
    assert by_label["VQ_g und 0K gen 60K"].config["model"]["name"] == "VQ_g"
    assert by_label["SigLIP_u und 120K gen 0K"].config["model"]["name"] == "SigLIP_u"
    # the 0K and default points are A3's own runs, trained once
    a3 = {(j.label, j.identity) for j in expand("mutual", "cpu", seeds=1)}
    for label, a3_label in (("VQ_u und 120K gen 0K", "VQ_u"), ("VQ_g und 0K gen 60K", "VQ_g"),
                            ("SigLIP-VQ und 120K gen 60K", "SigLIP-VQ")):
        assert (a3_label, by_label[label].identity) in a3
    # every point of the generation sweep has a _u control taking as many steps
    matched = by_label["VQ_u und 120K gen 180K (step-matched)"].config
    records = default["n_vqa"] + default["n_caption"]
    assert matched["train"]["epochs"] * records == records + train["VQ-VQ und 120K gen 180K"]["n_generation"]


def test_bad_suite_arguments():
    with pytest.raises(UvlmError, match="unknown suite"):
        expand("everything")
    with pytest.raises(UvlmError, match="unknown preset"):
        expand("mutual", "gpu")
    with pytest.raises(UvlmError, match="--seeds 0"):
        expand("mutual", "cpu", 0)


def test_skip_and_resume(tmp_path):
    jobs = expand("probe", "cpu", seeds=2)
    ran = []

    def fake(job, results, *_, **__):
        ran.append(job.key)
        if len(ran) == 3:
            raise UvlmError("killed")
        finish(results, job)
        return {"train_seconds": 1, "eval_seconds": 1}

    with pytest.raises(UvlmError, match="1 runs failed"):
        run_suite(jobs, tmp_path, workers=1, echo=lambda s: None, execute=fake)
    assert len(ran) == len(jobs)
    seeds = [next(j.seed for j in jobs if j.key == k) for k in ran]
    assert seeds == sorted(seeds) and seeds[0] != seeds[-1], "runs go seed by seed"
    first = list(ran)
    ran.clear()
    run_suite(jobs, tmp_path, workers=2, echo=lambda s: None, execute=fake)
    assert ran == [first[2]], "only the failed run is run again"
    ran.clear()
    run_suite(jobs, tmp_path, workers=2, echo=lambda s: None, execute=fake)
    assert ran == []
    index = json.loads((tmp_path / "jobs.json").read_text())
    assert len(index) == len(jobs) and {e["table"] for e in index} == {"fig7"}


def test_progress_is_reported_as_runs_finish(tmp_path):
    first, second = expand("probe", "cpu", seeds=1)[:2]
    second_done = threading.Event()

    def fake(job, results, *_, **__):
        if job.key == first.key:
            assert second_done.wait(10), "the two runs did not run side by side"
        finish(results, job)
        if job.key == second.key:
            second_done.set()
        return {"train_seconds": 1, "eval_seconds": 1}

    lines = []
    run_suite([first, second], tmp_path, workers=2, echo=lines.append, execute=fake)
    assert [line.split(":")[0] for line in lines[1:]] == [f"[1/2] {second.key}", f"[2/2] {first.key}"]


def test_status_counts_runs_per_seed(tmp_path):
    jobs = expand("probe", "cpu", seeds=2)
    # SigLIP_u, SigLIP-SigLIP, VQ_u, VQ-VQ on the 12K + 12K + 12K cpu mix, two seeds each
    assert [j.records for j in jobs] == [24_000] * 2 + [36_000] * 2 + [24_000] * 2 + [36_000] * 2
    assert suite_status(jobs, tmp_path) == {"seeds": {0: {"done": 0, "started": 0, "to run": 4},
                                                      1: {"done": 0, "started": 0, "to run": 4}},
                                            "median_wall_seconds": None, "records_left": 240_000,
                                            "seconds_per_record": None}
    first, second, third = jobs[0], jobs[2], jobs[1]
    assert (first.seed, second.seed, third.seed) == (0, 0, 1)
    for job, wall in ((first, 120.0), (second, 360.0)):
        finish(tmp_path, job)
        atomic_write_json(tmp_path / "runs" / job.key / "wall.json", {"train_seconds": wall - 10, "eval_seconds": 10})
        atomic_write_json(tmp_path / "runs" / job.key / "final.json", {"records": job.records})
    (tmp_path / "runs" / third.key / "checkpoints").mkdir(parents=True)
    status = suite_status(jobs, tmp_path)
    # 120 s / 24K and 360 s / 36K records: 5 and 10 ms a record
    assert status == {"seeds": {0: {"done": 2, "started": 0, "to run": 2}, 1: {"done": 0, "started": 1, "to run": 3}},
                      "median_wall_seconds": 240.0, "records_left": 180_000, "seconds_per_record": 0.0075}
    other = suite_status(expand("mutual", "cpu", seeds=1), tmp_path)
    assert (other["median_wall_seconds"], other["seconds_per_record"]) == (240.0, 0.0075), \
        "falls back to every finished run"
    probe_left = jobs[3]  # SigLIP-SigLIP seed 1, evaluated, its probe not yet taken: started, nothing to train
    assert probe_left.probe and probe_left.seed == 1 and probe_left.records == 36_000
    atomic_write_json(tmp_path / "runs" / probe_left.key / "eval" / "metrics.json", {"vqa": None})
    status = suite_status(jobs, tmp_path)
    assert (status["seeds"][1], status["records_left"]) == ({"done": 0, "started": 2, "to run": 2}, 144_000)


def test_scaling_runs_grow_with_their_data():
    records = {j.label: j.records for j in expand("scaling", "cpu", seeds=1)}
    assert records["VQ-VQ und 300K gen 60K"] == 72_000 and records["VQ_g und 0K gen 60K"] == 12_000
    assert records["VQ_u und 120K gen 180K (step-matched)"] == records["VQ-VQ und 120K gen 180K"] == 60_000


def test_overrides_change_every_run_and_keep_the_controls():
    plain = expand("mutual", "cpu", seeds=1)
    jobs = expand("mutual", "cpu", seeds=1, overrides=("train.lr=1e-3", "train.adapter_lr=1e-3"))
    assert [j.label for j in jobs] == [j.label for j in plain]
    assert all(from_dict(j.config).train.lr == from_dict(j.config).train.adapter_lr == 1e-3 for j in jobs)
    assert not {j.key for j in jobs} & {j.key for j in plain}, "other settings, other runs"
    matched = next(j for j in jobs if j.label == "VQ_u (step-matched)")
    assert matched.config["train"]["epochs"] == 1.5
    # the scaling sweep scales the folder's default mix (the preset's counts under --set): its
    # default point is the folder's A3 run, and 180K generation records are 3 x its 60K
    overrides = ("data.train.n_generation=7",)
    scaling = {j.label: j for j in expand("scaling", "cpu", seeds=1, overrides=overrides)}
    assert scaling["VQ-VQ und 120K gen 180K"].config["data"]["train"]["n_generation"] == 21
    a3 = next(j for j in expand("mutual", "cpu", seeds=1, overrides=overrides) if j.label == "VQ-VQ")
    assert scaling["VQ-VQ und 120K gen 60K"].identity == a3.identity


def test_rows_keep_their_controls_and_sweep_points():
    jobs = expand("mutual", "cpu", seeds=3, rows=("VQ-VQ", "VQ_u"))
    assert sorted({j.label for j in jobs}) == ["VQ-VQ", "VQ_u", "VQ_u (step-matched)"] and len(jobs) == 9
    doses = expand("transfer-weather", "cpu", seeds=1, rows=("VQ-VQ",))
    assert sorted((j.table, j.label) for j in doses) == [("A5", "VQ-VQ"), *(("dose-weather", f"VQ-VQ p={p}")
                                                                            for p in DOSES), ("fig7", "VQ-VQ")]


def test_a_results_folder_holds_one_setting(tmp_path):
    lr = ("train.lr=1e-3",)
    claim_results(tmp_path / "lr", lr)
    run_suite(expand("probe", "cpu", 1, lr, ("VQ_u",)), tmp_path / "lr", workers=1, echo=lambda s: None,
              execute=lambda job, results, *_, **__: {})
    claim_results(tmp_path / "lr", lr)  # the same settings again: accepted
    with pytest.raises(UvlmError, match=r"made with --set train\.lr=1e-3; give those, or another --out"):
        claim_results(tmp_path / "lr", ())
    claim_results(tmp_path / "plain", ())
    run_suite(expand("probe", "cpu", 1, rows=("VQ_u",)), tmp_path / "plain", workers=1, echo=lambda s: None,
              execute=lambda job, results, *_, **__: {})
    with pytest.raises(UvlmError, match="made with no --set"):
        claim_results(tmp_path / "plain", lr)
    assert not (tmp_path / "plain" / "overrides.json").exists()
    assert "changes its preset with `--set train.lr=1e-3`" in write_report(tmp_path / "lr", tmp_path / "r").read_text()
    # the preset is part of the setting: recorded unless cpu, named by the report
    with pytest.raises(UvlmError, match="holds runs of preset cpu; give --preset cpu"):
        claim_results(tmp_path / "plain", (), "cpu2")
    claim_results(tmp_path / "v2", (), "cpu2")
    run_suite(expand("probe", "cpu2", 1, rows=("VQ_u",)), tmp_path / "v2", workers=1, echo=lambda s: None,
              execute=lambda job, results, *_, **__: {})
    with pytest.raises(UvlmError, match="holds runs of preset cpu2"):
        claim_results(tmp_path / "v2", ())
    assert not (tmp_path / "plain" / "preset.json").exists()
    assert "preset `cpu2`" in write_report(tmp_path / "v2", tmp_path / "r2").read_text()


def test_suite_commands_take_the_folders_preset(cli, tmp_path):
    """`suite status` without --preset reads the folder's runs as its preset's; a wrong or corrupt
    preset record is one line, exit code 2."""
    claim_results(tmp_path / "v2", (), "cpu2")
    jobs = expand("probe", "cpu2", 1, rows=("VQ_u",))
    run_suite(jobs, tmp_path / "v2", workers=1, echo=lambda s: None, execute=lambda job, results, *_, **__: {})
    (tmp_path / "v2" / "runs" / jobs[0].key).mkdir(parents=True)  # cpu2's run of the row, begun
    code, out, _ = cli("suite", "status", "probe", "--seeds", "1", "--rows", "VQ_u", "--out", tmp_path / "v2")
    assert code == 0 and "seed 0: 1 started" in out
    code, _, err = cli("suite", "status", "probe", "--preset", "cpu", "--out", tmp_path / "v2")
    assert code == 2 and "holds runs of preset cpu2; give --preset cpu2" in err
    for corrupt in ('"cpu2"', '{"preset": "cpu3"}', "{"):
        (tmp_path / "v2" / "preset.json").write_text(corrupt)
        code, _, err = cli("suite", "status", "probe", "--out", tmp_path / "v2")
        assert code == 2 and "preset.json" in err and "Traceback" not in err, corrupt


def test_step_matched_needs_understanding_data():
    cfg = expand("mutual", "cpu", 1)[0].config
    assert step_matched(cfg)["train"]["epochs"] > 1


@pytest.mark.parametrize("overrides", [("train.epochs=2",), ("train.batch_size=7",),
                                       ("train.epochs=1.3", "data.train.n_generation=5001"),
                                       ("train.batch_size=4", "train.global_batch=12")])
def test_step_matched_controls_take_the_unified_runs_steps_whatever_set_changes(overrides):
    """The control's epochs follow the unified run's actual step count; at `--set train.epochs=2`
    a fixed 1.5 epochs would have given the control half the unified run's steps."""
    from uvlm.suites.spec import planned_steps

    for suite in ("mutual", "transfer-battery", "scaling"):
        jobs = expand(suite, "cpu", 1, overrides)
        by = {(j.table, j.label): j for j in jobs}
        # "VQ*_u p=0.2 (step-matched)" controls "VQ*-VQ p=0.2" (A4: "SigLIP_u und ..." has no SigLIP-SigLIP
        # point, and is checked against SigLIP-VQ's by the scaling tests' record counts)
        unified = {key: (key[0], re.sub(r"^(SigLIP|VQ)(\*?)_u", r"\1\2-\1", key[1]).removesuffix(" (step-matched)"))
                   for key in by if key[1].endswith("(step-matched)")}
        pairs = [(by[c], by[u]) for c, u in unified.items() if u in by]
        assert pairs
        for control, uni in pairs:
            assert planned_steps(control.resolved) == planned_steps(uni.resolved), (control.label, uni.label)


def test_icon_token_is_the_patch_under_the_icon():
    from uvlm.data.smartwatch import POSITIONS, Attributes, RenderStyle, layout
    from uvlm.suites.probe import icon_token

    style = RenderStyle(64, 2.0, 0.32)
    base = dict(hour=1, minute=2, second=3, weather="sunny", battery=50, face_color=(0, 0, 0))
    seen = set()
    for pos in POSITIONS:
        other = "top-left" if pos != "top-left" else "bottom-right"
        a = Attributes(**base, weather_pos=pos, battery_pos=other)
        token = icon_token(a, style, 8)
        row, col = divmod(token, 8)
        x0, y0, x1, y1 = layout(a, style).icon
        assert x0 <= col * 8 and (col + 1) * 8 <= x1 and y0 <= row * 8 and (row + 1) * 8 <= y1
        seen.add(token)
    assert len(seen) == 4


def test_demo_runs_the_headline_comparisons():
    from uvlm.suites.demo import DEMO_OVERRIDES, DEMO_PRESET, DEMO_RECORDS, demo_jobs
    from uvlm.suites.presets import preset_style

    jobs = demo_jobs()
    assert [(j.table, j.label, j.probe) for j in jobs] == [("A3", "VQ-VQ", False), ("A5", "VQ_u", True),
                                                           ("A3", "VQ_u", False), ("A3", "VQ_g", False),
                                                           ("fig7", "VQ_u", True)]
    assert len({j.key for j in jobs}) == 4  # Fig 7's probed run is A5's VQ_u, trained once
    assert all(j.config["data"]["train"]["n_vqa"] == DEMO_RECORDS for j in jobs)
    assert {j.config["data"]["train"].get("bias") for j in jobs if j.table in ("A5", "fig7")} == {"weather"}
    # the demo's runs, its sample and its pretrained stand-ins share the preset's pictures
    assert DEMO_PRESET == "cpu2" and preset_style(DEMO_PRESET)["hand_scale"] == 3.0
    assert all(j.config["data"]["test"]["hand_scale"] == 3.0 for j in jobs)
    # its runs are the suite's rows with the demo's overrides, so a suite can find them by key
    vq_vq = expand("mutual", DEMO_PRESET, seeds=1, overrides=DEMO_OVERRIDES, rows=("VQ-VQ",))[0]
    assert jobs[0].key == vq_vq.key


def test_demo_refuses_a_folder_of_other_settings_before_pretraining(cli, tmp_path, monkeypatch):
    from uvlm.suites import demo
    from uvlm.suites.runner import claim_results

    claim_results(tmp_path / "demo" / f"results-{demo.DEMO_PRESET}", ("train.lr=1e-3",), demo.DEMO_PRESET)
    (tmp_path / "demo" / f"results-{demo.DEMO_PRESET}" / "jobs.json").write_text("[]")
    monkeypatch.setattr(demo, "build_dataset", lambda *a, **k: pytest.fail("rendered before the claim"))
    code, _, err = cli("demo", "--out", tmp_path / "demo")
    assert code == 2 and "--set train.lr=1e-3" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["run", "mutual", "--workers", "0"], "--workers 0"),
    (["status", "mutual", "--workers", "-1"], "--workers -1"),
    (["status", "bogus"], "unknown suite"),
    (["status", "mutual", "--seeds", "0"], "--seeds 0"),
    (["run", "mutual", "--set", "train.bogus=1"], "bogus"),
    (["run", "mutual", "--set", "lr"], "bad --set 'lr'"),
    (["run", "mutual", "--rows", "VQ-VQ,VQ-XX"], "'VQ-XX' is not a row of mutual"),
])
def test_bad_suite_command_lines(cli, tmp_path, args, message):
    code, _, err = cli("suite", *args, "--out", tmp_path / "results")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists(), "nothing written"


def test_a_results_folder_runs_one_suite_at_a_time(cli, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    with exclusive(results, "suite run"):  # another suite, still running
        code, _, err = cli("suite", "run", "mutual", "--out", results)
    assert code == 2 and "in use by another suite run" in err and len(err.strip().splitlines()) == 1
    assert list(results.iterdir()) == [], "nothing written"
    (tmp_path / "file").write_text("")
    (results / "jobs.json").write_text("[]")  # so that `uvlm report` reaches its --out
    for command in (("suite", "run", "mutual"), ("report", results), ("demo",)):
        code, _, err = cli(*command, "--out", tmp_path / "file")
        assert code == 2 and "is a file" in err and len(err.strip().splitlines()) == 1, (command, err)


def test_status_command_prints_seeds_and_estimate(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))  # nothing pretrained yet
    job = expand("probe", "cpu", seeds=1)[0]
    finish(tmp_path, job)
    atomic_write_json(tmp_path / "runs" / job.key / "wall.json", {"train_seconds": 590, "eval_seconds": 10})
    atomic_write_json(tmp_path / "runs" / job.key / "final.json", {"records": 24_000})
    code, out, err = cli("suite", "status", "probe", "--seeds", 1, "--out", tmp_path, "--workers", 3)
    assert code == 0, err
    # 25 ms a record; left: SigLIP-SigLIP 36K, VQ_u 24K, VQ-VQ 36K records = 2,400 s
    assert out.splitlines() == ["seed 0: 1 done, 3 to run",
                                "first the runs pretrain what this machine has not cached, one core each: vq "
                                "stand-in (about 20 min), siglip stand-in (about 11 min), judge (about 11 min); "
                                "`uvlm pretrain vq --preset cpu`, `uvlm pretrain siglip --preset cpu`, "
                                "`uvlm pretrain judge --preset cpu` build them ahead",
                                "probe: 3 runs left, at most about 0.7 h of one core (0.2 h with 3 at a time; "
                                "median run 10.0 min; time scaled by each run's records)"]


def test_a_run_on_two_threads_is_priced_at_twice_its_wall_time(cli, tmp_path, monkeypatch):
    """One-core hours are wall time x threads (cpu2-smol's suite runs one two-thread run at a
    time), and the wall-clock estimate divides them by the threads a run is given as well; a
    suite runs as many at a time as the cores hold at that many threads each."""
    import yaml

    from uvlm.suites.runner import record_rates

    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    jobs = expand("probe", "cpu", seeds=1, overrides=("train.threads=2",))
    assert {j.config["train"]["threads"] for j in jobs} == {2}
    job = jobs[0]
    finish(tmp_path, job)
    run = tmp_path / "runs" / job.key
    (run / "config.yaml").write_text(yaml.safe_dump(job.config))
    atomic_write_json(run / "wall.json", {"train_seconds": 590, "eval_seconds": 10})
    atomic_write_json(run / "final.json", {"records": 24_000})
    assert record_rates(tmp_path, [job.key]) == {job.key: 600 * 2 / 24_000}
    code, out, err = cli("suite", "status", "probe", "--seeds", 1, "--out", tmp_path, "--workers", 1,
                         "--set", "train.threads=2")
    assert code == 0, err
    # 50 ms of one core a record; left: 96K records = 1.3 h of one core, 0.7 h on one two-thread run
    assert out.splitlines()[-1] == ("probe: 3 runs left, at most about 1.3 h of one core (0.7 h with 1 at a time "
                                    "on 2 threads each; median run 10.0 min; time scaled by each run's records)")
    # without --workers, as many runs as the cores hold at 2 threads each: 2 on 4 cores, not 4
    import uvlm.data.folder
    import uvlm.device

    monkeypatch.setattr(uvlm.data.folder, "cpu_count", lambda: 4)
    monkeypatch.setattr(uvlm.device, "gpu_count", lambda: 0)
    code, out, err = cli("suite", "status", "probe", "--seeds", 1, "--out", tmp_path, "--set", "train.threads=2")
    assert code == 0 and "(0.3 h with 2 at a time on 2 threads each;" in out.splitlines()[-1], (out, err)


def test_runs_side_by_side_never_share_a_gpu(tmp_path):
    """On a machine with GPUs each running job holds its own (here 4 GPUs, 2 at a time, 2 each,
    each run training across its two)."""
    held: dict[str, str] = {}
    lock = threading.Lock()
    clashes = []

    def execute(job, results, devices, processes, **_):
        assert processes == 2
        with lock:
            if devices in held.values():
                clashes.append(devices)
            held[job.key] = devices
        threading.Event().wait(0.01)
        with lock:
            held.pop(job.key)
        return {"devices": devices}

    out = run_suite(expand("mutual", "cpu", seeds=1, rows=("VQ-VQ", "VQ_u")), tmp_path, workers=2,
                    echo=lambda s: None, execute=execute, gpus=4, gpus_per_run=2)
    assert {r["devices"] for r in out.values()} <= {"0,1", "2,3"} and not clashes


def test_gpu_groups_go_through_the_parents_mask(monkeypatch):
    """Under CUDA_VISIBLE_DEVICES=4,5,6,7 the runs get GPUs 4-7 (raw indices would put them on 0-3)."""
    from uvlm.device import gpu_groups, visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert gpu_groups(visible_gpus(4), 2, 2) == ["4,5", "6,7"]
    assert visible_gpus(2) == ["4", "5"]  # fewer usable than named: the first ones
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-3f2a,GPU-77b1")  # UUIDs pass through as named
    assert gpu_groups(visible_gpus(2), 2, 1) == ["GPU-3f2a", "GPU-77b1"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_groups(visible_gpus(4), 1, 4) == ["0,1,2,3"]
    with pytest.raises(ValueError):
        gpu_groups(visible_gpus(2), 2, 2)


def test_children_progress_is_passed_on_and_a_busy_run_is_waited_for(tmp_path):
    import fcntl
    import os
    import subprocess
    import sys
    import time

    from uvlm.suites.runner import _child, wait_for_folder

    shown = []
    code, last = _child([sys.executable, "-c", "import sys; print('noise', file=sys.stderr); "
                         "print('train VQ-VQ: 3/9 (33%, 0:05 so far, 0:10 left)', file=sys.stderr); "
                         "print('uvlm: error: bad', file=sys.stderr); sys.exit(2)"], dict(os.environ), shown.append)
    assert (code, last) == (2, "uvlm: error: bad")
    assert shown == ["train VQ-VQ: 3/9 (33%, 0:05 so far, 0:10 left)"]

    run = tmp_path / "run"
    run.mkdir()
    hold = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(1.5)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    lines = []
    start = time.perf_counter()
    wait_for_folder(run, lines.append)
    assert time.perf_counter() - start > 1.0, "returned while the folder was still held"
    holder.wait()
    assert lines == ["run: waiting for the process still using it to end"]
    fd = os.open(run, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(fd)


def test_a_uvlm_child_from_the_fork_server_is_what_a_fresh_process_would_be(tmp_path, encoders):
    """The same run trained from the fork server and by a fresh `python -m uvlm.cli`: the same
    weights to the bit (the job's one thread and its environment hold in the forked child), the
    same refusal and exit code on a bad command, and a child killed by a signal says so."""
    import os
    import signal
    import subprocess
    import time

    import yaml

    from uvlm.suites import children

    from .test_train import run_config

    env = {**os.environ, "OMP_NUM_THREADS": "1", "UVLM_CACHE": str(tmp_path / "cache")}
    cfg = run_config(encoders, epochs=1, eval_points=0)
    cfg["data"]["train"].update({"n_vqa": 16, "n_caption": 16, "n_generation": 16})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    forked, fresh = (children.uvlm_command("train", "--config", str(tmp_path / "run.yaml"), "--out",
                                           str(tmp_path / name)) for name in ("forked", "fresh"))
    assert children.can_fork_from_server(forked, env)
    assert not children.can_fork_from_server(forked, {**env, "CUDA_VISIBLE_DEVICES": "0"})  # a GPU job's
    assert children.run(forked, env, lambda line: None)[0] == 0
    assert subprocess.run(fresh, env=env, capture_output=True).returncode == 0
    weights = [sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name / "weights").rglob("*.safetensors"))
               for name in ("forked", "fresh")]
    assert weights[0] == weights[1] and weights[0]
    for path in weights[0]:
        assert (tmp_path / "forked" / path).read_bytes() == (tmp_path / "fresh" / path).read_bytes(), path

    bad = children.uvlm_command("train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x"))
    code, last = children.run(bad, env, lambda line: None)
    refused = subprocess.run(bad, env=env, capture_output=True, text=True)
    assert (code, last) == (refused.returncode, refused.stderr.strip().splitlines()[-1]) and code == 2

    # killed: the exit code is minus the signal, as subprocess gives it
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(code=children.run([*forked[:-1], str(tmp_path / "k")],
                                                                               env, lambda line: None)[0]))
    thread.start()
    deadline = time.time() + 30
    while not children._RUNNING and time.time() < deadline:
        time.sleep(0.01)
    children.interrupt(signal.SIGKILL)
    thread.join(30)
    children.STOP.clear()
    assert outcome["code"] == -signal.SIGKILL


def test_children_preload_jemalloc_where_the_machine_has_it(monkeypatch):
    """A suite's children run under jemalloc where it is installed (glibc's heap fragments over a
    long CPU run), unless the user preloads a library of their own or turns it off; the fork
    server, whose malloc every forked child keeps, is started under it. (That the allocator changes
    no bytes is the test above, wherever jemalloc is installed: its forked run is under jemalloc,
    its fresh one under glibc.)"""
    import glob
    import multiprocessing.forkserver
    import os
    import sys
    import time

    from uvlm.suites import children

    installed, find = children.jemalloc(), children.jemalloc.__wrapped__  # the latter uncached
    monkeypatch.setattr(children, "jemalloc", lambda: "libjemalloc.so.2")
    base = {"PATH": os.environ["PATH"]}
    assert children.child_environment(base) == {**base, "LD_PRELOAD": "libjemalloc.so.2"}
    assert children.child_environment({**base, "LD_PRELOAD": "libmine.so"})["LD_PRELOAD"] == "libmine.so"
    assert children.child_environment({**base, "UVLM_JEMALLOC": "0"}) == {**base, "UVLM_JEMALLOC": "0"}
    monkeypatch.setattr(children, "jemalloc", lambda: None)
    assert children.child_environment(base) == base
    # a library that find_library names but the loader cannot preload is not offered
    monkeypatch.setattr("ctypes.util.find_library", lambda name: "libuvlm-no-such-library.so.9")
    assert find() is None
    monkeypatch.setattr("ctypes.util.find_library", lambda name: None)
    assert find() is None
    monkeypatch.undo()
    if sys.platform.startswith("linux") and glob.glob("/usr/lib/*/libjemalloc.so.2"):  # Debian's libjemalloc2
        assert find() == installed is not None  # one the loader preloads is offered

    # the server's start, however it comes (a suite's own, or a first child's), under the library,
    # and this process's environment as it was, a user's own preload kept
    seen = []
    monkeypatch.setattr(multiprocessing.forkserver, "ensure_running", lambda: seen.append(os.environ.get("LD_PRELOAD")))
    monkeypatch.setattr(children, "jemalloc", lambda: "libjemalloc.so.2")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("UVLM_JEMALLOC", raising=False)
    children._ensure_server()
    assert seen == ["libjemalloc.so.2"] and "LD_PRELOAD" not in os.environ
    monkeypatch.setenv("LD_PRELOAD", "libmine.so")
    children._ensure_server()
    assert seen[-1] == "libmine.so" and os.environ["LD_PRELOAD"] == "libmine.so"
    monkeypatch.undo()

    monkeypatch.setattr(children, "jemalloc", lambda: installed)
    if (installed is None or os.environ.get("LD_PRELOAD") or os.environ.get("UVLM_JEMALLOC") == "0"
            or not children.can_fork_from_server(children.UVLM, dict(os.environ))):
        pytest.skip("jemalloc is not installed here (Debian: libjemalloc2), preloading is off, or no fork server")
    children.start_fork_server()
    assert "LD_PRELOAD" not in os.environ
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    deadline = time.time() + 30  # the server is started, not waited for: the loader maps it soon after
    while "jemalloc" not in Path(f"/proc/{server}/maps").read_text() and time.time() < deadline:
        time.sleep(0.1)
    assert "jemalloc" in Path(f"/proc/{server}/maps").read_text()


def test_a_forked_childs_status_is_read_by_the_thread_that_waits_for_it(tmp_path, monkeypatch):
    """A suite's worker threads start children while others wait: multiprocessing's poll of every
    child it knows, at each start (process._cleanup), read a waited child's status from the fork
    server's pipe too, and one of the two readers got end-of-file: a finished run reported as
    lost (255). The reads are slowed here so that the two overlap."""
    import os
    import time
    from multiprocessing import forkserver, process

    from uvlm.suites import children

    child = children.start(children.uvlm_command("train", "--config", str(tmp_path / "missing.yaml")),
                           dict(os.environ))
    child.stderr.read()
    time.sleep(0.5)  # it has ended; its status waits in the pipe
    real, calls = forkserver.read_signed, []

    def slow(fd):
        calls.append(fd)
        time.sleep(0.1 if len(calls) == 1 else 0.4)
        return real(fd)

    monkeypatch.setattr(forkserver, "read_signed", slow)
    other = threading.Thread(target=process._cleanup)  # what another thread's start does
    other.start()
    time.sleep(0.02)
    assert child.wait() == 2
    other.join()


@pytest.mark.parametrize("state", ["new", "evaluated", "probe fails", "not probed"])
def test_a_probed_run_is_probed_after_its_evaluation_while_its_weights_are_here(tmp_path, monkeypatch, state):
    from uvlm.suites import runner

    probed = expand("probe", "cpu", seeds=1)[0]
    job = probed if state != "not probed" else next(j for j in expand("mutual", "cpu", seeds=1) if not j.probe)
    run = tmp_path / "runs" / job.key
    ran = []

    def child(cmd, env, show):  # what each `uvlm` command leaves in the run folder
        step = cmd[cmd.index("uvlm.cli") + 1]
        ran.append(step)
        if step == "probe" and state == "probe fails":
            return 2, "uvlm: error: no weights"
        outputs = {"train": ["final.json", "weights/adapters.safetensors"], "eval": ["eval/metrics.json"],
                   "probe": ["probe/probe.json"]}[step]
        for name in outputs:
            atomic_write_json(run / name, {"train_seconds": 7.0})
        return 0, ""

    monkeypatch.setattr(runner, "_child", child)
    if state == "evaluated":  # e.g. killed between its evaluation and its probe
        atomic_write_json(run / "eval" / "metrics.json", {"vqa": None})
    assert not runner.is_done(tmp_path, job)
    if state == "probe fails":
        with pytest.raises(UvlmError, match=f"^{job.key}: probe failed: uvlm: error: no weights$"):
            runner.run_job(job, tmp_path)
        assert ran == ["train", "eval", "probe"] and not runner.is_done(tmp_path, job)
        assert set(json.loads((run / "wall.json").read_text())) == {"train_seconds", "eval_seconds"}
        return
    times = runner.run_job(job, tmp_path)
    expected = {"new": ["train", "eval", "probe"], "evaluated": ["probe"], "not probed": ["train", "eval"]}[state]
    assert ran == expected and set(times) == {f"{step}_seconds" for step in expected}
    assert runner.is_done(tmp_path, job)
    if "train" in expected:
        assert times["train_seconds"] == 7.0  # the run's own count, from final.json
        assert json.loads((run / "wall.json").read_text()) == {"train_seconds": 7.0,
                                                               "eval_seconds": times["eval_seconds"]}
    else:
        assert not (run / "wall.json").exists(), "a probe alone leaves the run's times as they were"


def test_a_suite_under_a_gpu_mask_hands_out_the_masked_gpus(tmp_path, monkeypatch):
    from uvlm.suites.runner import run_suite

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    out = run_suite(expand("mutual", "cpu", seeds=1, rows=("VQ-VQ", "VQ_u")), tmp_path, workers=2,
                    echo=lambda s: None, execute=lambda job, results, devices, processes, **_: {"devices": devices},
                    gpus=4, gpus_per_run=2)
    assert {r["devices"] for r in out.values()} <= {"4,5", "6,7"} and len(out) >= 2


def test_the_probe_hands_a_gpu_model_its_features_and_reads_its_output_back():
    """Encoders return CPU tensors; a model on another device (meta stands in for cuda) gets them
    moved to it, and its output comes back through .cpu() before numpy."""
    import torch

    from uvlm.suites.probe import adapter_outputs

    class Output:
        def __init__(self, rows: int):
            self.rows, self.on_cpu = rows, False

        def float(self):
            return self

        def cpu(self):
            self.on_cpu = True
            return self

        def numpy(self):
            assert self.on_cpu, "numpy() on a GPU tensor"
            return [[1.0] * 3] * self.rows

    class GpuModel(torch.nn.Module):
        def __init__(self):
            super().__init__()  # on a GPU (gpu_check.sh) the real device, else meta in its place
            self.weight = torch.nn.Parameter(torch.zeros(2, device="cuda" if torch.cuda.is_available() else "meta"))

        def understand(self, features):
            assert features.device == self.weight.device, "features on another device than the model"
            return Output(len(features))

    assert len(adapter_outputs(GpuModel(), torch.zeros(5, 8))) == 5


def test_processes_wait_for_rank_0_long_enough(monkeypatch):
    """A multi-GPU run on an empty cache waits at a barrier while rank 0 renders and encodes:
    the process group gets uvlm's timeout (hours), not NCCL's 10-minute default."""
    from datetime import timedelta

    import accelerate

    from uvlm.device import DISTRIBUTED_TIMEOUT, process_state

    seen = {}
    monkeypatch.setattr(accelerate, "PartialState", lambda **kwargs: seen.update(kwargs) or "state")
    assert process_state("fp32") == "state"
    assert seen == {"cpu": True, "timeout": DISTRIBUTED_TIMEOUT} and timedelta(hours=1) <= DISTRIBUTED_TIMEOUT


def test_ctrl_c_stops_a_suite_and_starts_no_queued_run(tmp_path):
    """An interrupt while runs are in flight: no queued run starts (the executor used to wait for
    every queued job, each starting new children), a line says how to resume, and the interrupt
    goes on up (the CLI exits 130)."""
    import os
    import signal
    import time

    started, lines = [], []

    def execute(job, results, devices, processes, **_):
        started.append(job.key)
        if len(started) == 1:
            # Ctrl-C itself: a real SIGINT wakes the main thread wherever it waits (a simulated one,
            # _thread.interrupt_main, is only seen when it next runs Python code: under load, too late)
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        return {"train_seconds": 0.2}

    jobs = expand("mutual", "cpu", seeds=2, rows=("VQ-VQ", "VQ_u"))
    # Python's own Ctrl-C handler, whatever the test runner set (pytest-xdist's workers ignore SIGINT)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_suite(jobs, tmp_path, workers=1, echo=lines.append, execute=execute)
    finally:
        signal.signal(signal.SIGINT, before)
    assert len(started) == 1 < len({j.key for j in jobs})
    assert any(line.startswith("interrupted:") and "run the same command again" in line for line in lines)


def test_a_gpu_preset_where_torch_sees_no_gpu_is_refused_before_anything_is_written(cli, tmp_path, monkeypatch):
    """smol-standin and paper ask for a GPU (train.device cuda): where torch sees none the suite
    says so first, in one line, with the setting that runs them on the CPU (not the memory a CPU
    run would need, nor a failure in every run), and writes nothing."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    for preset in ("smol-standin", "paper"):
        code, _, err = cli("suite", "run", "mutual", "--preset", preset, "--out", tmp_path / "r")
        assert code == 2 and "sees no GPU" in err and "--set train.device=auto" in err and "\n" not in err.strip()
    assert not (tmp_path / "r").exists()


def test_a_suite_whose_encoders_are_missing_is_refused_before_anything_is_written(cli, tmp_path, encoders,
                                                                                   monkeypatch):
    from uvlm.vision.load import missing_weights

    monkeypatch.chdir(tmp_path)  # the paper preset's VQ path is relative: not here
    monkeypatch.delenv("UVLM_WEIGHTS", raising=False)
    # the GPU and host memory checks come first: train.device=auto passes the one on any machine, and
    # what this machine has free beside other work must not decide the other
    monkeypatch.setattr("uvlm.resources.available_memory", lambda: 2.0**50)
    code, _, err = cli("suite", "run", "mutual", "--preset", "smol", "--set", "train.device=auto",
                       "--out", tmp_path / "r")
    assert code == 2 and "--preset smol-standin" in err and "vq_ds16_c2i.pt" in err and "\n" not in err.strip()
    assert not (tmp_path / "r").exists()
    # `suite status` says the same where one prepares (a machine without the GPU, say), and writes nothing
    code, out, _ = cli("suite", "status", "mutual", "--preset", "smol", "--out", tmp_path / "r")
    assert code == 0 and "not ready to run: the smol preset's encoders are not on this machine" in out
    assert "vq_ds16_c2i.pt" in out and not (tmp_path / "r").exists()
    with pytest.raises(UvlmError, match="siglip-base-patch16-224") as refused:
        check_encoder_weights(expand("mutual", "paper", 1, ()), "paper")
    assert "standin" not in str(refused.value)
    # the same specs where the weights are: a SigLIP folder, a VQ checkpoint under $UVLM_WEIGHTS
    assert missing_weights(encoders["siglip"]) is None and missing_weights("cpu-vq") is None
    vq = encoders["vq"].removeprefix("vq:")
    monkeypatch.setenv("UVLM_WEIGHTS", str(Path(vq).parent.parent))
    assert missing_weights(f"vq:{Path(vq).parent.name}/{Path(vq).name}") is None


def test_measured_suite_speeds_match_the_committed_runs():
    """The speeds `suite list` and a fresh `suite status` estimate from are the committed runs' median."""
    import statistics
    from pathlib import Path

    from uvlm.suites.presets import MEASURED_SECONDS_PER_RECORD
    from uvlm.suites.runner import record_rates

    root = Path(__file__).resolve().parents[1]
    for preset, folder in (("cpu2", "results-cpu2"), ("cpu", "results"), ("cpu2-smol", "results-cpu2-smol")):
        keys = [p.name for p in (root / folder / "runs").iterdir()]
        measured = statistics.median(record_rates(root / folder, keys).values())
        assert abs(MEASURED_SECONDS_PER_RECORD[preset] / measured - 1) < 0.1, (preset, measured)


def test_suite_list_and_a_fresh_status_say_how_long_a_suite_takes(cli, tmp_path):
    code, out, err = cli("suite", "list", "--preset", "cpu2", "--workers", "2")
    assert code == 0, err
    lines = out.splitlines()
    affine = next(line for line in lines if line.startswith("affine "))
    assert "27 runs at 3 seeds" in affine and "h with 2 at a time" in affine
    code, out, _ = cli("suite", "status", "affine", "--preset", "cpu2", "--out", tmp_path / "fresh", "--workers", "2")
    hours = float(affine.split("about ")[1].split(" h")[0])
    assert f"at most about {hours:.1f} h of one core" in out and "committed cpu2 runs' speed" in out
    code, out, _ = cli("suite", "list", "--preset", "paper")
    assert code == 0 and "no measured speed for preset paper" in out


def test_suite_status_reads_the_folders_own_set_back(cli, tmp_path):
    """A status without --set describes the folder's study (the --set its runs were made with)."""
    from uvlm.suites.runner import claim_results

    results = tmp_path / "r"
    claim_results(results, ("data.train.n_vqa=100", "data.train.n_caption=100", "data.train.n_generation=100"),
                  "cpu2")
    _, given, _ = cli("suite", "status", "affine", "--out", results, "--workers", "1", "--set",
                      "data.train.n_vqa=100", "--set", "data.train.n_caption=100", "--set",
                      "data.train.n_generation=100")
    _, read_back, _ = cli("suite", "status", "affine", "--out", results, "--workers", "1")
    _, preset_default, _ = cli("suite", "status", "affine", "--out", tmp_path / "fresh", "--preset", "cpu2",
                               "--workers", "1")
    assert given == read_back != preset_default  # 300 records a run, not the preset's 42,000


def test_a_suite_says_what_it_pretrains_first_and_how_long(cli, tmp_path, monkeypatch):
    """Before the first run: which stand-ins and judge a study builds (neither cached nor shipped),
    with their measured times; nothing once they are cached; the whole grid's one run count."""
    from uvlm.suites.presets import MEASURED_PRETRAIN_SECONDS, pretraining_line, stand_ins_to_pretrain
    from uvlm.suites.spec import expand

    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "empty-cache"))
    code, out, err = cli("suite", "status", "mutual", "--preset", "cpu", "--seeds", 1, "--out", tmp_path / "a",
                         "--workers", 1)
    assert code == 0, err
    assert "vq stand-in (about 20 min), siglip stand-in (about 11 min), judge (about 11 min)" in out
    assert ("`uvlm pretrain vq --preset cpu`, `uvlm pretrain siglip --preset cpu`, `uvlm pretrain judge --preset cpu` "
            "build them ahead") in out
    # cpu2's stand-ins and judge ship inside the package: nothing is left to build
    every = [j.config for j in expand("mutual", "cpu2", 1)]
    assert stand_ins_to_pretrain(every, "cpu2") == []
    cpu = [j.config for j in expand("mutual", "cpu", 1)]
    seconds = MEASURED_PRETRAIN_SECONDS["cpu"]
    assert stand_ins_to_pretrain(cpu, "cpu") == [("vq stand-in", seconds["vq"]), ("siglip stand-in", seconds["siglip"]),
                                                 ("judge", seconds["judge"])]
    # a preset with real encoders still trains its judge (224 px renders) on first use, unmeasured
    smol = [j.config for j in expand("mutual", "smol", 1)]
    assert stand_ins_to_pretrain(smol, "smol") == [("judge", None)]
    assert pretraining_line(smol, "smol") == ("first the runs pretrain what this machine has not cached, one core "
                                              "each: judge (time not measured); `uvlm pretrain judge --preset smol` "
                                              "builds it ahead")
    code, out, _ = cli("suite", "list", "--preset", "cpu2", "--workers", 2)
    assert "`uvlm suite run all --preset cpu2 --seeds 3`): 255 runs" in out


def test_measured_pretraining_times_are_the_shipped_entries():
    """The times a suite quotes for cpu2's stand-ins and judge are the ones their shipped builds recorded."""
    from uvlm.suites.presets import MEASURED_PRETRAIN_SECONDS, _cache_entry, stand_in_configs
    from uvlm.vision.cache import SHIPPED, config_hash

    for kind, cfg in stand_in_configs("cpu2", ("vq", "siglip", "judge")).items():
        folder, key = _cache_entry(kind, cfg)
        meta = json.loads((SHIPPED / folder / config_hash(key) / "meta.json").read_text())
        assert round(meta["info"]["train_seconds"]) == MEASURED_PRETRAIN_SECONDS["cpu2"][kind]


def test_run_folders_say_what_they_are_and_older_names_are_still_read(tmp_path):
    """A run folder carries its row's label (slugged); one run per config across tables and suites,
    named by its first job; a folder an older uvlm named by the model alone is still its run's."""
    from uvlm.suites.runner import with_folders
    from uvlm.suites.spec import identity_of, slug

    mutual = expand("mutual", "cpu", seeds=1, rows=("VQ_u", "VQ-VQ"))
    keys = {j.label: j.key for j in mutual}
    assert keys["VQ_u (step-matched)"].startswith("VQ_u-step-matched-s0-") and keys["VQ_u"].startswith("VQ_u-s0-")
    assert slug("SigLIP*_u p=0.2 (step-matched)") == "SigLIPstar_u-p-0.2-step-matched"
    assert all(identity_of(j.key) == j.identity for j in mutual)
    # the scaling suite alone names VQ_u's 0K-generation point by its own label ...
    scaling = {j.label: j for j in expand("scaling", "cpu", seeds=1, rows=("VQ-VQ", "VQ_u"))}
    point = scaling["VQ_u und 120K gen 0K"]
    assert point.key.startswith("VQ_u-und-120K-gen-0K-s0-")
    # ... and in a folder where mutual made that run, the run is mutual's
    for job in mutual:
        finish(tmp_path, job)
    adopted = {j.label: j for j in with_folders(list(scaling.values()), tmp_path)}
    assert adopted["VQ_u und 120K gen 0K"].key == keys["VQ_u"]
    # done already: the 0K point (VQ_u), the default point (VQ-VQ) and its control (VQ_u step-matched)
    assert suite_status(list(adopted.values()), tmp_path)["seeds"][0]["done"] == 3
    # a folder named the old way (model, seed, hash) is found by its identity
    control = next(j for j in mutual if j.label == "VQ_u (step-matched)")
    (tmp_path / "runs" / control.key).rename(tmp_path / "runs" / f"VQ_u-{control.identity}")
    found = next(j for j in with_folders(mutual, tmp_path) if j.label == control.label)
    assert found.key == f"VQ_u-{control.identity}"
