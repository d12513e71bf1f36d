"""The training loop: data stream, run folders, bad configs, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from uvlm.io import exclusive
from uvlm.suites.spec import planned_records
from uvlm.train.config import from_dict
from uvlm.train.loop import stream_indices
from uvlm.vision.load import load_space

from .helpers import kill_when, uvlm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path_factory):
    return {**os.environ, "UVLM_CACHE": str(tmp_path_factory.getbasetemp() / "cache"),
            "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def run_config(encoders: dict, **train) -> dict:
    return {"model": {"name": "VQ-VQ", "hidden_size": 48, "layers": 2, "heads": 2, "intermediate_size": 96},
            "data": {"train": {"n_vqa": 40, "n_caption": 40, "n_generation": 40},
                     "test": {"split": "test", "seed": 1, "n_vqa": 8, "n_caption": 0, "n_generation": 4,
                              "share_images": False}, **encoders},
            "train": {"batch_size": 4, "epochs": 3, "checkpoint_every": 10, "eval_points": 3, "eval_metrics": False,
                      "eval_samples": 8, **train}}


def test_stream_is_a_seeded_permutation_per_epoch():
    a = stream_indices(10, 0, 0, 30)
    assert sorted(a[:10]) == sorted(a[10:20]) == list(range(10))
    assert a[:10] != a[10:20]
    assert stream_indices(10, 0, 7, 23) == a[7:23]
    assert stream_indices(10, 1, 0, 10) != a[:10]


def losses(run: Path) -> list[tuple]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(x["event"], x["step"], x.get("loss"), x.get("val_loss")) for x in lines]


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, encoders, env):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(run_config(encoders)))
    whole = tmp_path / "whole"
    done = uvlm(["train", "--config", cfg, "--out", whole], env)
    assert done.returncode == 0, done.stderr
    summary = json.loads((whole / "final.json").read_text())
    assert summary["steps"] == 90
    assert summary["records"] == planned_records(from_dict(run_config(encoders))) == 360, "cost estimates hold"
    vq = load_space(encoders["vq"]).fingerprint  # VQ-VQ: the VQ is both input and output
    assert summary["encoders"] == {"input": vq, "output": vq}, "the run names the encoder bytes it saw"

    killed = tmp_path / "killed"
    kill_when(["train", "--config", cfg, "--out", killed], env, killed / "checkpoints" / "step-0000020" / "state.json")
    assert not (killed / "final.json").exists(), "the run ended before it could be killed"
    unfinished = uvlm(["train", "--config", cfg, "--out", killed], env)
    assert unfinished.returncode == 2 and "--resume" in unfinished.stderr
    resumed = uvlm(["train", "--config", cfg, "--out", killed, "--resume"], env)
    assert resumed.returncode == 0, resumed.stderr

    assert losses(killed) == losses(whole)
    for name in ("adapters.safetensors", "llm/model.safetensors"):
        a, b = load_file(str(whole / "weights" / name)), load_file(str(killed / "weights" / name))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    # A resume keeps the cost of the steps before it: train_seconds covers every step.
    def step_seconds(run: Path, upto: int) -> float:
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return sum(x["seconds"] for x in lines if x["event"] == "train" and x["step"] <= upto)

    resumed_summary = json.loads((killed / "final.json").read_text())
    assert summary["resumed_from_step"] == 0 and resumed_summary["resumed_from_step"] >= 20
    assert resumed_summary["encoders"] == summary["encoders"]
    assert summary["train_seconds"] >= step_seconds(whole, 90)
    assert resumed_summary["train_seconds"] >= step_seconds(killed, 90)
    assert step_seconds(killed, resumed_summary["resumed_from_step"]) > 0

    # Resumed from its last checkpoint (killed between it and final.json): nothing is retrained,
    # and the summary still has the last step's losses and the whole run's time.
    (whole / "final.json").unlink()
    assert uvlm(["train", "--config", cfg, "--out", whole, "--resume"], env).returncode == 0
    again = json.loads((whole / "final.json").read_text())
    assert again["resumed_from_step"] == 90 and again["final"] == summary["final"]
    assert again["train_seconds"] >= step_seconds(whole, 90)


def test_run_folder_and_loss_falls(tmp_path, encoders, env):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(run_config(encoders, epochs=4, lr=3e-3, adapter_lr=3e-3)))
    out = tmp_path / "run"
    assert uvlm(["train", "--config", cfg, "--out", out], env).returncode == 0
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.jsonl", "tb", "checkpoints", "weights",
                                               "final.json"}
    train = [x for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if x["event"] == "train"]
    evals = [x for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if x["event"] == "eval"]
    assert len(train) == 120 and len(evals) == 3
    first, last = sum(x["loss"] for x in train[:10]), sum(x["loss"] for x in train[-10:])
    assert last < 0.8 * first
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000110", "step-0000120"]
    again = uvlm(["train", "--config", cfg, "--out", out], env)  # a finished run is not retrained
    assert again.returncode == 0 and "120 steps" in again.stdout


@pytest.mark.parametrize("change, message", [
    ({"model": {"name": "CLIP-DINO"}}, "unknown model name"),
    ({"train": {"lr": -1e-3}}, "learning rates must be positive"),
    ({"data": {"train": "/nonexistent/dataset"}}, "no dataset at /nonexistent/dataset"),
    ({"train": {"bach_size": 4}}, "unknown key train.bach_size"),
    ({"model": {"affine_place": "middle"}}, "affine_place"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number"),
    ({"data": {"vq": "vq:/nonexistent/vq_ds16_c2i.pt"}}, "VQ checkpoint /nonexistent/vq_ds16_c2i.pt does not exist"),
    ({"data": {"vq": "clip"}}, "unknown encoder 'clip'"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size must be a whole number"),
    ({"train": {"sharding": "zero3"}}, "sharding 'zero3': use none, fsdp"),
    ({"train": {"sharding": "fsdp", "precision": "fp16"}}, "not fp16"),
    ({"train": {"device": "tpu"}}, "train.device 'tpu': use auto, cuda"),
    ({"model": {"name": "VQ-VQ"}, "train": {"train_encoder": True}}, "VQ ids are not differentiable"),
    ({"train": {"record_order": "sorted"}}, "record_order 'sorted': use random, modality"),
    ({"model": {"template": "alpaca"}}, "model.template 'alpaca': use chat, plain"),
    ({"model": {"name": "SigLIP-SigLIP"}, "train": {"train_encoder": True}}, "set model.standardize=false"),
    ({"model": {"name": "SigLIP_u", "standardize": False}, "data": {"siglip": "synthetic:siglip-tiny"},
      "train": {"train_encoder": True}}, "train.train_encoder needs an encoder with weights"),
    pytest.param({"train": {"device": "cuda"}}, "sees no GPU",  # no silent fall back to the CPU
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
])
def test_bad_configs(tmp_path, encoders, env, change, message):
    cfg = run_config(encoders)
    for section, values in change.items():
        cfg[section].update(values)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = uvlm(["train", "--config", path, "--out", tmp_path / "run"], env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_evaluation_points_of_a_run_training_its_encoder_read_the_tower_as_trained(tmp_path, encoders, monkeypatch):
    """SigLIP_u training its SigLIP (train.train_encoder): its weights move, an evaluation point
    encodes test images with the tower of that moment (under its own cache key), and final.json
    names the encoder the run started from."""
    from uvlm.train.config import from_dict
    from uvlm.train.loop import train
    from uvlm.vision.load import load_space

    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    cfg = run_config(encoders, epochs=1, eval_points=2, eval_metrics=True, train_encoder=True)
    cfg["model"].update({"name": "SigLIP_u", "standardize": False})
    seen = []
    summary = train(from_dict(cfg), tmp_path / "run",
                    eval_point=lambda model, parts, n: (seen.append(parts.in_space.fingerprint), {})[1])
    started = load_space(encoders["siglip"]).fingerprint
    assert len(seen) == 2 and len(set(seen)) == 2 and started not in seen
    assert summary["encoders"]["input"] == started and summary["encoder_trained"]
    assert (tmp_path / "run" / "weights" / "encoder" / "config.json").exists()


def test_bad_config_files(tmp_path, env):
    (tmp_path / "broken.yaml").write_text("model: [unclosed")
    for args, message in ([["--config", tmp_path / "none.yaml"], "does not exist"],
                          [["--config", tmp_path / "broken.yaml"], "not valid YAML"],
                          [["--set", "lr=1"], "use section.key=value"]):
        result = uvlm(["train", *args, "--out", tmp_path / "run"], env)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_one_trainer_per_run_folder(tmp_path, encoders, env):
    """A second trainer into a folder that one is training fails at once and writes nothing."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(run_config(encoders)))
    out = tmp_path / "run"
    out.mkdir()
    with exclusive(out, "`uvlm train`"):  # this process stands in for the first trainer
        second = uvlm(["train", "--config", cfg, "--out", out, "--resume"], env)
    assert second.returncode == 2 and "in use by another `uvlm train`" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and list(out.iterdir()) == []
    (tmp_path / "file").write_text("")
    to_file = uvlm(["train", "--config", cfg, "--out", tmp_path / "file"], env)
    assert to_file.returncode == 2 and "is a file" in to_file.stderr, to_file.stderr


