"""Stand-in pretraining at toy size: runs end to end, saves real formats, caches, reloads."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
import torch

from uvlm.data.smartwatch import CPU_STYLE
from uvlm.vision import judge as judge_mod
from uvlm.vision import pretrain
from uvlm.vision.siglip import SiglipSpace
from uvlm.vision.vq import VQSpace

TOY = dict(pool=24, held_out=30, probe_train=20, steps=3, batch=8)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    return tmp_path / "cache"


def test_render_pool_is_deterministic_and_disjoint_from_experiments():
    a, attrs = pretrain.render_pool(5, 0, CPU_STYLE)
    b, _ = pretrain.render_pool(5, 0, CPU_STYLE)
    assert a.shape == (5, 3, 64, 64) and a.dtype == torch.uint8 and torch.equal(a, b)
    shifted, _ = pretrain.render_pool(3, 0, CPU_STYLE, offset=2)
    assert torch.equal(shifted, a[2:5])
    from uvlm.data.mixture import pool_of
    from uvlm.data.smartwatch import Attributes
    assert all(pool_of(Attributes.from_dict(x)) == "pretrain" for x in attrs)


def test_vq_stand_in_trains_saves_llamagen_layout_and_is_cached(tmp_path):
    cfg = pretrain.VQPretrainConfig(**TOY, restart_every=1)
    space, info = pretrain.pretrained_vq(cfg)
    assert isinstance(space, VQSpace) and space.n_tokens == 64 and space.feature_dim == 8
    assert {"psnr_db", "codebook_usage", "probe", "train_seconds"} <= set(info)
    assert set(info["probe"]["accuracy"]) == {"hour", "minute", "second", "weather", "weather_pos",
                                              "battery", "battery_pos"}
    entry = next((tmp_path / "cache" / "pretrained-vq").glob("[!.]*"))
    state = torch.load(entry / "vq.pt", weights_only=True)["model"]
    assert "encoder.conv_blocks.0.res.0.conv1.weight" in state and "encoder.mid.1.q.weight" in state
    assert json.loads((entry / "vq.json").read_text())["image_size"] == 64
    again, info2 = pretrain.pretrained_vq(cfg)  # from the cache: same weights, no retraining
    assert info2 == info and again.fingerprint == space.fingerprint


def test_dead_codes_are_restarted():
    codebook = torch.zeros(6, 4)
    used = torch.tensor([True, False, True, False, False, True])
    z = torch.ones(2, 3, 4)
    pretrain._restart_dead_codes(codebook, used, z, torch.Generator().manual_seed(0))
    assert torch.all(codebook[[0, 2, 5]] == 0)
    assert torch.allclose(codebook[[1, 3, 4]], torch.ones(3, 4), atol=0.05)


def test_siglip_stand_in_is_a_transformers_folder():
    cfg = pretrain.SiglipPretrainConfig(**TOY, hidden_size=32, layers=2, heads=2, text_layers=1)
    space, info = pretrain.pretrained_siglip(cfg)
    assert isinstance(space, SiglipSpace) and space.n_tokens == 64 and space.feature_dim == 32
    reloaded = SiglipSpace.load(space.source)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert torch.equal(reloaded.encode(x), space.encode(x))
    assert info["probe"]["vqa"]["n"]["total"] == 10 * 5


def test_judge_trains_and_scores_held_out_renders():
    cfg = judge_mod.JudgeConfig(pool=24, held_out=10, steps=2, batch=8)
    judge, info = judge_mod.pretrained_judge(cfg)
    assert info["held_out"]["n"]["total"] == 50 and 0 <= info["held_out"]["total_acc"] <= 100
    assert judge.features(torch.zeros(3, 3, 64, 64, dtype=torch.uint8)).shape == (3, 256)


def test_cli_pretrain_prints_quality(cli, monkeypatch):
    @dataclass(frozen=True)
    class ToyVQ(pretrain.VQPretrainConfig):
        pool: int = 24
        held_out: int = 30
        probe_train: int = 20
        batch: int = 8

    monkeypatch.setitem(pretrain.STAND_INS, "cpu-vq", ToyVQ)
    code, out, err = cli("pretrain", "vq", "--steps", 2)
    assert code == 0, err
    # a sentence, as every command ends on: what is ready, how long it took, what it reads
    assert out.startswith("cpu's vq stand-in is ready (pretrained in ") and "dB" in out and "{" not in out
    code, _, err = cli("pretrain", "vq", "--steps", 0)
    assert code == 2 and "--steps 0" in err


def test_cli_pretrain_builds_the_presets_stand_in(cli, monkeypatch):
    """`--preset cpu2` pretrains the stand-in cpu2's runs load (its style and detail weight), under
    the cache key they look up; the paper preset has no stand-in, an unknown preset is refused."""
    built = []
    monkeypatch.setattr(pretrain, "pretrained_vq", lambda cfg, progress, rebuild: built.append(cfg) or (None, {}))
    code, _, err = cli("pretrain", "vq", "--preset", "cpu2", "--steps", 3)
    assert code == 0, err
    assert built[0].detail_weight == 4 and built[0].style["hand_scale"] == 3.0 and built[0].steps == 3
    from uvlm.suites.presets import PRESETS

    assert replace(built[0], steps=800) == pretrain.stand_in_config(PRESETS["cpu2"]["data"]["vq"])
    code, _, err = cli("pretrain", "siglip", "--preset", "paper")
    assert code == 2 and "real siglip encoder" in err and "Traceback" not in err
    code, _, err = cli("pretrain", "judge", "--preset", "cpu3")
    assert code == 2 and "unknown preset 'cpu3'" in err


@pytest.mark.parametrize("preset", ["cpu", "cpu2", "paper"])
def test_preset_judge_is_the_one_its_runs_evaluate_with(tmp_path, preset):
    """The judge `uvlm pretrain judge --preset` and the demo build is keyed by the style that
    evaluation reads back from the run's test-set folder (one test image is rendered here)."""
    from uvlm.data.folder import build_dataset
    from uvlm.data.mixture import MixtureConfig
    from uvlm.suites.presets import PRESETS, stand_in_configs
    from uvlm.train.build import manifest_style

    test = {**PRESETS[preset]["data"]["test"], "n_vqa": 1, "n_generation": 0}
    build_dataset(MixtureConfig(**test), tmp_path / "test", workers=1)
    judge = stand_in_configs(preset, ("judge",))["judge"]
    assert judge == judge_mod.JudgeConfig(style=manifest_style(tmp_path / "test"))


