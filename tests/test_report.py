"""The report at toy size: tables beside the paper, verdicts, figures, from runs' own files."""

from __future__ import annotations

import json

import numpy as np

from uvlm.io import atomic_write_json, atomic_write_text
from uvlm.model.names import parse_name
from uvlm.suites.report import write_report
from uvlm.suites.runner import claim_results, record_jobs
from uvlm.suites.spec import Job, expand

ATTRS = ["time", "weather", "weather_pos", "battery", "battery_pos"]


def truth(attribute: str, i: int) -> str:
    """The i-th test question's true answer: the same for every run (one test set)."""
    rng = np.random.default_rng(1000 + i)
    return {"time": f"{rng.integers(1, 13):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}",
            "weather": ("sunny", "cloudy", "rainy")[rng.integers(3)], "battery": f"{rng.integers(0, 101)}%",
            "weather_pos": ("top-left", "top-right", "bottom-left", "bottom-right")[rng.integers(4)],
            "battery_pos": ("top-left", "top-right", "bottom-left", "bottom-right")[rng.integers(4)]}[attribute]


def fake_run(results, job: Job, p_correct: float, seed: int, gen: bool):
    rng = np.random.default_rng(seed)
    run = results / "runs" / job.key / "eval"
    answers = []
    for i in range(200):
        score = float(rng.random() < p_correct)
        attribute = ATTRS[i % 5]
        answers.append({"id": f"test-vqa-{i:06d}", "attribute": attribute, "ground_truth": truth(attribute, i),
                        "answer": "x", "score": score})
    atomic_write_text(run / "answers.jsonl", "".join(json.dumps(a) + "\n" for a in answers))
    metrics = {"vqa": {"total_acc": 100 * p_correct, "n": {"total": 200}}, "gen": None}
    if gen:
        rows = [{"id": f"test-generation-{i:06d}", "judged": {}, "scores": {"time": float(rng.random() < 0.5)}}
                for i in range(40)]
        atomic_write_text(run / "generation.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        metrics["gen"] = {"n": 40, "n_images": 40, "fid": 12.5, "judge": {"total_acc": 50.0}}
    atomic_write_json(run / "metrics.json", metrics)
    atomic_write_json(results / "runs" / job.key / "wall.json", {"train_seconds": 600, "eval_seconds": 30})
    atomic_write_json(results / "runs" / job.key / "final.json", {"records": 36_000})
    evals = [{"event": "eval", "step": s, "vqa_total_acc": 50 + s} for s in (10, 20, 30)]
    atomic_write_text(results / "runs" / job.key / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in evals))


def test_report_at_toy_size(tmp_path):
    results = tmp_path / "results"
    jobs = []
    for label, p, gen in (("VQ-VQ", 0.9, True), ("VQ_u", 0.6, False), ("VQ_g", 0.0, True)):
        for seed in range(2):
            cfg = {"model": {"name": label}, "train": {"seed": seed}, "data": {}}
            job = Job("A3", label, seed, cfg)
            jobs.append(job)
            fake_run(results, job, p, seed * 10 + len(label), gen)
    record_jobs(results, expand("mutual", "cpu", seeds=3))  # the suite was asked for every row
    record_jobs(results, jobs)
    readme = write_report(results, tmp_path / "report")
    text = readme.read_text()
    assert "Table A3" in text and "| VQ-VQ | 2 |" in text
    assert "89.3" in text  # the paper's VQ-VQ total beside ours
    assert "unified beats understanding-only: VQ-VQ vs VQ_u" in text and "**holds**" in text
    # chance above the table, from the true answers: a random time scores exactly 50
    assert "| *chance: random answer* |  | 50.0 | 33.3 | 25.0 |" in text
    assert "| *chance: best constant answer* |" in text
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["VQ_g"][6].endswith("°")  # a total of 0 does not clear chance
    assert not rows["VQ-VQ"][6].endswith("°")  # 90% correct does
    assert "| Holm p |" in text and "not recorded" in text  # fake runs carry no judge baselines
    assert (tmp_path / "report" / "fig-A3.png").exists() and (tmp_path / "report" / "fig-3-curves.png").exists()
    assert "1.05 h of one core for these 6 runs" in text
    # 6 runs of 630 s for 36K records done. Mutual at 3 seeds trains 3 x 468K records: 6 unified
    # rows and 4 step-matched controls of 36K, 4 _u rows of 24K, VQ_g's 12K. 1404K x 630 / 36K s = 6.8 h.
    assert "| mutual | 6 | 1.1 | 45 | 6.8 (3.4) |" in text and "| affine |" not in text


