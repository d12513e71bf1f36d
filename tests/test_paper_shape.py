"""The paper preset's code path, end to end, on tiny random models saved in the real formats.

An HF Llama folder whose config declares float16 (as Vicuna-7B-v1.5's does), an HF SigLIP
folder and a LlamaGen VQ checkpoint with its sidecar stand in for the paper's downloads. The
runs use the paper preset's settings (LoRA with dropout, Vicuna's system prompt, gradient
checkpointing, micro-batches with accumulation, 16-bit feature cache) in fp32, bf16 and fp16:
training, SIGKILL and bit-exact resume, and an evaluation that decodes an image for every
prompt (`--open-image`, so the image path runs even though the model is untrained).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from uvlm.model.tokenizer import template_corpus, train_tokenizer
from uvlm.suites.presets import VICUNA_SYSTEM, row_config

from .helpers import kill_when, tiny_encoders, toy_judge, uvlm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_models(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("paper-models")
    # a Llama folder holds its own tokenizer, without our tokens; like Vicuna's, it knows every word
    tok = train_tokenizer([*template_corpus(), VICUNA_SYSTEM, " " + VICUNA_SYSTEM])
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                                       tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    llm.to(torch.float16).save_pretrained(folder / "llm")  # config.json: "dtype": "float16", as Vicuna's
    tok.save_pretrained(folder / "llm")
    assert json.loads((folder / "llm" / "config.json").read_text())["dtype"] == "float16"
    return {"llm": str(folder / "llm"), **tiny_encoders(folder / "enc")}


def paper_config(models: dict[str, str], precision: str) -> dict:
    cfg = row_config("paper", "VQ-VQ")
    cfg["model"].update({"llm": models["llm"], "lora_r": 4, "lora_alpha": 8})
    cfg["data"]["train"].update({"n_vqa": 12, "n_caption": 12, "n_generation": 12, **STYLE})
    cfg["data"]["test"].update({"n_vqa": 6, "n_generation": 4, **STYLE})
    cfg["data"].update({"siglip": models["siglip"], "vq": models["vq"]})
    # the preset asks for a GPU (train.device cuda); its code path runs here on the CPU
    cfg["train"].update({"device": "auto", "batch_size": 4, "global_batch": 6, "precision": precision,
                         "checkpoint_every": 2,
                         "eval_points": 1, "eval_samples": 4})
    return cfg


STYLE = {"size": 64, "detail_scale": 2.0, "face_radius": 0.32}


@pytest.fixture
def env(tmp_path_factory):
    """The runs' cache, holding an untrained judge for the test style: decoding and scoring are under
    test here, not the judge (training the real one takes minutes; tests/test_pretrain trains it)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    toy_judge(cache, STYLE)
    return {**os.environ, "UVLM_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def weights(run: Path) -> dict[str, torch.Tensor]:
    found = {}
    for name in ("adapters.safetensors", "llm/adapter_model.safetensors"):
        found.update({f"{name}:{k}": v for k, v in load_file(str(run / "weights" / name)).items()})
    return found


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_paper_preset_trains_resumes_and_decodes_images(tmp_path, paper_models, env, precision):
    cfg_path = tmp_path / "paper.yaml"
    cfg_path.write_text(yaml.safe_dump(paper_config(paper_models, precision)))
    whole = tmp_path / "whole"
    done = uvlm(["train", "--config", cfg_path, "--out", whole], env)
    assert done.returncode == 0, done.stderr
    summary = json.loads((whole / "final.json").read_text())
    assert summary["steps"] == 6  # 36 records, 6 per step, micro-batches of 4 and 2
    trained = weights(whole)
    assert any("lora_A" in k for k in trained) and any("lm_head" in k for k in trained), \
        "LoRA and the output rows of the added tokens are trained and saved"

    killed = tmp_path / "killed"
    kill_when(["train", "--config", cfg_path, "--out", killed], env,
              killed / "checkpoints" / "step-0000002" / "state.json")
    assert not (killed / "final.json").exists(), "the run ended before it could be killed"
    resumed = uvlm(["train", "--config", cfg_path, "--out", killed, "--resume"], env)
    assert resumed.returncode == 0, resumed.stderr
    again = weights(killed)
    assert again.keys() == trained.keys() and all(torch.equal(again[k], trained[k]) for k in trained)

    evaluated = uvlm(["eval", whole, "--open-image"], env)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((whole / "eval-opened" / "metrics.json").read_text())
    assert metrics["gen"]["n_images"] == metrics["gen"]["n"] == 4  # every prompt decoded to pixels
    assert len(list((whole / "eval-opened" / "generated").glob("*.png"))) == 4
    assert metrics["vqa"]["n"]["total"] == 6


def test_a_bare_sentencepiece_tokenizer_loads_as_vicunas_does(tmp_path):
    """Vicuna-7B-v1.5 ships tokenizer.model (sentencepiece) without tokenizer.json; transformers 5
    converts it only with the `sentencepiece` package. A model trained here stands in for it."""
    import io
    import json

    import sentencepiece as spm

    from uvlm.suites.presets import row_config
    from uvlm.train.build import build_tokenizer
    from uvlm.train.config import from_dict

    texts = ["What time does the watch show?", "The weather is sunny.", "Battery at 48% in the top-left corner."]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts * 50), model_writer=model, vocab_size=320,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, byte_fallback=True,
                                   character_coverage=1.0, minloglevel=2, num_threads=1)
    folder = tmp_path / "vicuna"
    folder.mkdir()
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "legacy": False, "add_bos_token": True}))
    assert not (folder / "tokenizer.json").exists()
    cfg = row_config("cpu", "VQ-VQ")
    cfg["model"]["llm"] = str(folder)
    tok = build_tokenizer(from_dict(cfg))
    ids = tok("The weather is sunny.").input_ids
    assert ids[0] == 1 and tok.decode(ids, skip_special_tokens=True) == "The weather is sunny."
    assert tok.pad_token is not None and len(tok) > 320  # the image tokens were added
