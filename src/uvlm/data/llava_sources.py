"""Table 2's training data: LLaVA-1.5's two files, each with image-generation records added.

The paper reverses ShareGPT4V-PT's image-caption pairs into generation records (the caption,
behind one of three "generate an image" prompts, asks for the image) and adds 150K of them to
LLaVA's 558K pretraining records (stage 1) and 200K to its 665K instruction records (stage 2).
SAM images are skipped. The authors' release takes the first 350K such pairs in file order;
the paper says it samples them: `select` chooses (`first`, the default, or `random`).

`build_llava_data` writes into one folder:
    stage1.json, stage2.json   LLaVA's JSON-list layout, each record's `image` relative to images/
    generation.json            the generation records alone, in selection order
    images/                    links to the three image trees: pretrain/, instruct/, sharegpt4v/
    problems.jsonl             every record whose image is missing or unreadable
    manifest.json              settings, counts, sha256 of every input and output; written last
A record whose image is missing or unreadable stops the build with one line, or, with
`skip_bad_images`, is left out and listed (a generation record is then replaced by the next).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from uvlm import __version__
from uvlm.errors import UvlmError
from uvlm.io import atomic_write_json, atomic_write_text, make_folder

# Ours: the paper names three prompt forms but not their words.
GENERATION_PROMPTS = (
    "Generate an image of the following description: ",
    "Please create an image that matches this caption: ",
    "Draw a picture based on this text: ",
)
IMAGE_MARKER = "<image>"  # LLaVA's placeholder for an image in a turn
SOURCES = ("pretrain", "instruct", "sharegpt4v")  # the three image trees, as named under images/
SELECTIONS = ("first", "random")
CHECKS = ("open", "decode")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class LlavaDataConfig:
    """How the generation records are chosen and checked."""

    n_stage1: int = 150_000  # generation records added to the pretraining file
    n_stage2: int = 200_000  # and to the instruction file
    select: str = "first"  # first: in ShareGPT4V's file order (the release); random: seeded sample (the paper)
    seed: int = 0  # the random selection and each record's prompt form
    skip_bad_images: bool = False  # list and leave out records whose image is missing or unreadable
    check: str = "open"  # open: the file opens as an image (header); decode: every pixel decodes (slower)

    def validate(self) -> LlavaDataConfig:
        if self.n_stage1 < 0 or self.n_stage2 < 0:
            raise UvlmError(f"generation record counts must be >= 0 (got {self.n_stage1}, {self.n_stage2})")
        if self.select not in SELECTIONS:
            raise UvlmError(f"--select {self.select!r}: use first or random")
        if self.check not in CHECKS:
            raise UvlmError(f"--check {self.check!r}: use open or decode")
        return self


@dataclass(frozen=True)
class LlavaSources:
    """The user's copies: three JSON files and the folders their `image` paths are relative to."""

    sharegpt4v: Path  # share-captioner_coco_lcs_sam_1246k_1107.json
    sharegpt4v_images: Path  # the folder holding coco/, llava/, sam/, ... as its paths name them
    pretrain: Path  # blip_laion_cc_sbu_558k.json
    pretrain_images: Path  # LLaVA-Pretrain/images
    instruct: Path  # llava_v1_5_mix665k.json
    instruct_images: Path  # the folder holding coco/, gqa/, ocr_vqa/, textvqa/, vg/

    def image_root(self, source: str) -> Path:
        return {"pretrain": self.pretrain_images, "instruct": self.instruct_images,
                "sharegpt4v": self.sharegpt4v_images}[source]


def read_records(path: Path, what: str) -> list[dict]:
    """A LLaVA-layout JSON list, each record with its conversation; one clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UvlmError(f"{what} {path} does not exist; give your local copy of the file")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UvlmError(f"{what} {path} is not a JSON file ({type(e).__name__}); give the file as downloaded") from None
    if not isinstance(records, list):
        raise UvlmError(f"{what} {path} must hold a JSON list of records, as LLaVA's files do")
    for i, r in enumerate(records):
        if not (isinstance(r, dict) and isinstance(r.get("conversations"), list) and r["conversations"]):
            raise UvlmError(f"{what} {path}: record {i} has no conversations list; is this a LLaVA-layout file?")
    return records


def caption(record: dict) -> str:
    """The caption of a ShareGPT4V-PT record: its first answer."""
    answers = [t.get("value", "") for t in record["conversations"] if t.get("from") == "gpt"]
    if not answers or not answers[0].strip():
        raise UvlmError(f"ShareGPT4V record {record.get('id')!r} has no caption (no answer turn)")
    return answers[0].strip()


def is_sam(image: str) -> bool:
    """SAM images are left out of the generation data, as in the paper."""
    return image.replace("\\", "/").lstrip("./").startswith("sam/")


def image_problem(path: Path, check: str) -> str | None:
    """Why an image cannot be used ("missing", "unreadable: ..."), or None."""
    from PIL import Image

    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            if check == "decode":
                im.load()
    except Exception as e:  # PIL raises many kinds for a bad file; all mean the same here
        return f"unreadable: {type(e).__name__}"
    return None


def generation_record(record: dict, prompt: str) -> dict:
    """A ShareGPT4V caption reversed: the prompt plus the caption asks for the record's image."""
    return {"id": f"gen-{record.get('id', '')}", "task": "generation", "image": f"sharegpt4v/{record['image']}",
            "conversations": [{"from": "human", "value": prompt + caption(record)},
                              {"from": "gpt", "value": IMAGE_MARKER}]}


def _relocated(record: dict, source: str) -> dict:
    """An understanding (or text-only) record with its image path under images/<source>/."""
    out = dict(record)
    if "image" in out:
        out["image"] = f"{source}/{out['image']}"
    return out