def test_report_counts_the_encoder_weights_runs_read(tmp_path):
    results = tmp_path / "results"
    jobs = expand("mutual", "cpu", seeds=2, rows=("VQ-VQ", "VQ_u"))
    for i, job in enumerate(jobs):
        fake_run(results, job, 0.7, i, gen=job.label == "VQ-VQ")
    record_jobs(results, jobs)
    assert "## Encoder weights" not in write_report(results, tmp_path / "report").read_text()  # none recorded
    for job, machine in zip(jobs[:3], "aab", strict=False):
        atomic_write_json(results / "runs" / job.key / "final.json",
                          {"records": 36_000, "encoders": {"input": f"vq-{machine}", "output": f"vq-{machine}"}})
    text = write_report(results, tmp_path / "report").read_text()
    assert "| `vq-a` | 2 |" in text and "| `vq-b` | 1 |" in text
    assert f"| *not recorded (runs from before the record)* | {len(jobs) - 3} |" in text
    # a finished run that recorded no wall time (stopped before wall.json existed) is still a run
    # of the study: counted in the header and by encoder, left out of the cost with a word why
    (results / "runs" / jobs[0].key / "wall.json").unlink()
    text = write_report(results, tmp_path / "report").read_text()
    assert f"preset `cpu`. {len(jobs)} runs." in text and "| `vq-a` | 2 |" in text
    assert f"for these {len(jobs) - 1} runs (1 finished run recorded no wall time" in text


def test_cost_prices_only_the_rows_asked_for(tmp_path):
    """A `--rows` folder's cost table prices those rows' runs, not the whole suite's grid."""
    results = tmp_path / "results"
    jobs = expand("mutual", "cpu", seeds=3, rows=("VQ-VQ", "VQ_u"))
    for i, job in enumerate(j for j in jobs if j.seed == 0):
        fake_run(results, job, 0.7, i, gen=job.label == "VQ-VQ")
    record_jobs(results, jobs)
    text = write_report(results, tmp_path / "report").read_text()
    # 3 seeds of VQ-VQ (36K records), VQ_u (24K) and its step-matched control (36K): 9 runs, 288K
    # records at 630 s per 36K = 1.4 h; 3 runs done, 0.5 h spent.
    assert "| mutual | 3 | 0.5 | 9 | 1.4 (0.7) |" in text
    # A planned suite with no run done yet is priced at the rate of the runs there are: VQ_u's
    # battery runs are 7 per seed (A6's 24K and its 36K control, which p = 0.05 shares; p = 0,
    # 0.01 and 0.2 at 24K, the last two with 36K controls), 21 at 3 seeds: 612K records at
    # 630 s per 36K = 3.0 h.
    record_jobs(results, expand("transfer-battery", "cpu", seeds=1, rows=("VQ_u",)))
    text = write_report(results, tmp_path / "report").read_text()
    assert "| transfer-battery | 0 | 0.0 | 21 | 3.0 (1.5) |" in text


def test_the_full_grid_line_names_the_folders_set(tmp_path):
    """The whole grid's run count is counted with the folder's --set, and its command says so."""
    results = tmp_path / "results"
    claim_results(results, ("train.epochs=2",), "cpu")
    jobs = expand("mutual", "cpu", seeds=1, overrides=("train.epochs=2",), rows=("VQ-VQ",))
    fake_run(results, jobs[0], 0.7, 0, gen=True)
    record_jobs(results, jobs)
    text = write_report(results, tmp_path / "report").read_text()
    n = len({j.key for j in expand("all", "cpu", 3, ("train.epochs=2",))})
    assert f"The full cpu grid (`uvlm suite run all --set train.epochs=2 --seeds 3`) is {n} runs" in text