def test_detail_weighted_reconstruction_and_cache_keys():
    import torch.nn.functional as F

    from uvlm.vision.pretrain import VQPretrainConfig, _reconstruction_loss, cache_key

    x = torch.zeros(1, 3, 16, 16)
    x[..., 8, :] = 1.0  # a thin line on a flat background
    recon = x.clone()
    on_line, off_line = recon.clone(), recon.clone()
    on_line[..., 8, 3] -= 0.5
    off_line[..., 2, 3] += 0.5
    plain = [_reconstruction_loss(r, x, 0.0) for r in (on_line, off_line)]
    assert plain[0] == plain[1] == F.l1_loss(on_line, x) + F.mse_loss(on_line, x)
    weighted = [_reconstruction_loss(r, x, 4.0) for r in (on_line, off_line)]
    assert weighted[0] > 2 * weighted[1], "an error on the line costs more than one on the background"
    # a neutral later field leaves the key (and the cached stand-ins) as they were
    assert "detail_weight" not in cache_key(VQPretrainConfig())
    assert cache_key(VQPretrainConfig(detail_weight=4.0))["detail_weight"] == 4.0


def test_stand_in_specs_change_pretraining_fields(cache_dir):
    """`cpu-vq:{...}` names a variant stand-in: its own cache entry, the planner reads its shape
    without training it, and bad settings are one clear error."""
    from uvlm.errors import UvlmError
    from uvlm.train.memory import space_tokens
    from uvlm.vision.load import load_space

    toy = "pool: 24, held_out: 30, probe_train: 20, steps: 3, batch: 8"
    spec = f"cpu-vq:{{{toy}, channel_multiplier: [1, 2, 2], style: {{size: 64, hand_scale: 2}}}}"
    assert space_tokens(spec) == (256, 8, 512) and not cache_dir.exists()
    space = load_space(spec)
    assert space.n_tokens == 256
    assert pretrain.stand_in_config(spec).style["hand_scale"] == 2
    assert pretrain.cache_key(pretrain.stand_in_config("cpu-vq")) == pretrain.cache_key(pretrain.VQPretrainConfig())
    assert space_tokens(f"cpu-siglip:{{patch_size: 16, {toy}}}")[0] == 16
    # one config, one key: 2 and 2.0, a partial style and the full one it stands for
    same = [pretrain.cache_key(pretrain.stand_in_config(s)) for s in (
        "cpu-vq:{detail_weight: 4, style: {size: 64, hand_scale: 2}}",
        "cpu-vq:{detail_weight: 4.0, style: {size: 64, detail_scale: 1.0, face_radius: 0.4, hand_scale: 2.0}}")]
    assert same[0] == same[1]
    for bad, says in (("cpu-vq:{stepz: 3}", "no field 'stepz'"), ("cpu-vq:{steps: many}", "steps must be"),
                      ("cpu-vq:steps=3", "YAML mapping"), ("cpu-vq:{style: {size: 64, hands: 2}}", "bad style"),
                      ("cpu-siglip:{style: {size: 64, hand_scale: 9}}", "hand scale 9"),
                      ("cpu-siglip:{patch_size: 0}", "patch_size must be"),
                      ("cpu-siglip:{patch_size: 7}", "must divide the image size"),
                      ("cpu-vq:{channel_multiplier: []}", "channel_multiplier must be"),
                      ("cpu-vq:{lr: 1e-3}", "1.0e-3")):
        with pytest.raises(UvlmError, match=says):
            load_space(bad)