def test_numbers_written_the_yaml_1_1_way_are_numbers():
    from uvlm.train.config import load_config

    cfg = load_config(None, ["train.lr=3e-3", "train.batch_size=8", "model.name=VQ_u"])
    assert cfg.train.lr == 0.003 and isinstance(cfg.train.lr, float) and cfg.train.batch_size == 8


@pytest.mark.parametrize("name, judge, expected", [
    ("VQ-VQ", True, ["vq"]),  # the pixel judge of the test renders
    ("SigLIP-SigLIP", True, ["siglip"]),  # probes on the output SigLIP space
    ("VQ-VQ", False, []),  # no evaluation points that judge: nothing to build
    ("VQ_u", True, []),  # no output space: nothing is generated
])
def test_the_judge_is_built_before_training_not_in_its_first_step(tmp_path, encoders, monkeypatch, name, judge,
                                                                   expected):
    """A cold judge is built with the run's inputs, so no evaluation point (and no train_seconds)
    carries its minutes; it is the judge of the run's output space and test render style."""
    import uvlm.vision.judge as judges
    from uvlm.train.build import manifest_style
    from uvlm.train.data import resolve_dataset
    from uvlm.train.loop import prepare_inputs

    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    built = []
    monkeypatch.setattr(judges, "output_judge", lambda space, style, faces: built.append((space, style, faces)))
    config = run_config(encoders)
    config["model"]["name"] = name
    cfg = from_dict(config)
    prepare_inputs(cfg, judge=judge)
    assert [space.name for space, _, _ in built] == expected
    style = manifest_style(resolve_dataset(cfg.data.test, "test"))
    assert all(s == style and faces is None for _, s, faces in built)


