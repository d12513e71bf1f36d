"""Bad input to every command: one line on stderr, exit code 2, no traceback, nothing changed.

Table-driven cases cover each command's arguments and the files it reads (missing, a folder,
truncated, bit-flipped, not text); property-based cases (hypothesis) throw random values at the
config loader, the dataset mixture and the scorer, which must accept them or refuse them with a
user error, never fail any other way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uvlm.data.mixture import MixtureConfig
from uvlm.errors import UvlmError
from uvlm.train.config import TrainConfig, from_dict

from .helpers import toy_judge


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its bytes' hash: what "nothing changed" compares."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(cli, args: list, watched: Path, message: str) -> None:
    before = snapshot(watched)
    code, out, err = cli(*args)
    assert code == 2, (args, code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uvlm: error: "), (args, err)
    assert "Traceback" not in err and message in err, (args, err)
    assert snapshot(watched) == before, f"{args} changed {watched}"


def corrupt(path: Path, how: str) -> None:
    """Damage a file the way disks and killed writers do."""
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "binary":
        path.write_bytes(os.urandom(64))


@pytest.fixture(scope="module")
def world(tmp_path_factory, encoders):
    """A dataset folder, a trained run, a results folder with one evaluated run, in one cache."""
    from uvlm.cli import main

    root = tmp_path_factory.mktemp("bad-input")
    cache = root / "cache"
    old = os.environ.get("UVLM_CACHE")
    os.environ["UVLM_CACHE"] = str(cache)
    toy_judge(cache)
    try:
        with pytest.raises(SystemExit):
            main(["data", "smartwatch", "--out", str(root / "data"), "--images", "6", "--size", "64"])
        cfg = {"model": {"name": "VQ-VQ", "hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64},
               "data": {"train": {"n_vqa": 8, "n_caption": 8, "n_generation": 8},
                        "test": {"split": "test", "seed": 1, "n_vqa": 6, "n_caption": 0, "n_generation": 3,
                                 "share_images": False}, **encoders},
               "train": {"batch_size": 8, "eval_points": 0, "checkpoint_every": 1}}
        (root / "run.yaml").write_text(yaml.safe_dump(cfg))
        from uvlm.suites.runner import run_suite
        from uvlm.suites.spec import Job

        run_suite([Job("A3", "VQ-VQ", 0, cfg)], root / "results", workers=1, echo=lambda s: None)
        yield root
    finally:
        if old is None:
            os.environ.pop("UVLM_CACHE", None)
        else:
            os.environ["UVLM_CACHE"] = old


@pytest.fixture
def env(world, monkeypatch):
    monkeypatch.setenv("UVLM_CACHE", str(world / "cache"))
    torch.set_num_threads(1)
    return world


def run_folder(world: Path) -> Path:
    return next((world / "results" / "runs").iterdir())


@pytest.mark.parametrize("args, message", [
    (["data", "smartwatch", "--images", "-3"], "must be positive"),
    (["data", "smartwatch", "--images", "4", "--size", "32"], "64"),
    (["data", "smartwatch", "--images", "4", "--size", "100000"], "of memory"),
    (["data", "smartwatch", "--images", "1000000000000"], "of disk"),
    (["data", "smartwatch", "--images", "4", "--bias", "time"], "bias"),
    (["data", "smartwatch", "--images", "4", "--split", "dev"], "split"),
    (["data", "smartwatch", "--images", "4", "--workers", "0"], "--workers"),
    (["data", "smartwatch", "--images", "4", "--hours", "0-24"], "hour range"),
    (["data", "smartwatch", "--images", "4", "--bias", "weather", "--bias-vqa-prob", "1.5"], "--bias-vqa-prob"),
    (["score", "missing.jsonl"], "does not exist"),
    (["suite", "run", "mutual", "--rows", ""], "--rows is empty"),
    (["suite", "run", "mutual", "--rows", ","], "names no row"),
    (["suite", "run", "mutual", "--rows", "CLIP-VQ"], "not a row of mutual"),
    (["suite", "run", "moral"], "unknown suite"),
    (["suite", "run", "mutual", "--seeds", "0"], "--seeds"),
    (["suite", "run", "mutual", "--seeds", "100000000"], "of memory"),
    (["suite", "run", "mutual", "--workers", "0"], "--workers"),
    (["suite", "run", "mutual", "--gpus-per-run", "0"], "--gpus-per-run"),
    (["suite", "run", "mutual", "--executor", "kubernetes"], "--executor"),
    (["suite", "run", "mutual", "--set", "train.lr=[1"], "not valid YAML"),
    (["suite", "status", "mutual", "--set", "train.lr=abc"], "train.lr must be a number"),
    (["plan", "configs/cpu/VQ-VQ.yaml", "--gpu-mem", "-2"], "--gpu-mem"),
    (["plan", "configs/cpu/VQ-VQ.yaml", "--gpu-mem", "nan"], "--gpu-mem"),
    (["plan", "configs/cpu/VQ-VQ.yaml", "--gpus", "1000000"], "at least one"),
    (["data", "smartwatch", "--images", "4", "--seed", "-1"], "--seed -1"),
    (["suite", "run", "mutual", "--executor", "slurm"], "sbatch"),
    (["suite", "run", "mutual", "--workers", "100000"], "runs per core"),
    (["suite", "run", "mutual", "--preset", "paper", "--rows", "VQ-VQ", "--seeds", "1", "--set", "train.device=auto"],
     "of memory"),
    (["train", "--config", "configs/cpu/VQ-VQ.yaml", "--set", "train.batch_size=100000", "--out", "OUT"], "of memory"),
    (["train", "--config", "configs/cpu/VQ-VQ.yaml", "--set", "model.hidden_size=8192", "--set", "model.layers=24",
      "--set", "model.heads=64", "--set", "model.intermediate_size=20000", "--out", "OUT"], "of memory"),
    (["pretrain", "vq", "--steps", "0"], "--steps"),
    (["data", "smartwatch", "--images", "4", "--size", "64", "--hand-scale", "9"], "hand scale 9.0"),
    (["train", "--config", "configs/cpu2/VQ-VQ.yaml", "--set", "data.vq=cpu-vq:{steps: 1}", "--out", "OUT"],
     "quote an encoder spec whole"),
    (["train", "--config", "configs/cpu2/VQ-VQ.yaml", "--set", "data.vq='cpu-vq:{stepz: 1}'", "--out", "OUT"],
     "no field 'stepz'"),
    (["suite", "run", "mutual", "--set", "data.siglip='cpu-siglip:{patch_size: 7}'"], "must divide the image size"),
])
def test_bad_arguments(cli, env, tmp_path, args, message):
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    args = [str(root / a) if a.startswith("configs/") else str(out) if a == "OUT" else a for a in args]
    extra = ["--out", out] if args[0] in ("data", "suite") and args[1] in ("smartwatch", "run", "status") else []
    refused(cli, [*args, *extra], tmp_path, message)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("content, message", [
    ('{"attribute":"weather","ground_truth":"","answer":"sunny"}', "is empty"),
    ('{"attribute":"weather","ground_truth":"snowy","answer":"sunny"}', "not one of"),
    ('{"attribute":"time","ground_truth":"25:00:00","answer":"01:00:00"}', "not HH:MM:SS"),
    ('{"attribute":"battery","ground_truth":"150%","answer":"10%"}', "NN%"),
    ('{"attribute":"color","ground_truth":"red","answer":"red"}', "not one of"),
    ('{"attribute":"weather"', "line 1"),
    ("", "holds no answers"),
])
def test_bad_answers_files(cli, tmp_path, content, message):
    path = tmp_path / "answers.jsonl"
    path.write_text(content + "\n")
    refused(cli, ["score", path], tmp_path, message)


def test_answers_files_that_are_not_text_or_are_folders(cli, tmp_path):
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    refused(cli, ["score", tmp_path / "binary.jsonl"], tmp_path, "not UTF-8")
    refused(cli, ["score", tmp_path], tmp_path, "is a folder")


@pytest.mark.parametrize("config, message", [
    ("model: VQ-VQ", "model must be a mapping"),
    ("model: 5", "model must be a mapping"),
    ("[]", "must be a mapping of sections"),
    ("", "is empty"),
    ("model: {name: 5}", "model.name must be text"),
    ("model: {standardize: 'no'}", "true or false"),
    ("train: {keep_checkpoints: 0}", "keep_checkpoints"),
    ("model: {heads: 0}", "must be >= 1"),
    ("model: {hidden_size: 0}", "must be >= 1"),
    ("model: {layers: -1}", "must be >= 1"),
    ("train: {epochs: .inf}", "must be finite"),
    ("train: {lr: .nan}", "must be finite"),
    ("model: [unclosed", "not valid YAML"),
])
def test_bad_config_files(cli, tmp_path, config, message):
    (tmp_path / "c.yaml").write_text(config + "\n")
    refused(cli, ["train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "run"], tmp_path, message)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_config_files_that_are_not_text_folders_or_values(cli, tmp_path):
    (tmp_path / "c.yaml").write_bytes(os.urandom(200) + b"\xff")
    refused(cli, ["train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "run"], tmp_path, "not UTF-8 text")
    refused(cli, ["train", "--config", tmp_path, "--out", tmp_path / "run"], tmp_path, "is a folder")
    refused(cli, ["train", "--set", "train.lr=", "--out", tmp_path / "run"], tmp_path, "needs a value")


def test_out_under_a_file_or_unwritable(cli, tmp_path):
    (tmp_path / "file").write_text("")
    refused(cli, ["data", "smartwatch", "--images", "4", "--out", tmp_path / "file" / "sub"], tmp_path, "cannot use")
    refused(cli, ["data", "smartwatch", "--images", "4", "--out", tmp_path / "file"], tmp_path, "is a file")
    for command in ("status", "run"):  # a suite's results folder too, before anything is read or written
        refused(cli, ["suite", command, "probe", "--out", tmp_path / "file"], tmp_path, "is a file, not a results")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        refused(cli, ["data", "smartwatch", "--images", "4", "--out", ro / "d"], tmp_path, "cannot use")


def test_training_input_found_bad_leaves_the_folder_as_it_was(cli, env, tmp_path):
    """A corrupt image found while the run prepares its inputs: one line, and the corrected command
    (here the same, after the repair) then starts instead of being told to --resume."""

    data = tmp_path / "data"
    shutil.copytree(env / "data", data)
    corrupt(data / "images" / "000002.png", "truncate")
    cfg = yaml.safe_load((env / "run.yaml").read_text())
    cfg["data"]["train"] = str(data)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    refused(cli, ["train", "--config", tmp_path / "c.yaml", "--out", out], env / "data", "is missing or corrupt")
    assert list(out.iterdir()) == []
    code, _, err = cli("data", "smartwatch", "--out", data, "--images", "6", "--size", "64")  # repairs it
    assert code == 0, err
    assert (data / "images" / "000002.png").read_bytes() == (env / "data" / "images" / "000002.png").read_bytes()


def unevaluated_copy(world: Path, tmp_path: Path) -> Path:
    """A copy of the world's trained run, without its evaluation."""

    run = tmp_path / "run"
    shutil.copytree(run_folder(world), run, ignore=shutil.ignore_patterns("eval"))
    return run


