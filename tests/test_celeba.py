"""CelebA read from every layout users have, on fake copies; partial and damaged copies refused."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from uvlm.data.celeba import ATTRIBUTES, read_celeba
from uvlm.data.fake_celeba import LAYOUTS, fake_attributes, write_fake_celeba
from uvlm.errors import UvlmError

N = 40


@pytest.fixture(autouse=True)
def one_thread():
    """xdist runs two test processes on CI's two cores: one thread each, not two fighting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_the_same_copy(tmp_path, layout):
    celeba = read_celeba(write_fake_celeba(tmp_path, layout, N))
    assert len(celeba) == N and celeba.layout == ("parquet" if layout == "parquet" else "official")
    assert sorted(celeba.names) == [f"{i + 1:06d}.jpg" for i in range(N)]
    order = np.argsort(celeba.names)
    assert (celeba.attributes[order] == fake_attributes(N)).all(), "the seven columns, whatever the file's order"
    assert [len(celeba.pool(p)) for p in ("train", "valid", "test")] == [32, 4, 4]
    assert set(celeba.pool("train")).isdisjoint(celeba.pool("test"))
    first = int(order[0])
    img = celeba.image(first)
    assert img.size == (178, 218) and img.mode == "RGB"
    # the drawn attributes show: a black-haired face has dark pixels in the hair band
    hair = np.asarray(img)[45:65, 70:110].mean()
    assert (hair < 60) == bool(celeba.attributes[first, ATTRIBUTES.index("Black_Hair")])