class _Checker:
    """Checks images once each and lists the problems; refuses at the first when not skipping."""

    def __init__(self, sources: LlavaSources, cfg: LlavaDataConfig, update: Callable[[int, str], None]):
        self.sources, self.cfg, self.update = sources, cfg, update
        self.problems: list[dict] = []
        self.checked = 0
        self.seen: dict[Path, str | None] = {}  # an image several records show is opened once

    def ok(self, record: dict, source: str, file: str) -> bool:
        image = record.get("image")
        if image is None:  # text-only records need nothing
            return True
        path = self.sources.image_root(source) / image
        if path not in self.seen:
            self.seen[path] = image_problem(path, self.cfg.check)
            self.checked += 1
            if self.checked % 1000 == 0:
                self.update(self.checked, f"{len(self.problems)} problems")
        problem = self.seen[path]
        if problem is None:
            return True
        where = path
        if not self.cfg.skip_bad_images:
            raise UvlmError(f"{file} record {record.get('id')!r}: image {where} is {problem}; fix your copy of "
                            "the images, or pass --skip-bad-images to leave such records out (they are listed)")
        self.problems.append({"file": file, "id": record.get("id"), "image": str(where), "problem": problem})
        return False


def select_generation(pool: list[dict], cfg: LlavaDataConfig, keep: Callable[[dict], bool]) -> list[dict]:
    """n_stage1 + n_stage2 ShareGPT4V records, SAM left out, in file order or a seeded random
    order, each passing `keep` (its image is checked); fewer only when the pool runs out."""
    candidates = [r for r in pool if isinstance(r.get("image"), str) and not is_sam(r["image"])]
    if cfg.select == "random":
        random.Random(cfg.seed).shuffle(candidates)
    wanted = cfg.n_stage1 + cfg.n_stage2
    chosen: list[dict] = []
    for r in candidates:
        if len(chosen) == wanted:
            break
        if keep(r):
            chosen.append(r)
    if len(chosen) < wanted:
        raise UvlmError(f"ShareGPT4V holds {len(chosen)} usable non-SAM records, fewer than the {wanted} asked for; "
                        "lower --n-stage1/--n-stage2")
    return chosen


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dump(records: list[dict]) -> str:
    # one record a line inside the list: diffable, and json.load reads it as LLaVA's files
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"


def _link_images(out: Path, sources: LlavaSources) -> None:
    images = out / "images"
    images.mkdir(exist_ok=True)
    for source in SOURCES:
        link, target = images / source, sources.image_root(source).resolve()
        if link.is_symlink() or link.exists():
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            link.unlink()
        link.symlink_to(target, target_is_directory=True)


def build_llava_data(sources: LlavaSources, out: Path, cfg: LlavaDataConfig = LlavaDataConfig(),
                     update: Callable[[int, str], None] = lambda done, note="": None) -> dict:
    """Write Table 2's training files into `out` (see the module docstring); return the manifest."""
    cfg.validate()
    make_folder(out, "LLaVA training data")
    for source in SOURCES:
        if not sources.image_root(source).is_dir():
            raise UvlmError(f"the {source} image folder {sources.image_root(source)} does not exist; "
                            f"give the folder that {source}'s image paths are relative to")
    (out / MANIFEST).unlink(missing_ok=True)  # a folder without a manifest is an unfinished build
    checker = _Checker(sources, cfg, update)
    # every file read before any image is checked: a wrong path fails at once, not hours in
    pool = read_records(sources.sharegpt4v, "ShareGPT4V file")
    files = {"pretrain": read_records(sources.pretrain, "pretrain file"),
             "instruct": read_records(sources.instruct, "instruct file")}
    chosen = select_generation(pool, cfg, lambda r: checker.ok(r, "sharegpt4v", "sharegpt4v"))
    prompts = random.Random(f"prompts-{cfg.seed}")
    generation = [generation_record(r, prompts.choice(GENERATION_PROMPTS)) for r in chosen]
    stages = {}
    for stage, source, added in (("stage1", "pretrain", generation[:cfg.n_stage1]),
                                 ("stage2", "instruct", generation[cfg.n_stage1:])):
        originals = files[source]
        kept = [_relocated(r, source) for r in originals if checker.ok(r, source, source)]
        stages[stage] = (kept + added, {"understanding": sum("image" in r for r in kept),
                                        "text_only": sum("image" not in r for r in kept),
                                        "generation": len(added), "left_out": len(originals) - len(kept),
                                        "total": len(kept) + len(added)})
    update(checker.checked, f"{len(checker.problems)} problems")
    _link_images(out, sources)
    files = {"generation.json": _dump(generation), "stage1.json": _dump(stages["stage1"][0]),
             "stage2.json": _dump(stages["stage2"][0]),
             "problems.jsonl": "".join(json.dumps(p) + "\n" for p in checker.problems)}
    for name, text in files.items():
        atomic_write_text(out / name, text)
    manifest = {
        "uvlm_version": __version__, "config": asdict(cfg), "generation_prompts": list(GENERATION_PROMPTS),
        "counts": {stage: counts for stage, (_, counts) in stages.items()},
        "images_checked": checker.checked, "problems": len(checker.problems),
        "image_roots": {s: str(sources.image_root(s).resolve()) for s in SOURCES},
        "inputs": {name: {"path": str(Path(p).resolve()), "sha256": _digest(Path(p))}
                   for name, p in (("sharegpt4v", sources.sharegpt4v), ("pretrain", sources.pretrain),
                                   ("instruct", sources.instruct))},
        "outputs": {name: hashlib.sha256(text.encode()).hexdigest() for name, text in files.items()},
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
