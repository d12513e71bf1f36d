"""Dataset folders: same seed same bytes, any worker count, resumable, refusing foreign data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from uvlm.data.folder import build_dataset, export_llava, read_records
from uvlm.data.gallery import gallery
from uvlm.data.mixture import MixtureConfig
from uvlm.errors import UvlmError

CFG = MixtureConfig(seed=11, n_vqa=150, n_caption=150, n_generation=100, size=64, detail_scale=2.0)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "one-worker"
    build_dataset(CFG, out, workers=1)
    return out


def test_same_seed_same_bytes_for_any_worker_count(built, tmp_path):
    other = tmp_path / "two-workers"
    build_dataset(CFG, other, workers=2)
    assert tree(other) == tree(built)
    assert len([k for k in tree(built) if k.startswith("images/")]) == 150


def test_different_seed_different_data(built, tmp_path):
    other = tmp_path / "seed12"
    build_dataset(MixtureConfig(**{**CFG.to_dict(), "seed": 12}), other)
    assert (other / "records.jsonl").read_bytes() != (built / "records.jsonl").read_bytes()


def test_folder_contents(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["config"] == CFG.to_dict()
    assert manifest["counts"] == {"vqa": 150, "caption": 150, "generation": 100, "images": 150}
    recs = read_records(built)
    assert len(recs) == 400 and {r["task"] for r in recs} == {"vqa", "caption", "generation"}
    assert recs[0]["image"] == recs[150]["image"] == recs[300]["image"]  # one image per record group
    assert Image.open(built / recs[0]["image"]).size == (64, 64)
    assert not list(built.glob(".*")), "no build marker or temp file is left behind"


def test_interrupted_build_leaves_no_partial_file_and_resumes(built, tmp_path):
    out = tmp_path / "interrupted"

    def stop_after_first_chunk(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(CFG, out, workers=1, progress=stop_after_first_chunk)
    assert not (out / "manifest.json").exists() and not (out / "records.jsonl").exists()
    with pytest.raises(UvlmError, match="interrupted"):
        read_records(out)
    written = list((out / "images").iterdir())
    assert 0 < len(written) < 150 and all(p.suffix == ".png" for p in written)
    for p in written:
        Image.open(p).load()  # every file present is a whole image
    build_dataset(CFG, out, workers=2)
    assert tree(out) == tree(built)


def copy_of(built: Path, to: Path) -> Path:
    for name, data in tree(built).items():
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        (to / name).write_bytes(data)
    return to


def test_what_a_kill_leaves_at_any_moment_is_resumed(built, tmp_path):
    """A kill while the build marker is being written leaves only its temporary: the folder is
    empty to the rerun. A repair killed after the manifest went resumes as a repair: an image
    that is a whole PNG but the wrong picture is made again, not kept."""
    out = tmp_path / "marker-only"
    out.mkdir()
    (out / ".uvlm-build.json.abcd1234.tmp").write_text("{")
    build_dataset(CFG, out)
    assert tree(out) == tree(built)

    repair = copy_of(built, tmp_path / "repair")
    (repair / "images/000001.png").write_bytes((built / "images/000002.png").read_bytes())
    (repair / ".uvlm-build.json").write_text(json.dumps({"config": CFG.to_dict(), "repair": True}))
    (repair / "manifest.json").unlink()
    build_dataset(CFG, repair)
    assert tree(repair) == tree(built)

    not_ours = tmp_path / "not-ours"
    (not_ours / ".cache.tmp").mkdir(parents=True)  # a folder, not a killed write's file
    with pytest.raises(UvlmError, match="not empty"):
        build_dataset(CFG, not_ours)


def test_folder_with_another_dataset_is_refused(built, tmp_path):
    before = tree(built)
    with pytest.raises(UvlmError, match="differs in seed"):
        build_dataset(MixtureConfig(**{**CFG.to_dict(), "seed": 99}), built)
    assert tree(built) == before
    foreign = tmp_path / "foreign"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    (foreign / "sub" / ".draft.tmp").write_text("mine too")  # named like a killed write's file
    before = tree(foreign)
    with pytest.raises(UvlmError, match="not empty"):
        build_dataset(CFG, foreign)
    assert tree(foreign) == before  # refused as it stands: nothing in it swept


def test_a_builder_waits_for_one_that_is_ending_and_finds_its_dataset(built, tmp_path):
    """A builder ending writes its manifest, then removes its marker: a second one that looked
    without the lock between those two could see neither and refuse the folder (CI, 2026-12-05).
    Here the first holds the lock while the folder shows neither; the second must wait for it."""
    import threading

    from uvlm.io import exclusive

    out = copy_of(built, tmp_path / "ending")
    manifest = (out / "manifest.json").read_bytes()
    (out / "manifest.json").unlink()
    found: list = []
    with exclusive(out, "dataset build"):
        second = threading.Thread(target=lambda: found.append(_outcome(lambda: build_dataset(CFG, out))))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and not found, found  # it waits for the lock, it does not judge
        (out / "manifest.json").write_bytes(manifest)
    second.join(timeout=30)
    assert found == [json.loads(manifest)]
    assert tree(out) == tree(built)


def _outcome(call):
    try:
        return call()
    except UvlmError as e:
        return str(e)


def test_rebuilding_a_complete_folder_is_a_no_op(built):
    before = tree(built)
    build_dataset(CFG, built)
    assert tree(built) == before


def test_tampered_records_are_detected(built, tmp_path):
    copy = copy_of(built, tmp_path / "copy")
    with open(copy / "records.jsonl", "a") as f:
        f.write("{}\n")
    with pytest.raises(UvlmError, match="does not match its manifest"):
        read_records(copy)


def test_export_llava_and_gallery(built, tmp_path):
    n = export_llava(built, tmp_path / "llava.json")
    items = json.loads((tmp_path / "llava.json").read_text())
    assert n == len(items) == 400
    assert set(items[0]) == {"id", "task", "image", "conversations"}
    assert Path(items[0]["image"]).is_file()
    assert gallery(built, tmp_path / "g.png", n=6, columns=3) == 6
    sheet = Image.open(tmp_path / "g.png")
    assert sheet.width > 3 * 100 and sheet.height > 2 * 100
