"""Small fake copies of Table 2's three data files, in the real schemas and folder trees, for
tests and the tiny preset (the real files are 1.2M, 558K and 665K records and ~100 GB of images).

Each image is a coloured shape on a coloured background, of varied, non-square size; its
caption and its questions name the colours and the shape, so a tiny model can learn them.
`fake_benchmarks` writes MME and POPE copies the same way, for `uvlm llava eval`.
ShareGPT4V's pool mixes COCO, LLaVA-pretraining (LCS) and SAM images; the instruction file
mixes COCO, GQA, OCR-VQA, TextVQA and Visual Genome images with text-only conversations.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from uvlm.io import atomic_write_bytes, atomic_write_text

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
           "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")
_SHAREGPT4V_TREES = ("coco/train2017", "llava/llava_pretrain/images", "sam/images")
_INSTRUCT_TREES = ("coco/train2017", "gqa/images", "ocr_vqa/images", "textvqa/train_images", "vg/VG_100K")


def _scene(rng: random.Random) -> dict:
    back, fore = rng.sample(sorted(COLOURS), 2)
    return {"background": back, "colour": fore, "shape": rng.choice(SHAPES),
            "size": (rng.choice((48, 64, 80)), rng.choice((40, 56, 64)))}


def _jpeg(scene: dict) -> bytes:
    import io

    w, h = scene["size"]
    im = Image.new("RGB", (w, h), COLOURS[scene["background"]])
    d = ImageDraw.Draw(im)
    box = (w * 0.25, h * 0.2, w * 0.75, h * 0.8)
    fill = COLOURS[scene["colour"]]
    if scene["shape"] == "circle":
        d.ellipse(box, fill=fill)
    elif scene["shape"] == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(w * 0.5, h * 0.2), (w * 0.25, h * 0.8), (w * 0.75, h * 0.8)], fill=fill)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _caption(scene: dict) -> str:
    return f"A {scene['colour']} {scene['shape']} on a {scene['background']} background."


def _captioned(record_id: str, image: str, request: str, scene: dict) -> dict:
    """A caption record in LLaVA's layout: the request and the image, then the scene's caption."""
    return {"id": record_id, "image": image, "conversations": [
        {"from": "human", "value": f"{request}\n<image>"}, {"from": "gpt", "value": _caption(scene)}]}


def _write_image(root: Path, rel: str, scene: dict) -> None:
    atomic_write_bytes(root / rel, _jpeg(scene), durable=False)


def fake_llava_sources(root: Path, n_sharegpt4v: int = 60, n_pretrain: int = 40, n_instruct: int = 40,
                       seed: int = 0) -> dict[str, Path]:
    """Write the three files and their image trees under `root`; return the paths that
    `uvlm llava data` takes (keys as LlavaSources' fields)."""
    rng = random.Random(seed)
    root = Path(root)
    paths = {"sharegpt4v": root / "sharegpt4v" / "share-captioner_coco_lcs_sam_1246k_1107.json",
             "sharegpt4v_images": root / "sharegpt4v",
             "pretrain": root / "LLaVA-Pretrain" / "blip_laion_cc_sbu_558k.json",
             "pretrain_images": root / "LLaVA-Pretrain" / "images",
             "instruct": root / "instruct" / "llava_v1_5_mix665k.json", "instruct_images": root / "instruct"}
    pool = []
    for i in range(n_sharegpt4v):
        scene, tree = _scene(rng), _SHAREGPT4V_TREES[i % 3]
        rel = f"{tree}/{i:012d}.jpg" if tree != "sam/images" else f"{tree}/sa_{i}.jpg"
        _write_image(paths["sharegpt4v_images"], rel, scene)
        pool.append(_captioned(f"{i:012d}", rel, "What do you see happening in this image?", scene))
    pretrain = []
    for i in range(n_pretrain):
        scene, rel = _scene(rng), f"{i // 10:05d}/{i:09d}.jpg"
        _write_image(paths["pretrain_images"], rel, scene)
        pretrain.append(_captioned(f"{i:09d}", rel, "Render a clear and concise summary of the photo.", scene))
    instruct = []
    for i in range(n_instruct):
        if i % 5 == 4:  # ShareGPT's text-only conversations
            instruct.append({"id": f"text-{i}", "model": "", "conversations": [
                {"from": "human", "value": "Name a primary colour."}, {"from": "gpt", "value": "Blue."}]})
            continue
        scene, tree = _scene(rng), _INSTRUCT_TREES[i % 5]
        rel = f"{tree}/{i:06d}.jpg"
        _write_image(paths["instruct_images"], rel, scene)
        instruct.append({"id": f"{i:06d}", "image": rel, "conversations": [
            {"from": "human", "value": "<image>\nWhat shape is in the picture?"},
            {"from": "gpt", "value": f"A {scene['shape']}."},
            {"from": "human", "value": "What colour is it?"},
            {"from": "gpt", "value": scene["colour"].capitalize() + "."}]})
    for key, records in (("sharegpt4v", pool), ("pretrain", pretrain), ("instruct", instruct)):
        atomic_write_text(paths[key], json.dumps(records, indent=1))
    return paths


def fake_benchmarks(root: Path) -> Path:
    """Small MME, POPE and GQA copies in their real schemas (lmms-eval's task code reads them), saved
    with datasets' save_to_disk as `uvlm llava eval --data-root` expects: ROOT/mme, ROOT/pope,
    ROOT/gqa and its images ROOT/gqa_images."""
    import datasets
    from PIL import Image

    datasets.disable_progress_bars()
    mme, pope, gqa, gqa_images = [], [], [], []
    for i in range(4):
        red = i % 2 == 0
        image = Image.new("RGB", (40, 30) if red else (30, 40), (220, 40, 40) if red else (40, 70, 220))
        for colour in ("red", "blue"):  # MME asks two questions of each image
            truth = "Yes" if (colour == "red") == red else "No"
            mme.append({"question_id": f"color/{i:03d}.png", "image": image, "category": "color", "answer": truth,
                        "question": f"Is the shape {colour}? Please answer yes or no."})
        pope.append({"id": str(i), "question_id": str(i), "question": "Is there a red shape in the image?",
                     "answer": "yes" if red else "no", "image_source": f"{i:012d}", "image": image,
                     "category": "adversarial"})
        gqa_images.append({"id": f"n{i:06d}", "image": image})
        gqa.append({"id": f"{i:08d}", "imageId": f"n{i:06d}", "question": "What colour is the shape?",
                    "answer": "red" if red else "blue", "fullAnswer": f"The shape is {'red' if red else 'blue'}."})
    for name, split, rows in (("mme", "test", mme), ("pope", "test", pope), ("gqa", "testdev", gqa),
                              ("gqa_images", "testdev", gqa_images)):
        datasets.DatasetDict({split: datasets.Dataset.from_list(rows)}).save_to_disk(str(root / name))
    return root
