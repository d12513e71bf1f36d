"""A qualitative sheet: what the model draws for N prompts, and how it answers about N images."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from uvlm.data.folder import read_records
from uvlm.data.gallery import contact_sheet
from uvlm.io import atomic_write_bytes


def short_lines(text: str, width: int = 24) -> list[str]:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return [*lines, line][:4]


def draw_sheet(model, parts, prompts: list[str], out: Path, sampling=None, open_image: bool = False,
               columns: int = 4) -> int:
    """What `model` draws for each prompt (a generation request), decoded to pixels, under the
    prompt, on a contact sheet at `out`; return how many prompts gave a whole image (the others'
    tiles say the model did not open one). `parts`: the run's RunParts (a VQ output space)."""
    import torch

    from uvlm.eval.evaluate import generate_images

    records = [{"conversations": [{"from": "human", "value": p}]} for p in prompts]
    with torch.no_grad(), parts.place.autocast():
        vision = generate_images(model, parts, records, batch_size=8, sampling=sampling, open_image=open_image)
    tiles = []
    blank = Image.new("RGB", (parts.out_space.image_size,) * 2, (128, 128, 128))
    for prompt, ids in zip(prompts, vision, strict=True):
        if ids is None:
            tiles.append((blank, ["(no image opened)", *short_lines(prompt)[:3]]))
        else:
            pixels = parts.out_space.decode(ids[None])[0].permute(1, 2, 0).numpy()
            tiles.append((Image.fromarray(pixels), short_lines(prompt)))
    buf = io.BytesIO()
    contact_sheet(tiles, columns=min(columns, len(tiles)), tile=160).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(Path(out), buf.getvalue())
    return sum(ids is not None for ids in vision)


def qualitative_sheet(path: Path, ctx, rows: list[dict], gen: dict | None, n: int) -> None:
    """Generated images under their prompts, then test images with answer vs truth."""
    records = read_records(ctx.test_root)
    tiles = []
    if gen is not None and "pixels" in gen:
        prompts = [r for r in records if r["task"] == "generation"]
        for r, img in zip(prompts[:n], gen["pixels"][:n], strict=False):
            text = r["conversations"][0]["value"].split(" smart watch", 1)[-1]
            tiles.append((Image.fromarray(img.permute(1, 2, 0).numpy()), short_lines("drew:" + text)))
    by_id = {r["id"]: r for r in records}
    for row in rows[:n]:
        image = Image.open(ctx.test_root / by_id[row["id"]]["image"]).convert("RGB")
        tiles.append((image, [row["attribute"], f"said: {row['answer'][:20]}", f"true: {row['ground_truth']}"]))
    if not tiles:
        return
    buf = io.BytesIO()
    contact_sheet(tiles, columns=min(6, len(tiles)), tile=128).save(buf, format="PNG", optimize=True)
    atomic_write_bytes(Path(path), buf.getvalue())