def test_scaling_and_dose_sections(tmp_path):
    """Known answers: VQA rises with generation data, beats its step-matched control, and the
    unified models transfer at every dose; each becomes a verdict that holds and a figure."""
    results = tmp_path / "results"
    jobs = expand("scaling", "cpu", seeds=3)
    jobs += [j for j in expand("transfer-weather", "cpu", seeds=3) if j.table == "dose-weather"]
    for i, job in enumerate(jobs):
        train = job.config["data"]["train"]
        tasks = parse_name(job.config["model"]["name"]).tasks
        if job.table == "A4":
            p = 0.55 if "step-matched" in job.label else 0.5 + (tasks == "both") * train["n_generation"] / 120_000
        else:
            p = 0.95 if tasks == "both" else 0.2
        fake_run(results, job, p, i, gen=tasks != "understanding")
    record_jobs(results, jobs)
    text = write_report(results, tmp_path / "report").read_text()
    assert "| VQ-VQ und 240K gen 60K | 3 |" in text and "94.0" in text  # the paper's A4 cell beside ours
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    slope = next(v for k, v in rows.items() if k.startswith("understanding grows with generation data: VQ-VQ"))
    assert "**holds**" in slope
    assert "**holds**" in rows["... VQ-VQ und 120K gen 180K against its step-matched control"]
    assert "**holds**" in rows["knowledge transfers at p=0.0 (weather questions): VQ-VQ vs VQ_u"]
    assert "**holds**" in rows["... VQ-VQ at p=0.2 against the step-matched control"]
    assert "| VQ_u p=0.2 (step-matched) | 3 |" in text
    assert not any(k.startswith("knowledge transfers at p=0.05") for k in rows)  # A5's own rows test 0.05
    for name in ("fig-4-scaling.png", "fig-dose-weather.png"):
        assert (tmp_path / "report" / name).exists() and f"![{name}]" in text
    # seed 0 alone: the same numbers get no verdict
    alone = tmp_path / "alone"
    for job in (j for j in jobs if j.seed == 0):
        src, dst = results / "runs" / job.key, alone / "runs" / job.key
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
    record_jobs(alone, [j for j in jobs if j.seed == 0])
    text = write_report(alone, tmp_path / "report-alone").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    control = rows["... VQ-VQ at p=0.2 against the step-matched control"]
    assert control.endswith("| 1 | - | - | - | **1 seed: no verdict** |")
    assert not any(line.endswith("| **holds** |") for line in text.splitlines())


def test_probe_section_and_verdicts(tmp_path):
    """Probe accuracy far above chance (one model) and at chance (another) get opposite verdicts."""
    results = tmp_path / "results"
    jobs = expand("probe", "cpu", seeds=2)
    rng = np.random.default_rng(0)
    for i, job in enumerate(jobs):
        fake_run(results, job, 0.5, i, gen=False)
        p = 0.95 if job.label == "VQ-VQ" else 1 / 3
        correct = (rng.random(1000) < p).astype(int).tolist()
        atomic_write_json(results / "runs" / job.key / "probe" / "probe.json",
                          {"weather_probe_acc": 100 * float(np.mean(correct)), "correct": correct})
    record_jobs(results, jobs)
    text = write_report(results, tmp_path / "report").read_text()
    assert "## Fig 7" in text and "| VQ-VQ | 2 |" in text
    assert "Fig 7 probe" not in text  # no VQA table for the probe's runs: they are A5's
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    verdict = {name: rows[f"the probe finds the weather in {name}'s adapter output: accuracy minus chance (33.3)"]
               for name in ("VQ-VQ", "VQ_u")}
    assert "**holds**" in verdict["VQ-VQ"] and "**holds**" not in verdict["VQ_u"]


def test_biased_tables_show_the_papers_held_out_attribute(tmp_path):
    results = tmp_path / "results"
    job = next(j for j in expand("transfer-weather", "cpu", seeds=1) if j.table == "A5" and j.label == "SigLIP_u")
    fake_run(results, job, 0.5, 0, gen=False)
    record_jobs(results, [job])
    text = write_report(results, tmp_path / "report").read_text()
    assert "| paper total | paper weather |" in text
    row = next(line for line in text.splitlines() if line.startswith("| SigLIP_u | 1 |"))
    assert "| 78.7 | 28.6 |" in row  # the paper's SigLIP_u: total 78.7, weather 28.6