def test_partial_missing_and_damaged_copies_are_one_line(tmp_path):
    with pytest.raises(UvlmError, match=r"no CelebA found at .*img_align_celeba"):
        read_celeba(tmp_path)
    with pytest.raises(UvlmError, match="not a folder"):
        read_celeba(tmp_path / "nowhere")
    root = write_fake_celeba(tmp_path / "a", "official", 12)
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(UvlmError, match=r"partial: list_eval_partition\.txt missing"):
        read_celeba(root)
    root = write_fake_celeba(tmp_path / "b", "official", 12)
    text = (root / "list_attr_celeba.txt").read_text().splitlines()
    (root / "list_attr_celeba.txt").write_text("\n".join([*text[:4], text[4][:20], *text[5:]]))
    with pytest.raises(UvlmError, match="line 5 is not a file name"):
        read_celeba(root)
    root = write_fake_celeba(tmp_path / "c", "official", 12)
    (root / "img_align_celeba" / "000003.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(UvlmError, match=r"000003\.jpg .* is missing or corrupt"):
        read_celeba(root).image(2)
    root = write_fake_celeba(tmp_path / "d", "parquet", 12)
    damaged = next(root.rglob("train-*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(UvlmError, match="not a readable parquet file"):
        read_celeba(root)


def test_a_celeba_dataset_folder_is_built_deterministically_and_scored(cli, tmp_path):
    import json

    from uvlm.data.folder import read_manifest, read_records

    source = write_fake_celeba(tmp_path / "celeba", "parquet", 80)
    args = ["data", "celeba", "--celeba", source, "--images", "24", "--size", "32"]
    code, out, err = cli(*args, "--out", tmp_path / "a", "--workers", "2")
    assert code == 0, err
    assert cli(*args, "--out", tmp_path / "b")[0] == 0
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert a == b, "same seed and copy, same bytes, whatever the workers"
    assert a["dataset"] == "celeba" and a["counts"] == {"vqa": 24, "caption": 24, "generation": 24, "images": 24}
    assert 0 < a["celeba"]["redrawn_share"] < 1, "the fake copy lacks some combinations, as CelebA does"
    train_names = set(a["celeba"]["images"])
    assert cli("data", "celeba", "--celeba", source, "--images", "6", "--split", "test", "--size", "32",
               "--out", tmp_path / "test")[0] == 0
    assert train_names.isdisjoint(read_manifest(tmp_path / "test")["celeba"]["images"]), "disjoint pools"

    records = read_records(tmp_path / "a")
    vqa = [r for r in records if r["task"] == "vqa"]
    assert all(r["domain"] == "celeba" and r["conversations"][1]["value"] in ("Yes", "No") for r in vqa)
    first = vqa[0]
    beard = {"from": "human", "value": "Does the person have a beard?"}
    assert all(t != beard or r["attributes"]["No_Beard"] == (r["conversations"][i + 1]["value"] == "No")
               for r in vqa for i, t in enumerate(r["conversations"]))
    caption = next(r for r in records if r["task"] == "caption")
    assert len(caption["named"]) >= 3 and caption["conversations"][1]["value"].startswith(("A ", "A man", "A woman"))

    truth = first["conversations"][1]["value"]
    wrong = "No" if truth == "Yes" else "Yes"
    lines = [{"attribute": first["named"][0], "ground_truth": truth, "answer": f"{truth}, clearly."},
             {"attribute": first["named"][0], "ground_truth": truth, "answer": f"{wrong}. Not {truth.lower()}"},
             {"attribute": "Male", "ground_truth": "No", "answer": "nobody knows"}]
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, out, err = cli("score", tmp_path / "answers.jsonl")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["total_acc"] == 100 / 3 and scores["Male_acc"] == 0.0 and "time_acc" not in scores
    (tmp_path / "bad.jsonl").write_text(json.dumps({"attribute": "Male", "ground_truth": "maybe", "answer": "yes"}))
    code, _, err = cli("score", tmp_path / "bad.jsonl")
    assert code == 2 and "is not Yes or No" in err


def test_chance_of_celeba_questions():
    from uvlm.eval.chance import chance

    truths = [("Eyeglasses", "No")] * 8 + [("Eyeglasses", "Yes")] * 2 + [("Male", "Yes"), ("Male", "No")]
    c = chance(truths)
    assert c["random"]["Eyeglasses_acc"] == 50.0 and c["random"]["total_acc"] == 50.0
    assert c["constant"]["Eyeglasses_acc"] == 80.0 and c["constant_answers"]["Eyeglasses"] == "no"
    assert c["constant"]["Male_acc"] == 50.0


def test_the_celeba_judge_reads_the_attributes_of_held_out_faces(cli, tmp_path, monkeypatch):
    from uvlm.vision.judge import FaceJudgeConfig, PixelJudge, face_judge

    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    source = write_fake_celeba(tmp_path / "celeba", "official", 300)
    for split, n in (("train", 120), ("test", 30)):
        code, _, err = cli("data", "celeba", "--celeba", source, "--images", n, "--size", "32", "--split", split,
                           "--out", tmp_path / split)
        assert code == 0, err
    _, info = face_judge(tmp_path / "train", tmp_path / "test", FaceJudgeConfig(steps=60, batch=32))
    held = info["held_out"]
    assert held["n"]["total"] == 30 * 7 and held["total_acc"] > 90, held
    assert min(held[f"{a}_acc"] for a in ATTRIBUTES) > 75, held
    # saved with its heads; reloads as a CelebA judge
    again = PixelJudge.load(next((tmp_path / "cache" / "face-judge").glob("[!.]*")))
    assert set(again.model.heads) == set(ATTRIBUTES)


def test_stand_ins_pretrained_on_celeba_images(cli, tmp_path, monkeypatch):
    from uvlm.vision import pretrain

    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    source = write_fake_celeba(tmp_path / "celeba", "drive", 120)
    for split, n in (("train", 40), ("test", 12)):
        assert cli("data", "celeba", "--celeba", source, "--images", n, "--size", "32", "--split", split,
                   "--out", tmp_path / split)[0] == 0
    toy = dict(steps=3, batch=8, style={"size": 32})
    vq_cfg = pretrain.VQPretrainConfig(**toy)
    siglip_cfg = pretrain.SiglipPretrainConfig(**toy, hidden_size=32, layers=1, heads=2, text_layers=1)
    vq, vq_info, siglip, siglip_info = pretrain.face_standins(tmp_path / "train", tmp_path / "test", vq_cfg,
                                                              siglip_cfg)
    assert vq.n_tokens == 16 and siglip.n_tokens == 16 and vq_info["psnr_db"] > 0
    for info in (vq_info, siglip_info):
        assert info["probe"]["vqa"]["n"]["total"] == (12 - 12 * 4 // 5) * 7 and "Eyeglasses_acc" in info["probe"]["vqa"]
    built = sorted(p.name for p in (tmp_path / "cache").rglob("meta.json"))
    pretrain.face_standins(tmp_path / "train", tmp_path / "test", vq_cfg, siglip_cfg)  # cached: nothing new
    assert sorted(p.name for p in (tmp_path / "cache").rglob("meta.json")) == built


def test_bad_celeba_sources_leave_nothing_and_galleries_show_faces(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_fake_celeba(tmp_path / "a", "official", 40)
    (root / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    code, _, err = cli("data", "celeba", "--celeba", root, "--images", "30", "--size", "32", "--sampling", "data",
                       "--out", tmp_path / "out")
    assert code == 2 and "000002.jpg" in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / "out").iterdir()), "no half-built folder to refuse the corrected command"
    assert cli("data", "celeba", "--celeba", root, "--images", "4", "--seed", "-1", "--out", tmp_path / "s")[0] == 2

    root = write_fake_celeba(tmp_path / "b", "parquet", 20)
    for f in root.rglob("*.parquet"):
        table = pq.read_table(f)
        as_int = pa.array([1 if v else -1 for v in table.column("Male").to_pylist()], pa.int64())
        pq.write_table(table.set_column(table.schema.get_field_index("Male"), "Male", as_int), f)
    with pytest.raises(UvlmError, match="not boolean"):
        read_celeba(root)

    good = write_fake_celeba(tmp_path / "c", "official", 40)
    assert cli("data", "celeba", "--celeba", good, "--images", "6", "--size", "32", "--out", tmp_path / "d")[0] == 0
    code, _, err = cli("data", "gallery", tmp_path / "d", "--out", tmp_path / "g.png", "--n", "4")
    assert code == 0 and (tmp_path / "g.png").stat().st_size > 0, err


def test_the_affine_suite_runs_on_celeba_and_fills_table_1s_celeba_half(cli, tmp_path, encoders, monkeypatch):
    """`uvlm suite run affine --dataset celeba` on a fake copy: datasets built from it, every row
    trained and evaluated (VQA scored per attribute, generations judged by a judge trained on the
    run's faces), and the report's CelebA half of Table 1 beside the paper's, with its findings."""
    from dataclasses import asdict

    from uvlm.suites.spec import expand
    from uvlm.train.data import resolve_dataset
    from uvlm.vision.cache import cached_artifact, dataset_key
    from uvlm.vision.judge import FaceJudgeConfig, train_face_judge

    cache = tmp_path / "cache"
    monkeypatch.setenv("UVLM_CACHE", str(cache))
    source = write_fake_celeba(tmp_path / "celeba", "official", 400)
    overrides = [f"data.vq={encoders['vq']}", f"data.siglip={encoders['siglip']}", "data.train.n_vqa=48",
                 "data.train.n_caption=48", "data.train.n_generation=48", "data.test.n_vqa=21",
                 "data.test.n_generation=6", "data.train.sampling=data", "model.hidden_size=48", "model.layers=2",
                 "model.heads=2", "model.intermediate_size=96", "train.batch_size=16", "train.eval_points=2"]
    # the judge, trained briefly on the suite's own training faces, under the real judge's key
    data = expand("affine", "cpu", 1, tuple(overrides), celeba=str(source.resolve()))[0].config["data"]
    train, test = resolve_dataset(data["train"], "train"), resolve_dataset(data["test"], "test")
    key = {**asdict(FaceJudgeConfig()), "train": dataset_key(train), "test": dataset_key(test)}
    cached_artifact("face-judge", key, lambda d: train_face_judge(FaceJudgeConfig(steps=40, batch=16), train, test, d))

    results, report = tmp_path / "results", tmp_path / "report"
    sets = [arg for o in overrides for arg in ("--set", o)]
    code, _, err = cli("suite", "run", "affine", "--dataset", "celeba", "--celeba", source, "--seeds", "1",
                       "--workers", "2", "--out", results, *sets)
    assert code == 0, err
    metrics = [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/eval/metrics.json"))]
    assert len(metrics) == 9  # AFFINE_ROWS, one seed
    vqa = [m["vqa"] for m in metrics if m["vqa"]]
    assert len(vqa) == 8 and all(set(v["n"]) == {*ATTRIBUTES, "total"} and v["n"]["total"] == 21 for v in vqa)
    gen = [m["gen"] for m in metrics if m["gen"]]
    assert len(gen) == 5 and all(g["baselines"]["real"]["total_acc"] is not None for g in gen)
    assert all(set(g["baselines"]["real"]) >= {f"{a}_acc" for a in ATTRIBUTES} for g in gen)
    # the runs' tokenizer knows CelebA's words: answers come out as words, not as dropped <unk>s
    answers = [json.loads(x)["answer"] for p in results.glob("runs/*/eval/answers.jsonl")
               for x in p.read_text().splitlines()]
    said = [re.search(r"\b(yes|no)\b", a, re.IGNORECASE) for a in answers]  # what the scorer reads
    assert len(answers) == 8 * 21 and sum(m is not None for m in said) > len(answers) // 2

    # Fig 3 and Fig 4 on CelebA: mutual's SigLIP rows (SigLIP_u is affine's run), and the two points
    # of the paper's CelebA claim, which are mutual's runs again (nothing new to train)
    code, _, err = cli("suite", "run", "mutual", "--dataset", "celeba", "--celeba", source, "--seeds", "1",
                       "--workers", "2", "--rows", "SigLIP-VQ,SigLIP_u", "--out", results, *sets)
    assert code == 0, err
    assert len(list(results.glob("runs/*/eval/metrics.json"))) == 11  # SigLIP-VQ and SigLIP_u's control
    code, out, err = cli("suite", "run", "scaling", "--dataset", "celeba", "--celeba", source, "--seeds", "1",
                         "--rows", "SigLIP-VQ und 120K gen 60K,SigLIP_u und 120K gen 0K", "--out", results, *sets)
    assert code == 0 and "2 runs: 2 done, 0 to run" in out, err  # both are mutual's runs

    code, _, err = cli("report", results, "--out", report)
    assert code == 0, err
    text = (report / "README.md").read_text()
    a3 = text.split("## Table A3 on CelebA")[1].split("\n## ")[0]
    assert "| Black_Hair | Eyeglasses |" in a3 and "| SigLIP-VQ | 1 |" in a3 and "| SigLIP_u (step-matched) | 1 |" in a3
    assert "| 87.0 |" in a3  # the paper's CelebA SigLIP_u total (Table 1, without the affine map) beside ours
    a4 = text.split("## Table A4 on CelebA")[1].split("\n## ")[0]
    assert "| SigLIP-VQ und 120K gen 60K | 1 |" in a4 and "| SigLIP_u und 120K gen 0K | 1 |" in a4
    assert "CelebA: SigLIP-VQ's VQA total falls from 0K to 60K generation records" in text
    assert "CelebA: aligned beats misaligned" not in text  # its rows were not run
    for figure in ("fig-3-curves-celeba.png", "fig-4-scaling-celeba.png", "fig-A3-celeba.png"):
        assert (report / figure).exists() and f"]({figure})" in text
    assert "| mutual (CelebA) |" in text and "| scaling (CelebA) |" in text
    half = text.split("## Table 1 (CelebA half): affine map")[1].split("\n## ")[0]
    assert "| Black_Hair | Eyeglasses | No_Beard | Male |" in half
    assert "| VQ*-VQ | 1 |" in half and "| 64.5 |" in half  # the paper's CelebA VQ*-VQ total beside ours
    assert "CelebA: the affine map hurts unified more than _u" in text
    assert "**CelebA**" in text  # the CelebA judge's baselines
    assert "| affine (CelebA) | 9 |" in text  # the cost section prices the CelebA grid with its own runs' rate
    # the SmartWatch half is not run by the CelebA suite; its flags are checked
    code, _, err = cli("suite", "run", "transfer-weather", "--dataset", "celeba", "--celeba", source, "--out", results)
    assert code == 2 and "the transfer-weather suite has no CelebA half" in err
    code, _, err = cli("suite", "run", "affine", "--dataset", "celeba", "--out", results)
    assert code == 2 and "needs --celeba PATH" in err


def test_a_celeba_runs_tokenizer_knows_every_word_of_its_records(cli, tmp_path, monkeypatch):
    """The tiny LLM's word-level tokenizer is built from the run's dataset's phrases: CelebA's for a
    CelebA run. SmartWatch's tokenizer on CelebA records is refused in one line, not trained on <unk>s."""
    from uvlm.data.folder import read_records
    from uvlm.model.prompt import SPECIAL_TOKENS, PromptEncoder
    from uvlm.model.tokenizer import template_corpus, train_tokenizer
    from uvlm.train.build import build_tokenizer
    from uvlm.train.config import from_dict
    from uvlm.train.data import check_vocabulary

    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    source = write_fake_celeba(tmp_path / "celeba", "official", 300)
    assert cli("data", "celeba", "--celeba", source, "--images", "200", "--size", "32", "--out",
               tmp_path / "train")[0] == 0
    records = read_records(tmp_path / "train")
    folder = str(tmp_path / "train")
    cfg = from_dict({"model": {"name": "VQ-VQ"}, "data": {"train": folder, "test": folder}})
    ours = PromptEncoder(build_tokenizer(cfg), 16)
    check_vocabulary([ours.encode(r["conversations"]) for r in records], records, ours.tokenizer)
    smartwatch = PromptEncoder(train_tokenizer(template_corpus(), SPECIAL_TOKENS), 16)
    with pytest.raises(UvlmError, match="has no token for words of record"):
        check_vocabulary([smartwatch.encode(r["conversations"]) for r in records], records, smartwatch.tokenizer)


def test_mutual_and_scaling_have_celeba_halves_of_the_same_runs():
    """The CelebA halves are the SmartWatch suites' rows, sweep points, controls and seeds, on
    CelebA runs built as the affine half builds them."""
    from uvlm.suites.spec import expand

    for suite, table in (("mutual", "A3"), ("scaling", "A4")):
        smartwatch = expand(suite, "cpu", 3)
        faces = expand(suite, "cpu", 3, celeba="/copy")
        assert {(j.label, j.seed) for j in faces} == {(j.label, j.seed) for j in smartwatch}
        assert {j.table for j in faces} == {f"{table}-celeba"}
        assert len({j.identity for j in faces}) == len({j.identity for j in smartwatch})
        for j in faces:
            assert j.config["data"]["train"]["domain"] == "celeba" and j.config["data"]["test"]["celeba"] == "/copy"
    # a CelebA SigLIP_u is the affine half's run; the sweep's counts are the CelebA run's own
    a3 = {j.label: j for j in expand("mutual", "cpu", 1, celeba="/copy")}
    t1 = {j.label: j for j in expand("affine", "cpu", 1, celeba="/copy")}
    assert a3["SigLIP_u"].identity == t1["SigLIP_u"].identity
    a4 = {j.label: j for j in expand("scaling", "cpu", 1, celeba="/copy")}
    assert a4["SigLIP-VQ und 120K gen 60K"].identity == a3["SigLIP-VQ"].identity
    assert a4["SigLIP-VQ und 120K gen 180K"].config["data"]["train"]["n_generation"] == \
        3 * a3["SigLIP-VQ"].config["data"]["train"]["n_generation"]


def test_fig3_has_the_papers_panels_and_one_colour_per_row(tmp_path):
    """Fig 3: SigLIP-input and VQ-input understanding and VQ-output generation, a band per row,
    a control dashed in its row's colour, both chance lines inside the axis, no colour twice."""
    import matplotlib

    matplotlib.use("Agg")
    from uvlm.io import atomic_write_text
    from uvlm.suites.curves import draw_fig3
    from uvlm.suites.results import Results
    from uvlm.suites.runner import record_jobs
    from uvlm.suites.spec import expand

    from .test_report import fake_run

    results = tmp_path / "results"
    jobs = expand("mutual", "cpu", 2)
    for i, job in enumerate(jobs):
        fake_run(results, job, 0.6, i, gen=True)
        evals = [{"event": "eval", "step": s, "vqa_total_acc": 40 + s + i % 3, "gen_judge_total_acc": 30 + s}
                 for s in (10, 20, 30)]
        atomic_write_text(results / "runs" / job.key / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in evals))
    record_jobs(results, jobs)
    fig = draw_fig3(Results(results), "A3")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["(a) understanding, SigLIP input", "(b) understanding, VQ input",
                      "(c) generation (judge), VQ output"]
    for ax in fig.axes:
        rows = [line for line in ax.get_lines() if not line.get_label().startswith(("chance", "judge"))]
        solid = [line for line in rows if line.get_linestyle() == "-"]
        assert len({line.get_color() for line in solid}) == len(solid)  # one colour per row
        colour = {line.get_label(): line.get_color() for line in rows}
        for label, c in colour.items():
            if label.endswith(" (step-matched)"):
                assert c == colour[label.removesuffix(" (step-matched)")]
        assert ax.collections  # the seeds' bands
    chance = [line.get_ydata()[0] for line in fig.axes[0].get_lines() if line.get_label().startswith("chance")]
    low, high = fig.axes[0].get_ylim()
    assert len(chance) == 2 and all(low < c < high for c in chance)
    assert {line.get_label() for line in fig.axes[2].get_lines()} >= {"VQ-VQ", "VQ_g", "SigLIP-VQ"}
    # a row whose seeds logged different evaluation points is not drawn, and the figure says so
    odd = next(j for j in jobs if j.label == "VQ-SigLIP" and j.seed == 1)
    atomic_write_text(results / "runs" / odd.key / "metrics.jsonl",
                      json.dumps({"event": "eval", "step": 30, "vqa_total_acc": 50}) + "\n")
    fig = draw_fig3(Results(results), "A3")
    assert "VQ-SigLIP" not in {line.get_label() for line in fig.axes[1].get_lines()}
    assert any("VQ-SigLIP ((b)" in t.get_text() for t in fig.texts)
    assert not any(ax.texts for ax in fig.axes)  # every panel has rows
    # a folder without SigLIP-input runs (a pilot of VQ rows only) says so in the empty panel
    vq_input = [j for j in jobs if not j.label.startswith("SigLIP")]
    for key in {j.key for j in jobs} - {j.key for j in vq_input}:  # a run two tables share: once
        shutil.rmtree(results / "runs" / key)
    (results / "jobs.json").unlink()
    record_jobs(results, vq_input)
    fig = draw_fig3(Results(results), "A3")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no runs of these rows in this folder"]
    assert not fig.axes[1].texts


def test_fig3_bands_are_t_intervals_over_seeds_and_the_celeba_claim_points_down(tmp_path):
    """A row's band is the 95% t-interval of its seeds' mean at each point; the paper's CelebA
    claim (SigLIP-VQ degrades at 60K generation records) is a contrast that is positive when it does."""
    from scipy import stats

    from uvlm.io import atomic_write_text
    from uvlm.suites.curves import curve
    from uvlm.suites.findings import celeba_scaling_findings
    from uvlm.suites.results import Results
    from uvlm.suites.runner import record_jobs
    from uvlm.suites.spec import expand

    from .test_report import fake_run

    results = tmp_path / "results"
    jobs = [j for j in expand("mutual", "cpu", 3) if j.label == "VQ-VQ"]
    values = [[40, 60], [50, 62], [45, 70]]
    for job, seed_values in zip(jobs, values, strict=True):
        fake_run(results, job, 0.6, job.seed, gen=False)
        evals = [{"event": "eval", "step": 10 * (k + 1), "vqa_total_acc": v} for k, v in enumerate(seed_values)]
        atomic_write_text(results / "runs" / job.key / "metrics.jsonl", "".join(json.dumps(e) + "\n" for e in evals))
    record_jobs(results, jobs)
    x, mean, half = curve(Results(results), "A3", "VQ-VQ", "vqa_total_acc")
    assert list(x) == [0.5, 1.0] and list(mean) == pytest.approx([45, 64])
    for k in range(2):
        column = [v[k] for v in values]
        low, _ = stats.t.interval(0.95, 2, loc=np.mean(column), scale=stats.sem(column))
        assert mean[k] - half[k] == pytest.approx(low)
    claim = celeba_scaling_findings()[-1]
    assert claim.table == "A4-celeba" and "section 4.1" in claim.text
    assert dict((label, w) for w, label in claim.terms) == {"SigLIP_u und 120K gen 0K": 1,
                                                            "SigLIP-VQ und 120K gen 60K": -1}


def test_the_sweep_scales_each_count_of_the_default_mix():
    """Under --set counts the sweep scales each count by its own ratio (the default point stays the
    folder's A3 run even when VQA and captions differ); a zero count to scale is refused."""
    from uvlm.suites.spec import expand

    overrides = ("data.train.n_vqa=6000", "data.train.n_generation=7")
    a4 = {j.label: j for j in expand("scaling", "cpu", 1, overrides)}
    a3 = {j.label: j for j in expand("mutual", "cpu", 1, overrides)}
    assert a4["VQ-VQ und 120K gen 60K"].identity == a3["VQ-VQ"].identity
    assert a4["VQ_u und 120K gen 0K"].identity == a3["VQ_u"].identity
    train = a4["VQ-VQ und 240K gen 60K"].config["data"]["train"]
    assert (train["n_vqa"], train["n_caption"]) == (12000, 2 * a3["VQ-VQ"].config["data"]["train"]["n_caption"])
    assert a4["VQ-VQ und 120K gen 90K"].config["data"]["train"]["n_generation"] == 11  # 10.5, rounded half up
    with pytest.raises(UvlmError, match=r"scales data\.train\.n_generation, which is 0"):
        expand("scaling", "cpu", 1, ("data.train.n_generation=0",))