@pytest.mark.parametrize("part, how, message", [
    ("weights/adapters.safetensors", "truncate", "adapters.safetensors is missing or corrupt"),
    ("weights/adapters.safetensors", "flip", "adapters.safetensors is missing or corrupt"),
    ("weights/llm/model.safetensors", "truncate", "is missing or corrupt"),
    ("weights/tokenizer/tokenizer.json", "binary", "tokenizer"),
])
def test_eval_of_damaged_weights(cli, env, tmp_path, part, how, message):
    run = unevaluated_copy(env, tmp_path)
    corrupt(run / part, how)
    refused(cli, ["eval", run], run, message)


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_eval_of_a_damaged_checkpoint(cli, env, tmp_path, how):
    run = unevaluated_copy(env, tmp_path)
    step = sorted(run.glob("checkpoints/step-*"))[-1]
    corrupt(step / "trainable.safetensors", how)
    refused(cli, ["eval", run, "--checkpoint", int(step.name.split("-")[1])], run, "is missing or corrupt")


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EROFS"])
def test_a_full_or_read_only_disk_is_one_line(cli, env, tmp_path, monkeypatch, errno_name):
    """The machine refusing a write (simulated: a test cannot fill the disk or, as root, be
    refused) is one line naming the path, for a dataset build and a training run alike."""
    import errno
    import tempfile

    def refuse(*args, dir=None, **kw):
        code = getattr(errno, errno_name)
        raise OSError(code, os.strerror(code), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    refused(cli, ["data", "smartwatch", "--images", "4", "--size", "64", "--out", tmp_path / "d"], env / "data",
            os.strerror(getattr(errno, errno_name)))
    refused(cli, ["train", "--config", env / "run.yaml", "--out", tmp_path / "run"], env / "data",
            os.strerror(getattr(errno, errno_name)))
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file()], "nothing half-written"


