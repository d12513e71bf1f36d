"""Vision side: real-format loaders on tiny random models, VQ lookup, caches, judges, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uvlm.data.folder import build_dataset
from uvlm.data.mixture import MixtureConfig
from uvlm.errors import UvlmError
from uvlm.eval.image_metrics import domain_fid_kid, inception_fid
from uvlm.vision import cache
from uvlm.vision.judge import JudgeCNN, PixelJudge, answers_from_classes, score_against
from uvlm.vision.siglip import SiglipSpace
from uvlm.vision.space import load_images
from uvlm.vision.vq import VQSpace, lookup

from .helpers import TINY_VQ, tiny_siglip_folder, write_llamagen


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


@pytest.fixture
def vq(tmp_path) -> VQSpace:
    return VQSpace.load(write_llamagen(tmp_path / "vq_ds16_c2i.pt", TINY_VQ))


def test_llamagen_checkpoint_loads_with_l2_lookup(vq):
    x = images(3, 32)
    ids, codes = vq.quantize(x)
    grid = TINY_VQ.grid
    assert ids.shape == (3, grid * grid) and codes.shape == (3, grid * grid, 8)
    assert ids.max() < 64
    assert torch.allclose(codes.norm(dim=-1), torch.ones(3, grid * grid), atol=1e-5)
    # The ids are LlamaGen's: nearest normalised code to the normalised encoder output,
    # which Janus's own (unnormalised) quantizer would not give in general.
    z = vq.model.quant_conv(vq.model.encoder(x.float() / 127.5 - 1)).permute(0, 2, 3, 1).flatten(1, 2)
    e = F.normalize(vq.model.quantize.embedding.weight, dim=-1)
    brute = torch.cdist(F.normalize(z, dim=-1), e).argmin(-1)
    assert torch.equal(ids, brute)
    assert torch.equal(vq.embed_targets(ids), codes)


def test_vq_decode_shapes_and_roundtrip_save(vq, tmp_path):
    ids, _ = vq.quantize(images(2, 32))
    pixels = vq.decode(ids)
    assert pixels.shape == (2, 3, 32, 32) and pixels.dtype == torch.uint8
    vq.save(tmp_path / "again.pt")
    again = VQSpace.load(tmp_path / "again.pt")
    assert torch.equal(again.decode(ids), pixels)
    assert again.fingerprint != "" and VQSpace.load(tmp_path / "again.pt").fingerprint == again.fingerprint


def test_lookup_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    z, book = torch.randn(5, 7, 8, generator=g), torch.randn(40, 8, generator=g)
    ids, codes = lookup(z, book)
    expected = torch.cdist(F.normalize(z, dim=-1).flatten(0, 1), F.normalize(book, dim=-1)).argmin(-1)
    assert torch.equal(ids.flatten(), expected)
    assert torch.allclose(codes.norm(dim=-1), torch.ones(5, 7))


@pytest.mark.parametrize("problem, message", [
    ("missing", "does not exist"),
    ("corrupt", "not a readable torch checkpoint"),
    ("no-model", "no 'model' state dict"),
    ("wrong-layout", "does not match the VQ architecture"),
])
def test_bad_vq_checkpoints(tmp_path, problem, message):
    path = tmp_path / "vq.pt"
    if problem == "corrupt":
        write_llamagen(path, TINY_VQ)
        path.write_bytes(path.read_bytes()[:500])
    elif problem == "no-model":
        torch.save({"weights": {}}, path)
    elif problem == "wrong-layout":
        write_llamagen(path, TINY_VQ, with_sidecar=False)  # VQ-16 assumed: shapes disagree
    with pytest.raises(UvlmError, match=message):
        VQSpace.load(path)


def test_siglip_folder_loads_second_to_last_layer(tmp_path):
    space = SiglipSpace.load(str(tiny_siglip_folder(tmp_path / "siglip")))
    x = images(2, 64)  # resized to the model's 32 px
    feats = space.encode(x)
    assert feats.shape == (2, 16, 32) and space.n_tokens == 16 and space.feature_dim == 32
    pixels = (x.float() / 255 - 0.5) / 0.5
    pixels = F.interpolate(pixels, size=(32, 32), mode="bicubic", antialias=True)
    hidden = space.model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert torch.allclose(feats, hidden[-2], atol=1e-5)
    assert not torch.allclose(feats, hidden[-1])
    assert torch.equal(space.embed_targets(feats), feats)
    with pytest.raises(NotImplementedError):
        space.decode(torch.zeros(1, 16, dtype=torch.long))


def test_bad_siglip_source(tmp_path):
    with pytest.raises(UvlmError, match="cannot load SigLIP"):
        SiglipSpace.load(str(tmp_path / "nothing"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(UvlmError, match="cannot load SigLIP"):
        SiglipSpace.load(str(tmp_path / "junk"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("UVLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_artifact_cache_reuses_detects_corruption_and_rebuilds(cache_dir):
    calls = []

    def build(folder: Path) -> dict:
        calls.append(1)
        (folder / "weights.bin").write_bytes(b"x" * 100)
        return {"quality": 1}

    entry, meta = cache.cached_artifact("thing", {"a": 1}, build)
    assert meta["info"] == {"quality": 1} and len(calls) == 1
    cache.cached_artifact("thing", {"a": 1}, build)
    assert len(calls) == 1, "a verified entry is reused"
    cache.cached_artifact("thing", {"a": 2}, build)
    assert len(calls) == 2, "another config is another entry"
    (entry / "weights.bin").write_bytes(b"x" * 99)  # truncated
    cache.cached_artifact("thing", {"a": 1}, build)
    assert len(calls) == 3 and (entry / "weights.bin").stat().st_size == 100
    (entry / "meta.json").unlink()  # an entry whose meta never got written is partial
    cache.cached_artifact("thing", {"a": 1}, build)
    assert len(calls) == 4


def test_failed_build_leaves_nothing(cache_dir):
    def build(folder: Path) -> dict:
        (folder / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.cached_artifact("thing", {"a": 1}, build)
    assert [p.name for p in (cache_dir / "thing").iterdir() if not p.name.endswith(".lock")] == []


def test_feature_cache_keys_and_invalidation(cache_dir, tmp_path, vq):
    ds = tmp_path / "ds"
    build_dataset(MixtureConfig(seed=0, n_vqa=10, n_caption=10, n_generation=10, size=64), ds)
    first = cache.cached_features(vq, ds, batch_size=4)
    assert first["features"].shape == (10, TINY_VQ.grid**2, 8)
    assert first["targets"].dtype == torch.int64
    direct_ids, _ = vq.quantize(load_images([ds / "images" / f"{i:06d}.png" for i in range(10)]))
    assert torch.equal(first["targets"], direct_ids)
    entries = list((cache_dir / "features").glob("[!.]*"))
    assert len(entries) == 1
    # Corrupt the stored tensors: detected by the digest, recomputed, same values.
    f = entries[0] / "targets.npy"
    kept = first["targets"].clone()
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    again = cache.cached_features(vq, ds)
    assert torch.equal(again["targets"], kept)
    # Read memory-mapped, not loaded: the tensor's memory is a mapping of the entry's file.
    def mapped_from(tensor: torch.Tensor, name: str) -> bool:
        for line in Path("/proc/self/maps").read_text().splitlines():
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= tensor.data_ptr() < high and line.endswith(name):
                return True
        return False

    assert mapped_from(again["features"], "features.npy") and mapped_from(again["targets"], "targets.npy")
    # 16-bit storage is an entry of its own, with the same values to 16-bit precision.
    half = cache.cached_features(vq, ds, dtype="float16")
    assert half["features"].dtype == torch.float16
    assert torch.allclose(half["features"].float(), again["features"], atol=1e-3)
    assert torch.equal(half["targets"], kept)
    assert len(list((cache_dir / "features").glob("[!.]*"))) == 2
    # Another dataset or another encoder is another entry.
    other = tmp_path / "other"
    build_dataset(MixtureConfig(seed=1, n_vqa=10, n_caption=10, n_generation=10, size=64), other)
    cache.cached_features(vq, other)
    vq.model.quantize.embedding.weight.data.mul_(-1)
    vq._digest = ""
    cache.cached_features(vq, ds)
    assert len(list((cache_dir / "features").glob("[!.]*"))) == 4


def test_a_feature_cache_entry_is_encoded_in_fp32_whatever_autocast_the_caller_is_in(cache_dir, tmp_path):
    """The first reader of an entry may be a bf16 run's evaluation; every precision reads its bytes."""
    space = SiglipSpace.load(str(tiny_siglip_folder(tmp_path / "siglip")))
    ds = tmp_path / "ds"
    build_dataset(MixtureConfig(seed=0, n_vqa=4, n_caption=0, n_generation=0, size=64), ds)
    pixels = load_images([ds / n for n in cache.dataset_images(ds)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached = cache.cached_features(space, ds)["features"]
        under_autocast = space.encode(pixels)
    direct = space.encode(pixels)
    assert cached.dtype == torch.float32 and torch.equal(cached, direct)
    assert not torch.equal(under_autocast.float(), direct)  # autocast would have changed them


def test_judge_plumbing_at_toy_size(tmp_path):
    judge = PixelJudge(JudgeCNN(32))
    judge.save(tmp_path)
    loaded = PixelJudge.load(tmp_path)
    x = images(4, 32)
    assert torch.equal(loaded.features(x), judge.features(x))
    answers = loaded.answers(x)
    assert len(answers) == 4 and set(answers[0]) == {"time", "weather", "weather_pos", "battery",
                                                      "battery_pos"}
    (tmp_path / "judge.safetensors").write_bytes(b"garbage")
    with pytest.raises(UvlmError, match="missing or corrupt"):
        PixelJudge.load(tmp_path)


def test_judged_answers_are_scored_on_named_attributes_only():
    truth = {"hour": 3, "minute": 0, "second": 0, "weather": "rainy", "weather_pos": "top-left",
             "battery": 40, "battery_pos": "bottom-right", "face_color": [1, 2, 3]}
    classes = {"hour": np.array([3]), "minute": np.array([0]), "second": np.array([0]),
               "weather": np.array([0]), "weather_pos": np.array([0]), "battery": np.array([40]),
               "battery_pos": np.array([3])}
    answers = answers_from_classes(classes)
    assert answers[0]["weather"] == "sunny" and answers[0]["time"] == "03:00:00"
    full = score_against(answers, [truth])
    assert full["weather_acc"] == 0.0 and full["total_acc"] == 80.0
    only_time = score_against(answers, [truth], named=[["time", "battery"]])
    assert only_time["total_acc"] == 100.0 and only_time["weather_acc"] is None


def test_domain_fid_kid_plumbing():
    judge = PixelJudge(JudgeCNN(32))
    real, same, other = images(40, 32, 0), images(40, 32, 1), images(40, 32, 2) // 4
    near = domain_fid_kid(real, same, judge.features)
    far = domain_fid_kid(real, other, judge.features)
    assert near["n_real"] == 40 and far["fid"] > near["fid"] >= 0
    with pytest.raises(UvlmError, match="at least 2"):
        domain_fid_kid(real[:1], same, judge.features)


def test_inception_fid_never_downloads(tmp_path):
    with pytest.raises(UvlmError, match="--inception-weights"):
        inception_fid(images(2, 32), images(2, 32), None)
    with pytest.raises(UvlmError, match="do not exist"):
        inception_fid(images(2, 32), images(2, 32), tmp_path / "none.pth")


def test_spaces_by_name(tmp_path):
    from uvlm.vision.load import load_space

    assert load_space(f"vq:{write_llamagen(tmp_path / 'vq.pt', TINY_VQ)}").n_tokens == TINY_VQ.grid**2
    assert load_space(f"siglip:{tiny_siglip_folder(tmp_path / 's')}").feature_dim == 32
    for bad in ("clip", "siglip:", "vq", "cpu-clip"):
        with pytest.raises(UvlmError, match="unknown encoder"):
            load_space(bad)


def test_concurrent_builders_of_one_entry_agree(cache_dir):
    import threading
    import time as _time

    results, builds = [], []

    def build(folder: Path) -> dict:
        builds.append(folder)
        _time.sleep(0.2)  # the others arrive while this one builds
        (folder / "weights.bin").write_bytes(b"same bytes")
        return {"ok": True}

    def worker():
        entry, meta = cache.cached_artifact("race", {"a": 1}, build)
        results.append((entry, (entry / "weights.bin").read_bytes(), meta["info"]))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len({r[0] for r in results}) == 1
    assert all(r[1] == b"same bytes" and r[2] == {"ok": True} for r in results)
    assert len(builds) == 1, "the others waited for the first build instead of computing it again"
    left = sorted(p.name for p in (cache_dir / "race").iterdir())
    assert left == sorted([results[0][0].name, f".{results[0][0].name}.lock"])  # no half-built folders


def test_a_shipped_entry_is_copied_in_only_under_the_entrys_lock(cache_dir, tmp_path, monkeypatch):
    """Copying a shipped entry in replaces what is at the entry: done without the lock, a second
    job could remove the copy a first had just placed and was reading. While a builder holds
    the lock, a job waits; it then finds the entry and copies nothing."""
    import json
    import threading

    from uvlm.io import exclusive
    from uvlm.vision.space import file_digest

    monkeypatch.setattr(cache, "SHIPPED", tmp_path / "assets")
    config = {"a": 2}
    name = cache.config_hash(config)
    shipped = tmp_path / "assets" / "race" / name
    shipped.mkdir(parents=True)
    (shipped / "weights.bin").write_bytes(b"shipped")
    files = {"weights.bin": file_digest(shipped / "weights.bin")}
    meta = {"kind": "race", "config": config, "info": {}, "files": files}
    (shipped / "meta.json").write_text(json.dumps(meta))

    def never(_: Path) -> dict:
        raise AssertionError("built although a copy is shipped")

    lock = cache_dir / "race" / f".{name}.lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    found: list = []
    with exclusive(lock, "test"):
        job = threading.Thread(target=lambda: found.append(cache.cached_artifact("race", config, never)))
        job.start()
        job.join(timeout=1.0)
        assert job.is_alive() and not (cache_dir / "race" / name).exists()  # it waits; it copied nothing
    job.join(timeout=30)
    entry, got = found[0]
    assert (entry / "weights.bin").read_bytes() == b"shipped" and got["files"] == meta["files"]


def test_embedding_judge_reads_content_not_length():
    """Probes on unit-length tokens: the same answers for real features at any scale, content
    still read when features are pulled most of the way to their mean, and one answer set for
    a constant vector (the judge of a model that draws the mean image)."""
    from dataclasses import asdict

    import numpy as np

    from uvlm.data.smartwatch import sample_attributes
    from uvlm.eval.probe import attribute_labels, score_against
    from uvlm.vision.judge import EmbeddingJudge

    rng = np.random.default_rng(0)
    attrs = [asdict(sample_attributes(rng)) for _ in range(700)]
    # 4 tokens of 24 dims: a dominant shared direction, plus one direction per attribute value
    tokens, dim = 4, 24
    common = 40 * rng.normal(size=dim) / np.sqrt(dim)
    keys = {k: rng.normal(size=(n, tokens, dim)) for k, n in
            (("hour", 12), ("minute", 60), ("second", 60), ("weather", 3), ("weather_pos", 4),
             ("battery", 101), ("battery_pos", 4))}
    labels = attribute_labels(attrs)
    x = common + sum(3 * keys[k][labels[k]] for k in keys) + 0.3 * rng.normal(size=(700, tokens, dim))
    judge = EmbeddingJudge.fit(x[:500], attrs[:500])
    held, held_attrs = x[500:], attrs[500:]
    base = judge.answers(held)
    assert score_against(base, held_attrs)["weather_acc"] > 95
    for scale in (0.3, 0.9, 2.0):
        assert judge.answers(scale * held) == base
    mean = held.mean(0, keepdims=True)
    pulled = mean + 0.2 * (held - mean)
    assert score_against(judge.answers(pulled), held_attrs)["weather_acc"] > 90
    constant = judge.answers(np.repeat(mean, len(held), axis=0))
    assert all(a == constant[0] for a in constant)


def test_a_llamagen_training_checkpoint_with_its_args_loads(tmp_path):
    """LlamaGen saves {"model", "optimizer", "steps", "args": argparse.Namespace}: the weights-only
    loader refused the Namespace; it is allowed by name, nothing else is."""
    import argparse

    from .helpers import llamagen_state

    path = tmp_path / "vq_ds16_c2i.pt"
    torch.save({"model": llamagen_state(TINY_VQ), "steps": 400000,
                "args": argparse.Namespace(codebook_size=16384, codebook_embed_dim=8)}, path)
    write_llamagen(tmp_path / "plain.pt", TINY_VQ)  # the same weights without the extras
    path.with_suffix(".json").write_bytes((tmp_path / "plain.json").read_bytes())
    x = images(2, 32)
    assert torch.equal(VQSpace.load(path).quantize(x)[0], VQSpace.load(tmp_path / "plain.pt").quantize(x)[0])


def test_relative_weights_are_found_through_uvlm_weights(tmp_path, monkeypatch):
    """The paper preset names `vq:checkpoints/vq_ds16_c2i.pt`; a job started in another folder (a
    cluster's) finds it under $UVLM_WEIGHTS, and without it the error says where it looked."""
    from uvlm.errors import UvlmError
    from uvlm.vision.load import load_space

    weights = tmp_path / "weights"
    (weights / "checkpoints").mkdir(parents=True)
    write_llamagen(weights / "checkpoints" / "vq_ds16_c2i.pt", TINY_VQ)
    elsewhere = tmp_path / "job"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(UvlmError, match=r"read from .*job, or from \$UVLM_WEIGHTS"):
        load_space("vq:checkpoints/vq_ds16_c2i.pt")
    monkeypatch.setenv("UVLM_WEIGHTS", str(weights))
    assert load_space("vq:checkpoints/vq_ds16_c2i.pt").vocab_size == TINY_VQ.num_embeddings
