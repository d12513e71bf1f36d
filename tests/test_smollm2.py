"""SmolLM2-135M-Instruct, a pretrained LLM that a package ships (uvlm.train.packaged), through the
same code as Vicuna: its tokenizer with the image tokens, resized embeddings, LoRA, training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from uvlm.model.tokenizer import template_corpus
from uvlm.train.config import ModelConfig
from uvlm.train.memory import llm_shape
from uvlm.train.packaged import llm_source

from .helpers import toy_judge
from .test_train import ROOT, losses, run_config, uvlm

# one worker runs this module (pytest -n 2 --dist loadgroup): its model is converted once
pytestmark = pytest.mark.xdist_group("smollm2")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One conversion of the GGUF per test session, in its own cache (the test workers share it:
    a second waits for the first's build), beside an untrained judge (evaluation's plumbing is
    under test here, not the judge)."""
    # pytest-xdist gives each worker a folder of its own in the session's folder
    session = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else \
        tmp_path_factory.getbasetemp()
    path = session / "smol-cache"
    toy_judge(path)
    old = os.environ.get("UVLM_CACHE")
    os.environ["UVLM_CACHE"] = str(path)
    try:
        llm_source.cache_clear()
        llm_source("smollm2-135m")
    finally:
        llm_source.cache_clear()  # other tests' caches are other folders
        os.environ.pop("UVLM_CACHE") if old is None else os.environ.update(UVLM_CACHE=old)
    return path


def test_the_packaged_llm_is_pretrained(cache, monkeypatch):
    """Its loss on SmartWatch's phrases is far below a random init of the same shape, and it knows a
    fact no SmartWatch record holds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("UVLM_CACHE", str(cache))
    from pathlib import Path

    folder = llm_source("smollm2-135m")
    built = (Path(folder) / "meta.json").stat().st_mtime_ns
    llm_source.cache_clear()  # a new process: the entry is verified, not converted again
    assert llm_source("smollm2-135m") == folder and (Path(folder) / "meta.json").stat().st_mtime_ns == built
    tok = AutoTokenizer.from_pretrained(folder)
    llm = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert 134e6 < sum(p.numel() for p in llm.parameters()) < 135e6 and llm.config.num_hidden_layers == 30
    shape, _ = llm_shape(ModelConfig(llm="smollm2-135m"))  # the memory plan counts it right (3 KV heads of 9)
    assert shape.params == sum(p.numel() for p in llm.parameters())
    batch = tok(template_corpus()[:16], return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    torch.manual_seed(0)
    random = AutoModelForCausalLM.from_config(llm.config).eval()
    with torch.no_grad():
        pretrained_loss = llm(**batch, labels=labels).loss.item()
        random_loss = random(**batch, labels=labels).loss.item()
        ids = tok("The capital of France is", return_tensors="pt").input_ids
        answer = tok.decode(llm.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:])
    assert pretrained_loss < 0.5 * random_loss, (pretrained_loss, random_loss)
    assert "Paris" in answer


def test_the_packaged_llm_trains_resumes_bit_exactly_and_answers(tmp_path, encoders, cache):
    """LoRA steps lower its loss; a run resumed from its middle checkpoint (as after a SIGKILL
    between the last checkpoint and the end) ends on the same losses and bits; `uvlm eval`
    answers every test question with it."""
    # 8 steps of 2 records: a step of a 135M LLM on one CPU thread costs about 2 s a record
    cfg = run_config(encoders, epochs=2, lr=2e-3, adapter_lr=2e-3, batch_size=2, eval_points=0, checkpoint_every=4)
    cfg["model"].update({"llm": "smollm2-135m", "lora_r": 8, "lora_alpha": 16})
    cfg["data"]["train"].update({"n_vqa": 4, "n_caption": 2, "n_generation": 2})
    cfg["data"]["test"].update({"n_vqa": 6, "n_generation": 2})
    path = tmp_path / "smol.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "UVLM_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    done = uvlm(["train", "--config", path, "--out", out], env)
    assert done.returncode == 0, done.stderr
    train = [x for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if x["event"] == "train"]
    assert len(train) == 8
    assert sum(x["text_loss"] for x in train[-3:]) < sum(x["text_loss"] for x in train[:3])
    saved = json.loads((out / "weights" / "llm" / "adapter_config.json").read_text())
    assert saved["r"] == 8  # LoRA on the pretrained weights, which stay in the cache

    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    for later in ("final.json", "weights", "checkpoints/step-0000008"):
        shutil.rmtree(cut / later) if (cut / later).is_dir() else (cut / later).unlink()
    # a fresh interpreter, not a fork of the first run's server: its own string hashes, as another
    # suite's runs have; nothing saved may depend on them
    resumed = subprocess.run([sys.executable, "-m", "uvlm.cli", "train", "--config", str(path), "--out", str(cut),
                              "--resume"], env={**env, "PYTHONHASHSEED": "12345"}, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((cut / "final.json").read_text())["resumed_from_step"] == 4
    assert losses(cut) == losses(out)
    files = sorted(p.relative_to(out / "weights") for p in (out / "weights").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(cut / "weights") for p in (cut / "weights").rglob("*") if p.is_file())
    for name in files:  # the same bytes, the LoRA config's module list included
        assert (out / "weights" / name).read_bytes() == (cut / "weights" / name).read_bytes(), name

    done = uvlm(["eval", out, "--show", 0], env)
    assert done.returncode == 0, done.stderr
    answers = [json.loads(x) for x in (out / "eval" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 6 and all(isinstance(a["answer"], str) for a in answers)


def test_the_smol_plan_is_the_one_the_docs_quote(cache):
    """`uvlm plan configs/smol/VQ-VQ.yaml --gpu-mem 80`, with SmolLM2's own tokenizer measuring the
    records, gives the micro-batch and memory that docs/gpus-and-clusters.md states."""
    done = uvlm(["plan", ROOT / "configs" / "smol" / "VQ-VQ.yaml", "--gpu-mem", 80],
                {**os.environ, "UVLM_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr
    assert "131 of 393 records per device per step (3 accumulation steps)" in done.stdout
    assert "72.8 GiB of 74.5 GiB: fits" in done.stdout
    docs = " ".join((ROOT / "docs" / "gpus-and-clusters.md").read_text().split())
    assert "micro-batches of 131 (3 accumulation steps to 393), 72.8 GiB of 74.5" in docs