def test_micro_batches_are_grouped_by_length_only_when_a_step_has_several():
    import numpy as np

    from uvlm.model.prompt import SPECIAL_TOKENS, PromptEncoder
    from uvlm.model.tokenizer import template_corpus, train_tokenizer
    from uvlm.train.data import RecordSet, micro_batches, padding_share

    prompts = PromptEncoder(train_tokenizer(template_corpus(), SPECIAL_TOKENS), 4)
    words = ["sunny", "sunny and a little cloudy today", "rain"]
    encoded = [prompts.encode([{"from": "human", "value": "<image>\nWhat is the weather?"},
                               {"from": "gpt", "value": words[i % 3]}]) for i in range(12)]
    data = RecordSet(encoded, np.zeros(12, dtype=int), [], None, None)
    step = [5, 0, 7, 2, 9, 4, 1, 11, 3, 6, 10, 8]
    assert micro_batches(data, step, 12, 1) == [step]  # one micro-batch: the stream's order, bit for bit
    grouped = micro_batches(data, step, 4, 3)
    assert sorted(i for b in grouped for i in b) == sorted(step) and all(len(b) == 4 for b in grouped)
    lengths = [[len(encoded[i]) for i in b] for b in grouped]
    assert lengths[0][0] == max(map(len, encoded))  # the longest first: an out-of-memory shows at once
    assert padding_share(data, grouped) < padding_share(data, [step[i:i + 4] for i in range(0, 12, 4)])
    assert micro_batches(data, step[:5], 4, 3)[-1] == []  # a short step: an empty one for the weight-0 filler


