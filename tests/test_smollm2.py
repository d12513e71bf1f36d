"""SmolLM2-135M-Instruct, a pretrained LLM that a package ships (uvlm.train.packaged), through the
same code as Vicuna: its tokenizer with the image tokens, resized embeddings, LoRA, training."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from uvlm.model.tokenizer import template_corpus
from uvlm.train.packaged import llm_source

from .test_train import ROOT, run_config, uvlm


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One conversion of the GGUF per test worker, in its own cache."""
    path = tmp_path_factory.mktemp("smol-cache")
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


def test_lora_steps_on_the_packaged_llm_lower_its_loss(tmp_path, encoders, cache):
    cfg = run_config(encoders, epochs=3, lr=2e-3, adapter_lr=2e-3, batch_size=4, eval_points=0)
    cfg["model"].update({"llm": "smollm2-135m", "lora_r": 8, "lora_alpha": 16})
    cfg["data"]["train"].update({"n_vqa": 8, "n_caption": 4, "n_generation": 4})
    path = tmp_path / "smol.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "UVLM_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    done = uvlm(["train", "--config", path, "--out", out], env)
    assert done.returncode == 0, done.stderr
    train = [x for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if x["event"] == "train"]
    assert len(train) == 12
    assert sum(x["text_loss"] for x in train[-3:]) < sum(x["text_loss"] for x in train[:3])
    saved = json.loads((out / "weights" / "llm" / "adapter_config.json").read_text())
    assert saved["r"] == 8  # LoRA on the pretrained weights, which stay in the cache