def test_pretraining_runs_on_the_fixed_thread_count_whatever_the_caller_set(tmp_path):
    from uvlm.device import PRETRAIN_THREADS

    seen = []
    torch.set_num_threads(2)
    try:
        pretrain.train_vq(pretrain.VQPretrainConfig(**TOY), tmp_path,
                          progress=lambda *_: seen.append(torch.get_num_threads()))
        judge_mod.train_judge(judge_mod.JudgeConfig(pool=24, held_out=10, steps=2, batch=8), tmp_path,
                              progress=lambda *_: seen.append(torch.get_num_threads()))
        assert seen and set(seen) == {PRETRAIN_THREADS} and torch.get_num_threads() == 2  # restored after
    finally:
        torch.set_num_threads(1)


def test_stand_ins_pretrain_side_by_side_in_child_processes(cache_dir):
    from uvlm.suites.presets import pretrain_stand_ins

    configs = {"vq": pretrain.VQPretrainConfig(**TOY), "judge": judge_mod.JudgeConfig(pool=24, held_out=10, steps=2,
                                                                                     batch=8)}
    lines = []
    pretrain_stand_ins(configs, workers=2, echo=lines.append)
    assert sorted(line.split(":")[0] for line in lines) == ["  judge", "  vq"]
    assert all("reads held-out renders" in line for line in lines)
    # the children wrote into this process's cache: loading here trains nothing
    _, info = pretrain.pretrained_vq(configs["vq"], progress=lambda *_: pytest.fail("retrained"))
    assert info["tokens"] == 64


def test_a_stand_in_rebuilds_bit_for_bit_and_a_shipped_copy_loads_only_when_intact(tmp_path, monkeypatch):
    """What the package ships (uvlm/assets: the cpu2 VQ stand-in and judge) is a cache entry that
    uvlm rebuilds bit for bit from its recorded config: shown on a toy config here, built in two
    empty caches. A shipped entry is copied into an empty cache instead of trained, and only while
    its files match their digests."""
    import shutil
    from dataclasses import asdict
    from pathlib import Path

    from uvlm.suites.presets import stand_in_configs
    from uvlm.vision import cache as cache_mod

    cfg = pretrain.VQPretrainConfig(**TOY)
    digests = []
    for name in ("a", "b"):
        monkeypatch.setenv("UVLM_CACHE", str(tmp_path / name))
        pretrain.pretrained_vq(cfg)
        entry = next((tmp_path / name / "pretrained-vq").glob("[!.]*"))
        digests.append(json.loads((entry / "meta.json").read_text())["files"])
    assert digests[0] == digests[1]  # the same bytes from the same config

    shipped = tmp_path / "assets"
    monkeypatch.setattr(cache_mod, "SHIPPED", shipped)
    shutil.copytree(entry, shipped / "pretrained-vq" / entry.name)
    monkeypatch.setattr(pretrain, "train_vq", lambda *a, **k: pytest.fail("trained although a copy is shipped"))
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "c"))
    pretrain.pretrained_vq(cfg)
    assert json.loads((tmp_path / "c" / "pretrained-vq" / entry.name / "meta.json").read_text())["files"] == digests[0]
    damaged = shipped / "pretrained-vq" / entry.name / "vq.pt"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "d"))
    with pytest.raises(pytest.fail.Exception, match="trained although"):
        pretrain.pretrained_vq(cfg)  # a damaged copy is not used: it is built again

    # the package's own copies are the cpu2 preset's, intact
    package_assets = Path(cache_mod.__file__).resolve().parents[1] / "assets"
    configs = stand_in_configs("cpu2", ("vq", "siglip", "judge"))
    for kind, config in (("pretrained-vq", pretrain.cache_key(configs["vq"])),
                         ("pretrained-siglip", pretrain.cache_key(configs["siglip"])),
                         ("judge", asdict(configs["judge"]))):
        entry = package_assets / kind / cache_mod.config_hash(config)
        assert cache_mod._verified(entry) is not None, entry
