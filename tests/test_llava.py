"""Table 2's LLaVA-1.5 case: its data build on fake files in the real schemas and trees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from uvlm.data.fake_llava import fake_llava_sources
from uvlm.data.llava_sources import GENERATION_PROMPTS, LlavaDataConfig, LlavaSources, build_llava_data
from uvlm.model.names import parse_name


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    return fake_llava_sources(tmp_path_factory.mktemp("llava-src"))


def _args(paths: dict[str, Path]) -> list[str]:
    return [a for key, path in paths.items() for a in (f"--{key.replace('_', '-')}", str(path))]


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def test_data_adds_reversed_captions_to_both_files_and_skips_sam(sources, tmp_path, cli):
    code, out, err = cli("llava", "data", "--out", tmp_path / "d", *_args(sources), "--n-stage1", "12",
                         "--n-stage2", "18")
    assert code == 0, err
    d = tmp_path / "d"
    pool = _load(sources["sharegpt4v"])
    non_sam = [r for r in pool if not r["image"].startswith("sam/")]
    generation = _load(d / "generation.json")
    # the release's rule: the first non-SAM records in file order, captions reversed into requests
    assert [g["id"] for g in generation] == [f"gen-{r['id']}" for r in non_sam[:30]]
    for g, r in zip(generation, non_sam, strict=False):
        prompt = g["conversations"][0]["value"]
        assert any(prompt == p + r["conversations"][1]["value"] for p in GENERATION_PROMPTS)
        assert g["conversations"][1]["value"] == "<image>" and g["image"] == f"sharegpt4v/{r['image']}"
    assert len({g["conversations"][0]["value"].split(":")[0] for g in generation}) == 3  # all three forms used
    stage1, stage2 = _load(d / "stage1.json"), _load(d / "stage2.json")
    pretrain, instruct = _load(sources["pretrain"]), _load(sources["instruct"])
    assert len(stage1) == len(pretrain) + 12 and len(stage2) == len(instruct) + 18
    assert stage1[len(pretrain):] == generation[:12] and stage2[len(instruct):] == generation[12:]
    assert stage1[0]["image"] == "pretrain/" + pretrain[0]["image"]
    text_only = [r for r in stage2 if "image" not in r]
    assert len(text_only) == sum("image" not in r for r in instruct) > 0
    for record in stage1 + stage2:  # every image resolves through the folder's own links
        if "image" in record:
            assert (d / "images" / record["image"]).is_file()
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["counts"]["stage2"] == {"understanding": len(instruct) - len(text_only),
                                            "text_only": len(text_only), "generation": 18, "left_out": 0,
                                            "total": len(stage2)}
    assert "stage2.json: 58 records" in out


def test_data_is_the_same_bytes_for_a_seed_and_random_selection_differs(sources, tmp_path):
    src = LlavaSources(**sources)
    first = build_llava_data(src, tmp_path / "a", LlavaDataConfig(10, 10))
    again = build_llava_data(src, tmp_path / "b", LlavaDataConfig(10, 10))
    assert first["outputs"] == again["outputs"]
    random1 = build_llava_data(src, tmp_path / "c", LlavaDataConfig(10, 10, select="random", seed=1))
    random2 = build_llava_data(src, tmp_path / "e", LlavaDataConfig(10, 10, select="random", seed=2))
    ids = [[g["id"] for g in _load(tmp_path / f / "generation.json")] for f in ("a", "c", "e")]
    assert len({tuple(i) for i in ids}) == 3 and random1["outputs"] != random2["outputs"]
    assert all(not i.startswith("gen-sa") for i in ids[1] + ids[2])  # SAM stays out of a random draw too


def test_a_missing_or_corrupt_image_is_refused_in_one_line_or_listed_and_replaced(tmp_path, cli):
    paths = fake_llava_sources(tmp_path / "src")
    pool = _load(paths["sharegpt4v"])
    (paths["sharegpt4v_images"] / pool[0]["image"]).unlink()  # the first generation candidate
    (paths["instruct_images"] / _load(paths["instruct"])[1]["image"]).write_bytes(b"not a jpeg")
    code, _, err = cli("llava", "data", "--out", tmp_path / "d", *_args(paths), "--n-stage1", "5",
                       "--n-stage2", "5")
    assert code == 2 and err.count("\n") == 1 and "is missing" in err and "--skip-bad-images" in err
    assert not (tmp_path / "d" / "manifest.json").exists()
    code, _, err = cli("llava", "data", "--out", tmp_path / "d", *_args(paths), "--n-stage1", "5",
                       "--n-stage2", "5", "--skip-bad-images")
    assert code == 0, err
    problems = [json.loads(line) for line in (tmp_path / "d" / "problems.jsonl").read_text().splitlines()]
    assert [(p["file"], p["problem"]) for p in problems] == [("sharegpt4v", "missing"),
                                                             ("instruct", "unreadable: UnidentifiedImageError")]
    generation = _load(tmp_path / "d" / "generation.json")
    assert len(generation) == 10 and generation[0]["id"] == f"gen-{pool[1]['id']}"  # the next one took its place
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["counts"]["stage2"]["left_out"] == 1 and manifest["problems"] == 2


@pytest.mark.parametrize("change, message", [
    (lambda p: p["pretrain"].write_text("{not json"), "is not a JSON file"),
    (lambda p: p["instruct"].write_text('{"a": 1}'), "must hold a JSON list"),
    (lambda p: p["pretrain"].unlink(), "does not exist"),
])
def test_bad_source_files_are_one_line(tmp_path, cli, change, message):
    paths = fake_llava_sources(tmp_path / "src", n_sharegpt4v=12, n_pretrain=4, n_instruct=4)
    change(paths)
    code, _, err = cli("llava", "data", "--out", tmp_path / "d", *_args(paths), "--n-stage1", "2", "--n-stage2", "2")
    assert code == 2 and message in err and err.count("\n") == 1


def test_asking_for_more_generation_records_than_the_pool_holds_is_refused(sources, tmp_path, cli):
    code, _, err = cli("llava", "data", "--out", tmp_path / "d", *_args(sources), "--n-stage1", "30",
                       "--n-stage2", "30")
    assert code == 2 and "usable non-SAM records" in err


def test_clip_space_gives_llavas_features_of_a_square_padded_image(tmp_path):
    import torch
    from PIL import Image

    from tests.helpers import tiny_clip_folder
    from uvlm.train.memory import space_tokens
    from uvlm.vision.clip import squared_batch
    from uvlm.vision.load import load_space, missing_weights

    folder = tiny_clip_folder(tmp_path / "clip")
    space = load_space(f"clip:{folder}")
    assert (space.name, space.n_tokens, space.feature_dim, space.discrete) == ("clip", 16, 32, False)
    assert space_tokens(f"clip:{folder}") == (16, 32, None)  # the plan reads the same shape from the config
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    square = space.square(wide)
    mean = space.pad_colour()
    assert mean == (122, 116, 104)  # CLIP's mean colour x 255, as LLaVA pads
    assert square.size == (40, 40) and square.getpixel((0, 0)) == mean and square.getpixel((20, 20)) == (255, 0, 0)
    assert square.getpixel((20, 9)) == mean and square.getpixel((20, 10)) == (255, 0, 0)  # centred: 10 px above
    images = squared_batch(space, [wide, Image.new("RGB", (20, 30), (0, 0, 255))])
    assert images.shape == (2, 3, 28, 28) and images.dtype == torch.uint8
    features = space.encode(images)
    hidden = space.model(pixel_values=space._pixels(images), output_hidden_states=True).hidden_states
    assert features.shape == (2, 16, 32) and torch.equal(features, hidden[-2][:, 1:])  # class token left out
    assert missing_weights(f"clip:{folder}") is None and "CLIP" in missing_weights(f"clip:{tmp_path / 'none'}")


def test_table_2_names_parse_to_clip_architectures():
    from uvlm.model.names import parse_name

    assert parse_name("LLaVA") == parse_name("CLIP_u") and parse_name("CLIP_u").name == "LLaVA"
    clip_clip, clip_vq = parse_name("CLIP-CLIP"), parse_name("CLIP-VQ")
    assert clip_clip.shared_adapter and clip_clip.output_space == "clip"  # generation goes through the one adapter
    assert not clip_vq.shared_adapter and clip_vq.output_space == "vq"


@pytest.fixture(scope="module")
def llava_data(tmp_path_factory) -> dict:
    """`uvlm llava data` output from the fake sources, a tiny VQ, and a cache of the module's own."""
    from tests.helpers import TRAIN_VQ, write_llamagen

    root = tmp_path_factory.mktemp("llava")
    sources = LlavaSources(**fake_llava_sources(root / "src"))
    build_llava_data(sources, root / "data", LlavaDataConfig(15, 20))
    return {"data": root / "data", "vq": f"vq:{write_llamagen(root / 'vq.pt', TRAIN_VQ)}", "cache": root / "cache"}