def test_eval_without_a_tokenizer_and_with_bad_sampling(cli, env, tmp_path):
    run = unevaluated_copy(env, tmp_path)
    for value in ("nan", "inf"):
        refused(cli, ["eval", run, "--temperature", value], run, "finite")
    refused(cli, ["eval", run, "--show", "-1"], run, "--show -1")
    shutil.rmtree(run / "weights" / "tokenizer")
    refused(cli, ["eval", run], run, "tokenizer")


@pytest.mark.parametrize("part, how, message", [
    ("jobs.json", "truncate", "suite index"),
    ("jobs.json", "binary", "suite index"),
    ("runs/*/eval/metrics.json", "truncate", "metrics"),
    ("runs/*/eval/answers.jsonl", "truncate", "answers"),
    ("runs/*/eval/answers.jsonl", "flip", "answers"),
])
def test_report_on_damaged_results(cli, env, tmp_path, part, how, message):

    results = tmp_path / "results"
    shutil.copytree(env / "results", results)
    corrupt(next(results.glob(part)), how)
    refused(cli, ["report", results, "--out", tmp_path / "report"], results, message)


def test_resume_after_a_half_written_log_line(cli, env, tmp_path):
    """A run killed while writing a line of metrics.jsonl resumes: the half line is dropped."""

    run = tmp_path / "run"
    shutil.copytree(run_folder(env), run)
    (run / "final.json").unlink()
    log = run / "metrics.jsonl"
    log.write_text(log.read_text() + '{"event": "train", "st')
    code, _, err = cli("train", "--config", env / "run.yaml", "--out", run, "--resume")
    assert code == 0, err
    assert all(json.loads(line) for line in log.read_text().splitlines())


