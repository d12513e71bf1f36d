"""A small fake CelebA in each layout `uvlm.data.celeba` reads, for tests and for timing the
CelebA path where the real data is absent.

Each image is a drawn "face" whose pixels show its attributes (black or brown hair, glasses,
a beard, a hat, a necklace, a necktie; men with a squarer, darker face), so that a tiny model
can learn them. Attributes are drawn with CelebA-like dependence (neckties and beards mostly on
men), so some combinations have no image, as in the real data.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from uvlm.data.celeba import ATTRIBUTES

LAYOUTS = ("official", "torchvision", "drive", "parquet")
# The 33 attributes of the real files that the study does not use still appear in the header.
_OTHERS = ("5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs")
WIDTH, HEIGHT = 178, 218  # the aligned images' size


def fake_attributes(n: int, seed: int = 0) -> np.ndarray:
    """(n, 7) booleans in ATTRIBUTES order."""
    rng = np.random.default_rng(seed)
    male = rng.random(n) < 0.45
    a = {
        "Black_Hair": rng.random(n) < 0.3,
        "Eyeglasses": rng.random(n) < 0.2,
        "No_Beard": ~(male & (rng.random(n) < 0.4)),
        "Male": male,
        "Wearing_Hat": rng.random(n) < 0.15,
        "Wearing_Necklace": ~male & (rng.random(n) < 0.35),
        "Wearing_Necktie": male & (rng.random(n) < 0.3),
    }
    return np.stack([a[k] for k in ATTRIBUTES], axis=1)


def draw_face(attrs: np.ndarray, seed: int) -> Image.Image:
    a = dict(zip(ATTRIBUTES, attrs, strict=True))
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (WIDTH, HEIGHT), tuple(int(v) for v in rng.integers(150, 240, 3)))
    d = ImageDraw.Draw(img)
    skin = (150, 110, 90) if a["Male"] else (235, 190, 170)
    jitter = int(rng.integers(-6, 7))
    face = (49 + jitter, 60, 129 + jitter, 160)
    (d.rectangle if a["Male"] else d.ellipse)(face, fill=skin)
    hair = (15, 15, 15) if a["Black_Hair"] else (120, 80, 40)
    d.rectangle((face[0] - 4, 40, face[2] + 4, 70), fill=hair)
    if a["Wearing_Hat"]:
        d.rectangle((face[0] - 14, 22, face[2] + 14, 52), fill=(200, 30, 160))
    if a["Eyeglasses"]:
        for x in (face[0] + 12, face[0] + 46):
            d.rectangle((x, 92, x + 22, 106), outline=(0, 0, 0), width=4)
    if not a["No_Beard"]:
        d.rectangle((face[0] + 8, 130, face[2] - 8, 160), fill=(60, 40, 30))
    if a["Wearing_Necklace"]:
        d.arc((face[0] + 5, 150, face[2] - 5, 195), 20, 160, fill=(250, 210, 0), width=5)
    if a["Wearing_Necktie"]:
        d.polygon([(89 + jitter, 165), (80 + jitter, 215), (98 + jitter, 215)], fill=(210, 20, 20))
    return img


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_fake_celeba(folder: Path, layout: str = "official", n: int = 60, seed: int = 0) -> Path:
    """Write `n` fake images and their attributes in `layout`; return the folder to pass as
    --celeba. Partitions follow the official proportions (about 80/10/10)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    folder = Path(folder)
    attrs = fake_attributes(n, seed)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    part = np.where(np.arange(n) < 0.8 * n, 0, np.where(np.arange(n) < 0.9 * n, 1, 2))
    images = [_jpeg(draw_face(attrs[i], seed * 100_003 + i)) for i in range(n)]
    if layout == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = folder / "img_align+identity+attr"
        out.mkdir(parents=True, exist_ok=True)
        for k, split in enumerate(("train", "valid", "test")):
            idx = np.flatnonzero(part == k)
            cols = {"image": pa.array([{"bytes": images[i], "path": names[i]} for i in idx],
                                      pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                    "celeb_id": pa.array([int(i % 17) for i in idx], pa.int64())}
            cols.update({name: pa.array(attrs[idx, j].tolist(), pa.bool_()) for j, name in enumerate(ATTRIBUTES)})
            pq.write_table(pa.table(cols), out / f"{split}-00000-of-00001.parquet", row_group_size=16)
        return folder
    root = folder / "celeba" if layout == "torchvision" else folder
    sub = {"images": "img_align_celeba", "attributes": "list_attr_celeba.txt",
           "partition": "list_eval_partition.txt"}
    if layout == "drive":
        sub = {"images": "Img/img_align_celeba", "attributes": "Anno/list_attr_celeba.txt",
               "partition": "Eval/list_eval_partition.txt"}
    (root / sub["images"]).mkdir(parents=True, exist_ok=True)
    for name, data in zip(names, images, strict=True):
        (root / sub["images"] / name).write_bytes(data)
    header = [*_OTHERS[:3], *ATTRIBUTES[:4], *_OTHERS[3:], *ATTRIBUTES[4:]]  # not in our order, as in the real file
    rng = np.random.default_rng(seed + 1)
    rows = []
    for i, name in enumerate(names):
        value = {**{o: bool(rng.random() < 0.5) for o in _OTHERS}, **dict(zip(ATTRIBUTES, attrs[i], strict=True))}
        rows.append(name + " " + " ".join(" 1" if value[h] else "-1" for h in header))
    (root / sub["attributes"]).parent.mkdir(parents=True, exist_ok=True)
    (root / sub["attributes"]).write_text(f"{n}\n" + " ".join(header) + "\n" + "\n".join(rows) + "\n")
    (root / sub["partition"]).parent.mkdir(parents=True, exist_ok=True)
    (root / sub["partition"]).write_text("".join(f"{name} {p}\n" for name, p in zip(names, part, strict=True)))
    return folder