def test_bench_cost_measures_target_5_from_the_runs_wall_times(tmp_path, monkeypatch):
    """benchmarks/bench_cost.py: unified A3 runs' minutes against 30, and mutual + transfer-weather
    on 2 cores against 16 h, measured where a suite is complete and estimated where it is not."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_cost
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path / "RESULTS.md")
    results = tmp_path / "results"
    jobs = expand("mutual", "cpu", seeds=3)
    for i, job in enumerate(jobs):
        fake_run(results, job, 0.7, i, gen=parse_name(job.config["model"]["name"]).tasks != "understanding")
    record_jobs(results, jobs)
    monkeypatch.setattr(sys, "argv", ["bench_cost.py", str(results)])
    bench_cost.main()
    text = (tmp_path / "RESULTS.md").read_text()
    # every run took 630 s: 18 unified A3 runs of 10.5 min; mutual's 45 runs 7.9 one-core hours
    assert "median 10.5, slowest 10.5 (target <= 30: met; 18 of 18 runs within it)" in text
    assert "| mutual | 45 of 45 | 7.9 | 7.9 | 3.9 | measured |" in text
    assert "| transfer-weather | 0 | - | - | - | not run |" in text and "not both run" in text
    weather = expand("transfer-weather", "cpu", seeds=3)
    for i, job in enumerate(j for j in weather if j.seed == 0):
        fake_run(results, job, 0.7, 100 + i, gen=parse_name(job.config["model"]["name"]).tasks != "understanding")
    record_jobs(results, weather)
    bench_cost.main()
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| transfer-weather | 26 of 78 |" in text and "| estimated |" in text
    assert "h on 2 cores (estimated; target <= 16:" in text
    assert text.count("## bench_cost") == 1, "a rerun replaces its section"


def test_primary_family_is_the_papers_headlines_and_adjusted_alone(tmp_path):
    """The A3 headline claims form the primary family, quoted from the paper, Holm-adjusted among
    themselves only: adding secondary findings never changes a primary Holm p."""
    from uvlm.suites.findings import primary_findings, tested
    from uvlm.suites.results import Results
    from uvlm.suites.stats import holm

    assert all(f.quote.startswith('"') and "(" in f.quote for f in primary_findings())
    results = tmp_path / "results"
    ability = {"SigLIP-SigLIP": 0.9, "VQ-VQ": 0.9, "SigLIP-VQ": 0.7, "VQ-SigLIP": 0.7, "SigLIP_u": 0.6, "VQ_u": 0.6,
               "VQ_g": 0.0}
    jobs = [j for j in expand("mutual", "cpu", seeds=3) if j.label in ability]
    for i, job in enumerate(jobs):
        fake_run(results, job, ability[job.label], i, gen=parse_name(job.label).tasks != "understanding")
    record_jobs(results, jobs)
    found = tested(Results(results))
    primary = [t for t in found if t.primary]
    assert [t.finding.text.split(":")[0] for t in primary] == ["mutual benefit, understanding",
                                                                 "mutual benefit, generation", "alignment"]
    assert all(t.family_size == 3 for t in primary) and len(found) > len(primary)
    raw = [t.comparison.p_value for t in primary]
    assert [t.comparison.p_adjusted for t in primary] == holm(raw)
    text = write_report(results, tmp_path / "report").read_text()
    assert "### Primary family" in text and "### Secondary family" in text
    line = next(x for x in text.splitlines() if "mutual benefit, understanding" in x)
    assert line.endswith("| **holds** |") and "(abstract)" in line


def test_words_come_from_the_statistics():
    from uvlm.suites.stats import Comparison, Interval
    from uvlm.suites.words import phrase

    def made(verdict, p=0.5):
        return Comparison(Interval(1, 0, 2, 3, 100), p, verdict)

    assert phrase(made("reproduced", 0.01)) == "holds" and phrase(made("not reproduced", 0.01)) == "against the paper"
    assert phrase(made("inconclusive"), rows_clear=[False, False]) == "both at chance"
    assert phrase(made("inconclusive"), rows_clear=[False, True]) == "inconclusive"
    assert phrase(made("inconclusive"), rows_clear=[False] * 3) == "all at chance"
    assert phrase(Comparison(Interval(1, 0, 2, 1, 100), None, "1 seed: no verdict")) == "1 seed: no verdict"
    assert phrase(Interval(50, 45, 55, 3, 100), bar=44.4) == "reads it"
    assert phrase(Interval(50, 44, 55, 3, 100), bar=44.4) == "not shown"


def test_a_sheet_of_generated_images_is_shown_in_the_report(tmp_path):
    from PIL import Image

    results = tmp_path / "results"
    jobs = expand("mutual", "cpu", seeds=1, rows=("VQ-VQ",))
    for i, job in enumerate(jobs):
        fake_run(results, job, 0.7, i, gen=True)
    record_jobs(results, jobs)
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "sheet.png")
    text = write_report(results, tmp_path / "report", samples=tmp_path / "sheet.png").read_text()
    assert "## Generated images" in text and "![samples](samples.png)" in text
    assert (tmp_path / "report" / "samples.png").read_bytes() == (tmp_path / "sheet.png").read_bytes()
    assert "## Generated images" not in write_report(results, tmp_path / "plain").read_text()