def _safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("model", ["CLIP-VQ", "CLIP-CLIP"])
def test_two_stages_train_what_each_should_and_stage_2_starts_where_stage_1_ended(llava_data, tmp_path, cli,
                                                                                 monkeypatch, model):
    import torch

    import uvlm.train.loop as loop
    from uvlm.train.build import build_model, build_tokenizer, load_spaces
    from uvlm.train.loop import load_run_config, start_from

    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    out = tmp_path / model
    started_from = []
    real_start_from = loop.start_from
    monkeypatch.setattr(loop, "start_from", lambda m, run, c: (started_from.append(run), real_start_from(m, run, c)))
    code, stdout, err = cli("llava", "train", "--data", llava_data["data"], "--model", model, "--out", out,
                            "--set", f"data.vq={llava_data['vq']}")
    assert code == 0, err
    assert started_from == [(out / "stage1").resolve()]  # the training loop started stage 2 from stage 1
    first = _safetensors(out / "stage1" / "checkpoints" / "step-0000004" / "trainable.safetensors")
    second = _safetensors(out / "stage2" / "checkpoints" / "step-0000004" / "trainable.safetensors")
    assert first and not any(k.startswith("llm.") for k in first)  # stage 1: adapters and head alone
    assert any(k.startswith("llm.") for k in second) and set(first) < set(second)  # stage 2: the LLM too
    for stage in ("stage1", "stage2"):
        steps = [json.loads(line) for line in (out / stage / "metrics.jsonl").read_text().splitlines()]
        assert all(s["text_loss"] > 0 and s["image_loss"] > 0 for s in steps)  # both losses in both stages
        if model == "CLIP-CLIP":
            assert all(s["image_loss"] <= 2 for s in steps)  # 1 - cosine
    # stage 2 starts from stage 1's final weights, LLM and adapters alike
    cfg = load_run_config(out / "stage2")
    spaces = load_spaces(cfg, parse_name(model))
    built = build_model(cfg, *spaces, build_tokenizer(cfg))
    start_from(built, out / "stage1", cfg)
    weights = out / "stage1" / "weights"
    ended = {**_safetensors(weights / "adapters.safetensors"),
             **{f"llm.{k}": v for k, v in _safetensors(weights / "llm" / "model.safetensors").items()}}
    state = built.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ended.items())
    assert f"{out}: {model} trained" in stdout
    if model == "CLIP-CLIP":  # CLIP features have no pixel decoder: no sheet to draw
        (tmp_path / "p.txt").write_text("A red circle.\n")
        code, _, err = cli("llava", "generate", out / "stage2", "--prompts", tmp_path / "p.txt")
        assert code == 2 and "only CLIP-VQ's images" in err