# ---- property-based: random values never fail in any other way than a user error ----

_values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=8), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=5), st.integers(),
                                    max_size=2))
_train_keys = st.sampled_from([f.name for f in TrainConfig.__dataclass_fields__.values()])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["model", "data", "train", "extra"]),
                       st.one_of(_values, st.dictionaries(st.one_of(_train_keys, st.sampled_from(
                           ["name", "llm", "heads", "layers", "siglip", "train", "hidden_size"])), _values,
                           max_size=4)), max_size=3))
def test_any_config_is_accepted_or_refused_with_one_line(d):
    try:
        from_dict(d)
    except UvlmError as e:
        assert "\n" not in str(e)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["seed", "split", "n_vqa", "n_caption", "n_generation", "size", "bias",
                                        "bias_vqa_prob", "hours", "extra_turn_prob", "detail_scale",
                                        "face_radius"]), _values, max_size=5))
def test_any_mixture_is_accepted_or_refused_with_one_line(d):
    try:
        MixtureConfig.from_dict(d)
    except UvlmError as e:
        assert "\n" not in str(e)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=30), st.builds(json.dumps, st.dictionaries(
    st.sampled_from(["attribute", "ground_truth", "answer"]), st.one_of(st.text(max_size=10), _values)))),
    max_size=4))
def test_any_answers_file_is_scored_or_refused_with_one_line(tmp_path_factory, lines):
    from uvlm.cli import main

    path = tmp_path_factory.mktemp("score") / "answers.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(path)])
    assert exit_info.value.code in (0, 2)


def test_an_empty_argument_is_refused_not_read_as_the_current_folder(cli, tmp_path, monkeypatch):
    """`--celeba ""` once searched the whole current folder for a CelebA copy; `--out=` would
    write into it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("keep")
    for args, message in ((["suite", "status", "affine", "--dataset", "celeba", "--celeba", ""], "--celeba is empty"),
                          (["data", "smartwatch", "--images", "10", "--out="], "--out is empty"),
                          (["report", ""], "an argument after `report` is empty")):
        refused(cli, args, tmp_path, message)


def test_folders_that_are_not_ours_are_not_written(cli, env, tmp_path):
    """A report never replaces a project's README; an export never lands inside its dataset."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# my project\n")
    refused(cli, ["report", env / "results", "--out", project], project, "not a uvlm report")
    data = tmp_path / "data"
    shutil.copytree(env / "data", data)
    refused(cli, ["data", "export-llava", data, data / "records.jsonl"], data, "inside the dataset folder")


def test_a_verifying_rerun_repairs_records_and_swapped_images(cli, env, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(env / "data", data)
    before = snapshot(data)
    (data / "records.jsonl").write_text("[]\n")
    shutil.copy(data / "images" / "000001.png", data / "images" / "000003.png")  # a whole PNG, the wrong one
    code, _, err = cli("data", "smartwatch", "--out", data, "--images", "6", "--size", "64")
    assert code == 0, err
    assert snapshot(data) == before


def test_deeply_nested_and_odd_answer_files(cli, tmp_path):
    (tmp_path / "deep.jsonl").write_text("[" * 100_000)
    refused(cli, ["score", tmp_path / "deep.jsonl"], tmp_path, "nested too deeply")
    for truth in ("1000%", "-50%"):
        (tmp_path / "b.jsonl").write_text(json.dumps({"attribute": "battery", "ground_truth": truth, "answer": "5%"}))
        refused(cli, ["score", tmp_path / "b.jsonl"], tmp_path, "NN%")
    (tmp_path / "t.jsonl").write_text(json.dumps({"attribute": "time", "ground_truth": "at 1:2:3 or so", "answer": ""}))
    refused(cli, ["score", tmp_path / "t.jsonl"], tmp_path, "HH:MM:SS")
    line = json.dumps({"attribute": "weather", "ground_truth": "sunny", "answer": "sunny\u2028ok"}, ensure_ascii=False)
    (tmp_path / "u.jsonl").write_text(line + "\n", encoding="utf-8")
    code, out, err = cli("score", tmp_path / "u.jsonl")
    assert code == 0 and json.loads(out)["weather_acc"] == 100.0, err
