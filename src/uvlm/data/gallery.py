"""A contact sheet of dataset samples with their ground truth printed under each."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from uvlm.data.folder import read_records
from uvlm.errors import UvlmError
from uvlm.io import atomic_write_bytes

_SHORT = {"top-left": "TL", "top-right": "TR", "bottom-left": "BL", "bottom-right": "BR"}


# CelebA attributes in a tile's caption: what is true of the face, shortly.
_FACE_SHORT = {"Black_Hair": "black hair", "Eyeglasses": "glasses", "No_Beard": None, "Male": None,
               "Wearing_Hat": "hat", "Wearing_Necklace": "necklace", "Wearing_Necktie": "necktie"}


def label_lines(attributes: dict) -> list[str]:
    a = attributes
    if "Male" in a:  # CelebA
        worn = [text for k, text in _FACE_SHORT.items() if text and a[k]]
        first = ("man" if a["Male"] else "woman") + ("" if a["No_Beard"] else ", beard")
        return [first, ", ".join(worn[:2]) or "-", ", ".join(worn[2:])]
    return [
        f"{a['hour']:02d}:{a['minute']:02d}:{a['second']:02d}",
        f"{a['weather']} {_SHORT[a['weather_pos']]}",
        f"{a['battery']}% {_SHORT[a['battery_pos']]}",
    ]


def contact_sheet(tiles: list[tuple[Image.Image, list[str]]], columns: int, tile: int = 160) -> Image.Image:
    """Grid of (image, caption lines) tiles; images are scaled to `tile` px (nearest)."""
    font = ImageFont.load_default(size=13)
    line_h = 16
    text_h = line_h * max(len(lines) for _, lines in tiles) + 4
    rows = (len(tiles) + columns - 1) // columns
    pad = 6
    sheet = Image.new("RGB", (columns * (tile + pad) + pad, rows * (tile + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (img, lines) in enumerate(tiles):
        x = pad + (k % columns) * (tile + pad)
        y = pad + (k // columns) * (tile + text_h + pad)
        sheet.paste(img.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        draw.rectangle((x - 1, y - 1, x + tile, y + tile), outline=(200, 200, 200))
        for i, line in enumerate(lines):
            draw.text((x + 2, y + tile + 2 + i * line_h), line, fill="black", font=font)
    return sheet


def gallery(root: Path, out: Path, n: int = 16, columns: int = 4) -> int:
    """Write a PNG grid of the first `n` distinct images of a dataset; return how many."""
    if n < 1 or columns < 1:
        raise UvlmError("--n and --columns must be >= 1")
    seen: dict[str, dict] = {}
    for record in read_records(root):
        seen.setdefault(record["image"], record["attributes"])
        if len(seen) == n:
            break
    tiles = []
    for image, attributes in seen.items():
        try:
            img = Image.open(Path(root) / image)
            img.load()
        except (OSError, ValueError):
            raise UvlmError(f"{Path(root) / image} is missing or not a valid image; "
                            "rebuild the dataset") from None
        tiles.append((img, label_lines(attributes)))
    buf = io.BytesIO()
    contact_sheet(tiles, min(columns, len(tiles))).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(Path(out), buf.getvalue())
    return len(tiles)