def test_a_two_stage_run_killed_in_stage_2_resumes_to_the_same_bytes(llava_data, tmp_path):
    from tests.helpers import kill_when
    from tests.test_train import ROOT, uvlm

    env = {**os.environ, "UVLM_CACHE": str(llava_data["cache"]), "PYTHONPATH": str(ROOT / "src"),
           "OMP_NUM_THREADS": "1"}
    args = ["llava", "train", "--data", llava_data["data"], "--model", "CLIP-VQ", "--set",
            f"data.vq={llava_data['vq']}", "--set", "train.batch_size=2", "--set", "train.epochs=2"]
    whole = uvlm([*args, "--out", tmp_path / "whole"], env)
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    kill_when([*args, "--out", killed], env, killed / "stage2" / "checkpoints" / "step-0000004" / "state.json")
    assert (killed / "stage1" / "final.json").exists() and not (killed / "stage2" / "final.json").exists()
    resumed = uvlm([*args, "--out", killed], env)  # the same command picks up where it stopped
    assert resumed.returncode == 0, resumed.stderr
    for name in ("adapters.safetensors", "llm/model.safetensors"):
        a, b = (_safetensors(run / "stage2" / "weights" / name) for run in (tmp_path / "whole", killed))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_llava_train_refuses_an_unknown_model_or_preset_in_one_line(llava_data, tmp_path, cli):
    for flag, value, message in (("--model", "VQ-VQ", "unknown Table 2 model"),
                                 ("--preset", "huge", "unknown LLaVA preset")):
        args = {"--model": "CLIP-VQ", "--preset": "tiny", flag: value}
        code, _, err = cli("llava", "train", "--data", llava_data["data"], "--out", tmp_path / "r",
                           *[a for k, v in args.items() for a in (k, v)])
        assert code == 2 and message in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def trained(llava_data, tmp_path_factory) -> Path:
    """A tiny CLIP-VQ trained through both stages (in its own process: lmms-eval runs it again)."""
    from tests.test_train import ROOT, uvlm

    out = tmp_path_factory.mktemp("llava-run") / "CLIP-VQ"
    env = {**os.environ, "UVLM_CACHE": str(llava_data["cache"]), "PYTHONPATH": str(ROOT / "src")}
    done = uvlm(["llava", "train", "--data", llava_data["data"], "--model", "CLIP-VQ", "--out", out, "--set",
                 f"data.vq={llava_data['vq']}"], env)
    assert done.returncode == 0, done.stderr
    return out


def test_llava_eval_scores_a_run_through_lmms_evals_own_cli_and_tasks(trained, llava_data, tmp_path):
    from tests.test_train import ROOT, uvlm
    from uvlm.data.fake_llava import fake_benchmarks

    # offline: GQA's images come from the local copy, not the hub lmms-eval's own task fetches them from
    env = {**os.environ, "UVLM_CACHE": str(llava_data["cache"]), "PYTHONPATH": str(ROOT / "src"),
           "HF_HUB_OFFLINE": "1"}
    data_root = fake_benchmarks(tmp_path / "benchmarks")
    done = uvlm(["llava", "eval", trained / "stage2", "--data-root", data_root, "--tasks", "mme,pope,gqa,mmvet",
                 "--out", tmp_path / "scores"], env)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "scores" / "benchmarks.json").read_text())
    assert record["lmms_eval_version"] == "0.7.3" and set(record["scores"]) == {"MME", "POPE", "GQA"}
    assert record["skipped"] == {"mmvet": record["skipped"]["mmvet"]} and "GPT judge" in done.stdout
    assert record["scores"]["MME"]["n"] == 8 and record["scores"]["POPE"]["n"] == 4
    assert record["scores"]["GQA"]["n"] == 4 and 0 <= record["scores"]["GQA"]["value"] <= 100
    assert 0 <= record["scores"]["MME"]["value"] <= 400 and 0 <= record["scores"]["POPE"]["value"] <= 100
    # every answer lmms-eval scored came from uvlm's model class, with the task's prompt after the image
    samples = [json.loads(line) for f in (tmp_path / "scores").rglob("*samples_mme_local.jsonl")
               for line in f.read_text().splitlines()]
    assert len(samples) == 8 and all("Answer the question using a single word" in s["input"] for s in samples)