def test_a_compiled_llm_trains_to_the_same_losses(tmp_path, encoders, monkeypatch):
    """train.compile: the LLM's forward goes through torch.compile (dynamo captures graphs), and
    the losses are the eager run's within float rounding."""
    import torch._dynamo

    from uvlm.train.loop import train

    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    cfg = run_config(encoders, epochs=1, eval_points=0)
    cfg["data"]["train"].update({"n_vqa": 8, "n_caption": 4, "n_generation": 4})
    eager = train(from_dict(cfg), tmp_path / "eager")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(from_dict({**cfg, "train": {**cfg["train"], "compile": True}}), tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
    assert eager["steps"] == compiled["steps"] == 4
    for key in ("loss", "text_loss", "image_loss"):
        assert abs(eager["final"][key] - compiled["final"][key]) <= 1e-4 * max(1.0, abs(eager["final"][key]))


def test_the_schedule_is_transformers_cosine_to_the_bit_without_importing_peft():
    """`cosine_with_warmup` gives get_cosine_schedule_with_warmup's learning rates exactly (runs made
    with it keep their results; its checkpoints load), and the training loop no longer imports
    transformers' trainer utilities, which import peft (seconds in every train and eval process)."""

    from transformers import get_cosine_schedule_with_warmup

    from uvlm.train.loop import cosine_with_warmup

    def optimizer():
        return torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-3},
                                  {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 3e-4}])

    for warmup, total in ((0, 10), (3, 100), (78, 2625), (1, 1)):
        theirs, ours = get_cosine_schedule_with_warmup(optimizer(), warmup, total), cosine_with_warmup(optimizer(),
                                                                                                     warmup, total)
        for _ in range(total + 2):
            assert ours.get_last_lr() == theirs.get_last_lr()
            for s in (theirs, ours):
                s.optimizer.step()
                s.step()
        resumed = cosine_with_warmup(optimizer(), warmup, total)
        resumed.load_state_dict(theirs.state_dict())  # a checkpoint written with transformers' schedule
        assert resumed.get_last_lr() == theirs.get_last_lr()
    code = "import sys, uvlm.train.loop; print('peft' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_attention_is_sdpa_by_default_and_flash_attention_only_on_a_gpu_in_16_bits(monkeypatch):
    """`model.attention: auto` (every preset) builds the LLM with fused SDPA attention; flash-attention
    2 where it can run (a GPU, 16 bits, the package installed); a choice given is kept."""
    import importlib.util

    from uvlm.device import Placement
    from uvlm.suites.presets import row_config
    from uvlm.train.build import attention_implementation, build_llm, build_tokenizer

    cfg = from_dict(row_config("cpu", "VQ-VQ"))
    assert cfg.model.attention == "auto"
    gpu16, gpu32 = Placement(torch.device("cuda"), "bf16"), Placement(torch.device("cuda"), "fp32")
    cpu16 = Placement(torch.device("cpu"), "bf16")
    llm = build_llm(cfg, build_tokenizer(cfg), Placement(torch.device("cpu"), "fp32"))
    assert llm.config._attn_implementation == "sdpa"
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "flash_attn" else find_spec(name, *a))
    assert attention_implementation("auto", gpu16) == "sdpa"  # not installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else None)
    assert attention_implementation("auto", gpu16) == "flash_attention_2"
    assert attention_implementation("auto", gpu32) == attention_implementation("auto", cpu16) == "sdpa"
    assert attention_implementation("eager", gpu16) == "eager"
