"""Evaluation plumbing on a tiny trained model: metrics.json schema, answers, images, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from uvlm.eval.evaluate import METRICS_SCHEMA, eval_point
from uvlm.train.config import from_dict
from uvlm.train.loop import train
from uvlm.vision import judge as judge_mod


@pytest.fixture(autouse=True)
def toy_judges(tmp_path_factory, monkeypatch):
    """Untrained judges: the plumbing is under test here, not the judges (test_pretrain)."""
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.manual_seed(0)
    pixel = judge_mod.PixelJudge(judge_mod.JudgeCNN(64))
    monkeypatch.setattr(judge_mod, "pretrained_judge", lambda cfg=None, **kw: (pixel, {}))

    class Constant:
        def answers(self, embeddings):
            return [{"time": "01:00:00", "weather": "sunny", "weather_pos": "top-left", "battery": "50%",
                     "battery_pos": "top-right"}] * len(embeddings)

    monkeypatch.setattr(judge_mod, "embedding_judge", lambda space, style=None, **kw: (Constant(), {}))


def trained(tmp_path, encoders, name: str):
    cfg = from_dict({"model": {"name": name, "hidden_size": 48, "layers": 2, "heads": 2, "intermediate_size": 96},
                     "data": {"train": {"n_vqa": 24, "n_caption": 24, "n_generation": 24},
                              "test": {"split": "test", "seed": 1, "n_vqa": 12, "n_caption": 0, "n_generation": 6,
                                       "share_images": False}, **encoders},
                     "train": {"batch_size": 8, "eval_points": 0, "checkpoint_every": 3, "threads": 1}})
    out = tmp_path / name
    train(cfg, out)
    return out


def test_eval_writes_schema_answers_images_and_sheet(cli, tmp_path, encoders):
    run = trained(tmp_path, encoders, "VQ-VQ")
    code, _, err = cli("eval", run, "--show", 3)
    assert code == 0, err
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for section, keys in METRICS_SCHEMA.items():
        assert set(keys) <= set(metrics[section])
    assert metrics["vqa"]["n"]["total"] == 12  # every test question, not a prefix
    assert metrics["gen"]["n"] == 6
    answers = [json.loads(x) for x in (run / "eval" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 12 and {"attribute", "ground_truth", "answer", "score"} <= set(answers[0])
    made = sorted((run / "eval" / "generated").glob("*.png")) if (run / "eval" / "generated").exists() else []
    assert len(made) == metrics["gen"]["n_images"]
    assert len((run / "eval" / "generation.jsonl").read_text().splitlines()) == len(made)
    if made:
        assert Image.open(made[0]).size == (16, 16)  # the tiny VQ's resolution
        assert metrics["gen"]["fid"] is not None
    assert (run / "eval" / "sheet.png").exists()
    assert "answer_distribution" in metrics
    assert metrics["chance"]["random"]["n"] == metrics["vqa"]["n"]  # chance of the same questions
    assert metrics["chance"]["constant"]["total_acc"] >= metrics["chance"]["random"]["total_acc"]
    base = metrics["gen"]["baselines"]
    assert metrics["gen"]["protocol"] == 2
    assert set(base) == {"real", "shuffled", "constant", "reconstructed", "random answer", "best constant answer"}
    assert all(base[k]["n"]["total"] == base["real"]["n"]["total"] > 0 for k in base)
    code, _, err = cli("eval", run, "--temperature", 1.0, "--top-k", 8, "--cfg-scale", 2.0, "--seed", 1)
    assert code == 0, err
    assert json.loads((run / "eval" / "metrics.json").read_text()) == metrics, "the greedy default is kept"
    sampled = json.loads((run / "eval-t1-k8-cfg2-seed1" / "metrics.json").read_text())
    assert sampled["sampling"] == {"temperature": 1.0, "top_k": 8, "cfg_scale": 2.0, "seed": 1}
    code, _, err = cli("eval", run, "--checkpoint", 6)  # the last two checkpoints are kept
    assert code == 0, err
    assert (run / "eval-step-6" / "metrics.json").exists()


def test_eval_of_siglip_outputs_uses_the_embedding_judge(tmp_path, encoders):
    from uvlm.eval.evaluate import evaluate_run
    from uvlm.train.load import load_trained

    run = trained(tmp_path, encoders, "SigLIP-SigLIP")
    metrics = evaluate_run(run)
    assert metrics["gen"]["fid"] is None and metrics["vqa"]["n"]["total"] == 12
    assert set(metrics["gen"]["baselines"]) == {"real", "shuffled", "constant", "random answer",
                                                "best constant answer"}
    model, _ = load_trained(run)  # generated vectors are fed back at the targets' length, saved with the run
    assert (model.target_norm > 0).all()
    if metrics["gen"]["n_images"]:
        assert metrics["gen"]["judge"]["n"]["total"] > 0


def test_eval_points_report_vqa(tmp_path, encoders):
    from uvlm.train.load import load_trained

    run = trained(tmp_path, encoders, "VQ_u")
    model, parts = load_trained(run)
    flat = eval_point(model, parts, 6)
    assert set(flat) == {"vqa_time_acc", "vqa_weather_acc", "vqa_position_acc", "vqa_battery_acc",
                         "vqa_total_acc"}


def test_eval_bad_input(cli, tmp_path, encoders):
    run = trained(tmp_path, encoders, "VQ_u")
    code, _, err = cli("eval", run, "--checkpoint", 999)
    assert code == 2 and "no checkpoint at step 999" in err and len(err.strip().splitlines()) == 1
    (run / "weights" / "adapters.safetensors").unlink()
    code, _, err = cli("eval", run)  # a finished run whose weights stayed on another machine
    assert code == 2 and "final weights are gone" in err and "move the folder aside" in err
    code, _, err = cli("eval", tmp_path / "nothing")
    assert code == 2 and "holds no run" in err
    code, _, err = cli("eval", run, "--inception-weights", tmp_path / "pt_inception.pth")
    assert code == 2 and "do not exist" in err


def test_probe_command_writes_per_image_correctness(cli, tmp_path, encoders):
    run = trained(tmp_path, encoders, "VQ_u")
    code, out, err = cli("probe", run, "--train-images", 30, "--test-images", 20)
    assert code == 0, err
    folder = run / "probe-30-20"  # not the paper's 4,000 / 1,000: its own folder, which the report leaves out
    saved = json.loads((folder / "probe.json").read_text())
    assert len(saved["correct"]) == 20 and set(saved["correct"]) <= {0, 1}
    assert saved["weather_probe_acc"] == pytest.approx(100 * sum(saved["correct"]) / 20)
    assert out.strip() == f"weather probe accuracy: {saved['weather_probe_acc']:.1f}% on 20 test images ({folder})"
    assert np.load(folder / "tsne.npy").shape == (50, 3) and not (run / "probe").exists()
    generation_only = tmp_path / "VQ_g"
    generation_only.mkdir()
    (generation_only / "config.yaml").write_text((run / "config.yaml").read_text().replace("name: VQ_u", "name: VQ_g"))
    (run / "weights" / "adapters.safetensors").unlink()
    for args, message in (((tmp_path / "nothing",), "holds no run"), ((run, "--train-images", 29), "must be >= 30"),
                          ((run, "--test-images", 0), ">= 1"), ((generation_only,), "generation-only run"),
                          ((run,), "final weights are gone")):
        code, _, err = cli("probe", *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