def test_the_lmms_eval_model_honours_until_and_scores_its_own_greedy_answer_as_greedy(trained, llava_data,
                                                                                     monkeypatch):
    from lmms_eval.api.instance import Instance
    from PIL import Image

    from uvlm.llava.lmms import UvlmLMM, cut_at

    assert cut_at("yes. and more", [".", "\n"]) == "yes" and cut_at("no", ["\n\n"]) == "no"
    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    model = UvlmLMM(pretrained=str(trained / "stage2"), batch_size=2)
    docs = {"t": {"test": [{"image": Image.new("RGB", (30, 20), (220, 40, 40))}]}}
    model.task_dict = docs

    def request(kind, arguments):
        return Instance(request_type=kind, arguments=arguments, idx=0,
                        metadata={"task": "t", "doc_id": 0, "repeats": 1})

    visual = lambda doc: [doc["image"]]  # noqa: E731
    free, = model.generate_until([request("generate_until", ("What colour is it?", {"max_new_tokens": 12},
                                                              visual, 0, "t", "test"))])
    assert free  # the tiny model says something; cut at a string it contains, the answer ends there
    stop = free[len(free) // 2:][:2]
    cut, = model.generate_until([request("generate_until", ("What colour is it?",
                                                             {"max_new_tokens": 12, "until": [stop]},
                                                             visual, 0, "t", "test"))])
    assert cut == free[:free.index(stop)] and stop not in cut
    (logprob, greedy), (other, other_greedy) = model.loglikelihood(
        [request("loglikelihood", ("What colour is it?", text, visual, 0, "t", "test")) for text in (" " + free,
                                                                                                      " zebra")])
    assert greedy and not other_greedy and other < logprob < 0  # its own answer is the greedy one


def test_llava_plan_sizes_both_stages_of_the_7b_recipe(cli):
    code, out, err = cli("llava", "plan", "--model", "CLIP-VQ", "--gpus", "8", "--gpu-mem", "80")
    assert code == 0, err
    stage1, stage2 = out.split("stage2:")
    # stage 1 trains the adapters (CLIP 1024 -> 4096 MLP; VQ 8 -> 4096 MLP) and the 16,384-way head alone
    vision = (1024 * 4096 + 4096 + 4096 * 4096 + 4096) + (8 * 4096 + 4096 + 4096 * 4096 + 4096) + 4096 * 16384 + 16384
    assert f"{vision / 1e6:,.1f}M trained (the LLM frozen" in stage1
    assert "256 records per device" not in stage1 and "32 records per device" in stage1  # 256 over 8 GPUs
    assert "sharded over 8 GPUs, FSDP" in stage2 and "16 records per device" in stage2 and ": fits" in stage2
    code, out, _ = cli("llava", "plan", "--model", "CLIP-VQ", "--gpus", "1", "--gpu-mem", "80")
    assert out.split("stage2:")[1].count("DOES NOT FIT") == 1  # a full 7B fine-tune needs the 8 GPUs' shards


def _fake_run(results: Path, name: str, model: str, seed: int, preset: str, scores: dict, limit=None,
              overrides=(), recipe: str | None = None) -> None:
    run = results / "llava" / name
    (run / "stage2" / "benchmarks").mkdir(parents=True)
    about = {"model": model, "preset": preset, "overrides": [f"train.seed={seed}", *overrides]}
    (run / "llava.json").write_text(json.dumps({**about, **({"recipe": recipe} if recipe else {})}))
    (run / "stage2" / "config.yaml").write_text(f"model: {{name: {model}}}\ntrain: {{seed: {seed}}}\n")
    (run / "stage2" / "benchmarks" / "benchmarks.json").write_text(json.dumps(
        {"limit": limit, "scores": {c: {"value": v} for c, v in scores.items()}}))


def test_table_2_shows_the_paper_rows_and_ours_with_verdicts_only_where_seeds_allow(tmp_path):
    from uvlm.suites.results import paper_tables
    from uvlm.suites.table2 import table2_section

    paper = paper_tables()
    lines = "\n".join(table2_section(tmp_path, paper))
    assert "| LLaVA | paper (quoted from lmms-eval, not retrained) | 1510.7 |" in lines
    assert "No Table 2 runs in this folder yet" in lines and "No verdicts" in lines
    for seed in range(3):  # CLIP-VQ 10 points above LLaVA on POPE, both rows agreeing across seeds
        _fake_run(tmp_path, f"LLaVA-s{seed}", "LLaVA", seed, "paper", {"POPE": 80 + seed * 0.5, "MME": 1500 + seed})
        _fake_run(tmp_path, f"CLIP-VQ-s{seed}", "CLIP-VQ", seed, "paper", {"POPE": 90 + seed * 0.5, "MME": 1490 - seed})
    _fake_run(tmp_path, "CLIP-CLIP-s0", "CLIP-CLIP", 0, "paper", {"POPE": 99})
    # not seeds of those rows: a smoke test, a second run of seed 0, another study, the tiny preset
    _fake_run(tmp_path, "CLIP-VQ-smoke", "CLIP-VQ", 5, "paper", {"POPE": 10}, limit=8)
    _fake_run(tmp_path, "CLIP-VQ-s0-again", "CLIP-VQ", 0, "paper", {"POPE": 90})
    _fake_run(tmp_path, "CLIP-VQ-lr", "CLIP-VQ", 0, "paper", {"POPE": 70}, overrides=("train.lr=1e-5",))
    _fake_run(tmp_path, "CLIP-VQ-paper-s0", "CLIP-VQ", 0, "paper", {"POPE": 60}, recipe="paper")
    _fake_run(tmp_path, "CLIP-VQ-release-s0", "CLIP-VQ", 0, "paper", {"POPE": 90}, recipe="release")
    for seed in range(3):
        for model, pope in (("LLaVA", 10 + seed), ("CLIP-VQ", 30 + seed)):
            _fake_run(tmp_path, f"{model}-tiny-s{seed}", model, seed, "tiny", {"POPE": pope})
    lines = table2_section(tmp_path, paper)
    text = "\n".join(lines)
    assert "| CLIP-VQ | ours, `paper` preset, 3 seeds | 1489.0 ± 1.0 | - | 90.5 ± 0.5 |" in text
    assert "| CLIP-CLIP | ours, `paper` preset, 1 seed | - | - | 99.0 |" in text
    assert "| CLIP-VQ | ours, `paper` preset, `train.lr=1e-5`, 1 seed | - | - | 70.0 |" in text
    # a paper-recipe run is a row of its own (a release run naming its recipe joins the release row)
    assert "| CLIP-VQ | ours, `paper` preset, `--recipe paper`, 1 seed | - | - | 60.0 |" in text
    assert "| CLIP-VQ | ours, `tiny` preset, 3 seeds (plumbing only) |" in text
    verdicts = [line for line in lines if line.startswith("| paper | ")]
    assert len(verdicts) == 2  # POPE and MME of CLIP-VQ; the one-seed CLIP-CLIP row gets none
    assert any("| POPE | +10.0 |" in v and "holds: better" in v for v in verdicts)
    assert any("| MME | -12.0 |" in v and "worse" in v for v in verdicts)
    assert "| chance | a random answer | 750.0 | 25.0 | 50.0 | - |" in text

    from uvlm.suites.report import write_report  # a folder of Table 2's runs alone gets Table 2 alone

    readme = write_report(tmp_path, tmp_path / "report").read_text()
    assert "## Table 2" in readme and "| CLIP-VQ | ours, `paper` preset, 3 seeds |" in readme


def test_llava_generate_draws_clip_vqs_images_on_a_sheet(trained, llava_data, tmp_path, cli, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    (tmp_path / "prompts.txt").write_text("A red circle on a white background.\n\nDraw a blue square.\n")
    code, out, err = cli("llava", "generate", trained / "stage2", "--prompts", tmp_path / "prompts.txt", "--out",
                         tmp_path / "sheet.png", "--open-image")
    assert code == 0, err
    assert out.strip() == f"{tmp_path / 'sheet.png'}: 2 images drawn"  # the empty line is no prompt
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.width == 2 * (160 + 6) + 6 and sheet.height > 160  # two tiles side by side
    (tmp_path / "empty.txt").write_text("\n")
    code, _, err = cli("llava", "generate", trained / "stage2", "--prompts", tmp_path / "empty.txt")
    assert code == 2 and "holds no prompt" in err


def test_a_two_stage_run_is_resumed_only_with_its_own_settings(llava_data, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    out = tmp_path / "run"
    args = ("llava", "train", "--data", llava_data["data"], "--model", "LLaVA", "--out", out)
    code, _, err = cli(*args, "--set", "train.epochs=0.2")
    assert code == 0, err
    code, _, err = cli(*args, "--set", "train.epochs=0.3")
    assert code == 2 and "resume it with those" in err and err.count("\n") == 1
    assert json.loads((out / "llava.json").read_text())["overrides"] == ["train.epochs=0.2"]
    code, _, err = cli(*args, "--set", "train.epochs=0.2")  # the same command: nothing left to do
    assert code == 0, err


@pytest.fixture(scope="module")
def paper_run(llava_data, tmp_path_factory) -> Path:
    """A tiny CLIP-CLIP trained through both stages under `--recipe paper`."""
    from tests.test_train import ROOT, uvlm

    out = tmp_path_factory.mktemp("paper") / "CLIP-CLIP"
    env = {**os.environ, "UVLM_CACHE": str(llava_data["cache"]), "PYTHONPATH": str(ROOT / "src")}
    done = uvlm(["llava", "train", "--data", llava_data["data"], "--model", "CLIP-CLIP", "--out", out,
                 "--recipe", "paper"], env)
    assert done.returncode == 0, done.stderr
    return out


def _stage2_weights(run: Path) -> dict:
    return {name: _safetensors(run / "weights" / name) for name in
            ("adapters.safetensors", "encoder/model.safetensors", "llm/model.safetensors")}


def test_the_paper_recipe_trains_clip_in_stage_2_from_pixels_and_its_run_encodes_with_the_trained_tower(
        paper_run, llava_data, monkeypatch):
    """`--recipe paper`: stage 1 in the plain template with CLIP frozen; stage 2 trains CLIP (all but
    its unread last layer) with the LLM, from the images' pixels, and saves it as a CLIP folder; the
    loaded run encodes test images with that tower, while CLIP-CLIP's targets stay the frozen one's."""
    import torch
    from transformers import CLIPVisionModel

    from uvlm.train.load import load_trained
    from uvlm.train.loop import load_run_config
    from uvlm.vision.clip import tiny_clip
    from uvlm.vision.load import load_space

    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    out = paper_run
    first, second = (load_run_config(out / stage) for stage in ("stage1", "stage2"))
    assert (first.model.template, first.train.train_encoder) == ("plain", False)
    assert (second.model.template, second.train.train_encoder, second.train.record_order) == ("chat", True, "modality")
    stage1 = _safetensors(out / "stage1" / "checkpoints" / "step-0000004" / "trainable.safetensors")
    stage2 = _safetensors(out / "stage2" / "checkpoints" / "step-0000004" / "trainable.safetensors")
    assert not any(k.startswith("encoder.") for k in stage1)
    trained = {k.removeprefix("encoder.tower.") for k in stage2 if k.startswith("encoder.")}
    assert "encoder.layers.0.mlp.fc1.weight" in trained and not any(k.startswith("encoder.layers.1.") for k in trained)

    before = CLIPVisionModel.from_pretrained(tiny_clip()).state_dict()
    after = CLIPVisionModel.from_pretrained(out / "stage2" / "weights" / "encoder").state_dict()
    assert not torch.equal(before["encoder.layers.0.mlp.fc1.weight"], after["encoder.layers.0.mlp.fc1.weight"])
    assert torch.equal(before["encoder.layers.1.mlp.fc1.weight"], after["encoder.layers.1.mlp.fc1.weight"])

    model, parts = load_trained(out / "stage2")
    assert model.encoder.tower is parts.in_space.model  # the run's test images go through what it trained
    assert torch.equal(dict(parts.in_space.model.named_parameters())["encoder.layers.0.mlp.fc1.weight"],
                       after["encoder.layers.0.mlp.fc1.weight"])
    images = torch.randint(0, 256, (2, 3, 56, 56), dtype=torch.uint8)
    frozen = load_space("tiny-clip")
    assert not torch.allclose(parts.in_space.encode(images), frozen.encode(images))
    assert torch.equal(parts.out_space.encode(images), frozen.encode(images))  # targets: the frozen tower
    assert parts.in_space.fingerprint != frozen.fingerprint  # its test features are cached apart


def test_evaluation_points_that_score_smartwatch_are_refused_for_llava_data_in_one_line(paper_run, llava_data,
                                                                                       tmp_path, cli, monkeypatch):
    import yaml

    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    cfg = yaml.safe_load((paper_run / "stage2" / "config.yaml").read_text())
    cfg["train"].update({"eval_points": 1, "eval_metrics": True})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = cli("train", "--config", tmp_path / "run.yaml", "--out", tmp_path / "run")
    assert code == 2 and "score the run with `uvlm llava eval`" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_gqa_image_copy_that_lacks_an_image_is_refused_in_one_line(tmp_path):
    import datasets

    from uvlm.errors import UvlmError
    from uvlm.llava.benchmarks import check_image_copy

    datasets.disable_progress_bars()
    questions = datasets.Dataset.from_list([{"imageId": "n1", "question": "?"}, {"imageId": "n2", "question": "?"}])
    datasets.DatasetDict({"testdev": questions}).save_to_disk(str(tmp_path / "gqa"))
    datasets.DatasetDict({"testdev": datasets.Dataset.from_list([{"id": "n1"}])}).save_to_disk(str(tmp_path / "img"))
    with pytest.raises(UvlmError, match=r"lacks 1 of the images GQA's questions ask about \(e\.g\. n2\)"):
        check_image_copy(tmp_path / "gqa", tmp_path / "img")
    from uvlm.llava.benchmarks import write_task_files

    (tmp_path / "tasks").mkdir()
    with pytest.raises(UvlmError, match=r"no local copy of gqa's images at .*gqa_images; save it there"):
        write_task_files(["gqa"], tmp_path, tmp_path / "tasks")  # ROOT/gqa is there, ROOT/gqa_images is not


def test_stage_2_with_a_trained_clip_resumes_to_the_same_bytes(paper_run, llava_data, tmp_path, cli, monkeypatch):
    """Cut after its first checkpoint, stage 2 resumes to the bytes of the uninterrupted run, the
    trained tower's and its optimizer state's included."""
    import shutil

    import torch

    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    out = tmp_path / "CLIP-CLIP"
    shutil.copytree(paper_run, out)
    for path in (out / "stage1" / "config.yaml", out / "stage2" / "config.yaml"):  # the copy's own stage 1
        path.write_text(path.read_text().replace(str(paper_run.resolve()), str(out.resolve())))
    kept = sorted((out / "stage2" / "checkpoints").glob("step-*"))
    assert len(kept) == 2
    shutil.rmtree(kept[-1])
    shutil.rmtree(out / "stage2" / "weights")
    (out / "stage2" / "final.json").unlink()
    code, _, err = cli("llava", "train", "--data", llava_data["data"], "--model", "CLIP-CLIP", "--out", out,
                       "--recipe", "paper")
    assert code == 0, err
    for name, a in _stage2_weights(paper_run / "stage2").items():
        b = _stage2_weights(out / "stage2")[name]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_stage_2_with_a_trained_clip_sharded_over_two_processes_equals_one(paper_run, llava_data, tmp_path,
                                                                            monkeypatch):
    """FSDP over 2 processes (gloo) trains the CLIP tower's layers as shard units: the same weights,
    to float rounding, as the same run on 1 process, with steps where one process's record shows an
    image and the other's does not (that one encodes a blank image at weight 0, so both gather
    every unit in the same order)."""
    import subprocess
    import sys

    import torch
    import yaml

    from tests.test_train import ROOT
    from uvlm.model.prompt import UNDERSTAND
    from uvlm.train.build import build_tokenizer, load_spaces, prompt_encoder
    from uvlm.train.config import from_dict
    from uvlm.train.data import load_record_set
    from uvlm.train.loop import stream_indices, train

    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    cfg = yaml.safe_load((paper_run / "stage2" / "config.yaml").read_text())
    # one record per process a step, in a random order: many steps give one process an image and not the other
    cfg["train"].update({"batch_size": 2, "global_batch": 2, "record_order": "random", "sharding": "fsdp",
                         "epochs": 0.4})
    run_cfg = from_dict(cfg)
    arch = parse_name(run_cfg.model.name)
    in_space, out_space = load_spaces(run_cfg, arch)
    prompts = prompt_encoder(run_cfg, build_tokenizer(run_cfg), in_space, out_space)
    data = load_record_set(Path(run_cfg.data.train), arch, prompts, in_space, out_space, pixels=True)
    shows = [bool((e.kinds == UNDERSTAND).any()) for e in data.encoded]
    steps = [stream_indices(len(data), run_cfg.train.seed, k, k + 2) for k in range(0, int(0.4 * len(data)), 2)]
    assert sum(shows[a] != shows[b] for a, b in steps) >= 3

    train(run_cfg, tmp_path / "one")  # on one process there is nothing to shard: trained unsharded
    (tmp_path / "stage2.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "UVLM_CACHE": str(llava_data["cache"]), "PYTHONPATH": str(ROOT / "src"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "uvlm.cli", "train", "--config", str(tmp_path / "stage2.yaml"), "--out",
                           str(tmp_path / "sharded")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "sharded" / "final.json").read_text())["processes"] == 2
    one, two = _stage2_weights(tmp_path / "one"), _stage2_weights(tmp_path / "sharded")
    for name, a in one.items():
        assert a.keys() == two[name].keys(), name
        assert all(torch.allclose(a[k], two[name][k], atol=1e-5) for k in a), name
    moved = _stage2_weights(paper_run / "stage2")["encoder/model.safetensors"]  # another run: other weights
    assert not all(torch.equal(moved[k], two["encoder/model.safetensors"][k]) for k in moved)


def test_the_plain_template_is_the_image_then_the_answer_and_a_request_then_its_image():
    from uvlm.model.prompt import GENERATE, IGNORE, SPECIAL_TOKENS, TEXT, UNDERSTAND, PromptEncoder
    from uvlm.model.tokenizer import train_tokenizer

    tok = train_tokenizer(["a red bus", "Draw a red bus.", "What is it?", "USER: ASSISTANT: sys"], SPECIAL_TOKENS)
    plain = PromptEncoder(tok, 3, 2, system="sys", template="plain")
    seen = plain.encode([{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "a red bus"}])
    answer = tok("a red bus", add_special_tokens=False)["input_ids"]
    assert seen.input_ids.tolist() == [tok.bos_token_id, *[plain.image_id] * 3, *answer, tok.eos_token_id]
    assert seen.kinds.tolist() == [TEXT, *[UNDERSTAND] * 3, *[TEXT] * (len(answer) + 1)]
    assert seen.labels.tolist() == [IGNORE] * 4 + [*answer, tok.eos_token_id]  # the caption is learned, not the image
    drawn = plain.encode([{"from": "human", "value": "Draw a red bus."}, {"from": "gpt", "value": "<image>"}])
    request = tok("Draw a red bus.", add_special_tokens=False)["input_ids"]
    assert drawn.input_ids.tolist() == [tok.bos_token_id, *request, plain.boi_id, *[plain.image_id] * 2,
                                        plain.eoi_id, tok.eos_token_id]
    assert (drawn.kinds == GENERATE).sum() == 2
    chat = PromptEncoder(tok, 3, 2, system="sys")
    assert len(chat.encode([{"from": "human", "value": "Draw a red bus."}, {"from": "gpt", "value": "<image>"}])) \
        > len(drawn)  # the chat template adds the system prompt and the role words


def test_modality_order_makes_each_step_all_with_images_or_all_without():
    import numpy as np
    import torch

    from uvlm.train.loop import modality_order, stream_indices

    with_image = np.array([i % 3 != 0 for i in range(23)])  # 15 with an image, 8 without
    order = modality_order(with_image, 4)
    epoch = order(torch.Generator().manual_seed(5))
    assert sorted(epoch) == list(range(23))
    whole = (15 // 4 + 8 // 4) * 4  # 5 whole steps, then the two kinds' leftovers (3 + 0)
    assert all(len({bool(with_image[i]) for i in epoch[k:k + 4]}) == 1 for k in range(0, whole, 4))
    assert epoch == order(torch.Generator().manual_seed(5)) and epoch != order(torch.Generator().manual_seed(6))
    stream = stream_indices(23, 1, 0, 46, order)
    assert sorted(stream[:23]) == sorted(stream[23:]) == list(range(23)) and stream[:23] != stream[23:]
    assert stream_indices(23, 1, 8, 30, order) == stream[8:30]  # any step is known without replaying the data


def test_llava_plan_of_the_paper_recipe_counts_the_trained_clip_tower(cli):
    import re

    def trained(out: str) -> float:
        return float(re.search(r"([\d,.]+)M trained", out.split("stage2:")[1]).group(1).replace(",", ""))

    code, release, err = cli("llava", "plan", "--model", "CLIP-VQ", "--gpus", "8", "--gpu-mem", "80")
    assert code == 0, err
    code, paper, err = cli("llava", "plan", "--model", "CLIP-VQ", "--gpus", "8", "--gpu-mem", "80", "--recipe", "paper")
    assert code == 0, err
    assert release.split("stage2:")[0] == paper.split("stage2:")[0]  # stage 1 is the same
    # CLIP ViT-L/14-336's vision tower: 303.5M parameters, of which all but its last layer (12.6M) train
    assert "+ 303.5M encoder" in paper and round(trained(paper) - trained(release), 1) == 290.9
    assert ": fits" in paper.split("stage2:")[1]
    # the README and the manual quote these plans: they must be the plans as they are
    memory = [re.search(r"memory per device\s+([\d.]+) GiB", part).group(1)
              for part in (*release.split("stage2:"), paper.split("stage2:")[1])]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\n", " ")
    assert f"gives {memory[0]} GiB a GPU in stage 1 and {memory[1]} ({memory[2]} with `--recipe paper`)" in readme
    manual = (Path(__file__).resolve().parents[1] / "docs" / "table2-llava.md").read_text()
    assert all(f"| {m} GiB |" in manual for m in memory)
    code, _, err = cli("llava", "plan", "--model", "CLIP-VQ", "--recipe", "papers")
    assert code == 2 and "unknown recipe 'papers'" in err and err.count("\n") == 1


def test_a_later_benchmark_call_adds_its_tasks_to_the_record_and_never_drops_earlier_ones():
    from uvlm.llava.benchmarks import merged

    def record(scores: dict, skipped=(), limit=None, run="/r/stage2") -> dict:
        return {"run": run, "lmms_eval_version": "0.7.3", "limit": limit, "skipped": {t: "judge" for t in skipped},
                "scores": {c: {"task": t, "value": v} for c, (t, v) in scores.items()}}

    first = record({"MME": ("mme", 1200.0), "POPE": ("pope", 80.0)}, skipped=("mmvet",))
    later = merged(first, record({"POPE": ("pope", 81.0), "MMVet": ("mmvet", 30.0)}))
    assert later["scores"] == {"MME": {"task": "mme", "value": 1200.0}, "POPE": {"task": "pope", "value": 81.0},
                               "MMVet": {"task": "mmvet", "value": 30.0}} and later["skipped"] == {}
    smoke = record({"POPE": ("pope", 10.0)}, limit=8)  # another --limit (or run, or lmms-eval): not merged
    assert merged(first, smoke) == smoke and merged(None, smoke) == smoke


def test_a_bad_setting_is_refused_before_a_two_stage_run_writes_anything(llava_data, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    for setting, message in (("model.standardize=true", "set model.standardize=false"),
                             ("train.record_order=bogus", "record_order 'bogus'")):
        out = tmp_path / "run"
        code, _, err = cli("llava", "train", "--data", llava_data["data"], "--model", "CLIP-VQ", "--out", out,
                           "--recipe", "paper", "--set", setting)
        assert code == 2 and message in err and err.count("\n") == 1
        assert not out.exists()  # the corrected command starts clean


def test_a_finished_stage_whose_weights_are_damaged_says_how_to_retrain_it(paper_run, llava_data, tmp_path, cli,
                                                                             monkeypatch):
    import shutil

    monkeypatch.setenv("UVLM_CACHE", str(llava_data["cache"]))
    out = tmp_path / "CLIP-CLIP"
    shutil.copytree(paper_run, out)
    for path in (out / "stage1" / "config.yaml", out / "stage2" / "config.yaml"):
        path.write_text(path.read_text().replace(str(paper_run.resolve()), str(out.resolve())))
    (out / "stage2" / "weights" / "encoder" / "model.safetensors").write_bytes(b"not weights")
    args = ("llava", "train", "--data", llava_data["data"], "--model", "CLIP-CLIP", "--out", out, "--recipe", "paper")
    code, _, err = cli(*args)
    assert code == 2 and f"delete {out / 'stage2'} and run the same command again" in err and err.count("\n") == 1
    shutil.rmtree(out / "stage2")
    code, _, err = cli(*args)  # as it says: stage 2 trains anew from the kept stage 1, to the same bytes
    assert code == 0, err
    import torch

    a, b = (_safetensors(run / "stage2" / "weights" / "encoder" / "model.safetensors") for run in (paper_run, out))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_table_2s_task_files_are_found_as_lmms_evals_own_index_finds_them():
    from lmms_eval.tasks import TaskManager
    from loguru import logger

    from uvlm.llava.benchmarks import TASKS, lmms_task_file

    logger.disable("lmms_eval")
    index = TaskManager().task_index
    assert all(lmms_task_file(task) == Path(index[task]["yaml_path"]) for task in TASKS)
