"""CLIP-VQ's images: a trained Table 2 model draws for a file of prompts, on a contact sheet.

The paper reports no generation metric for Table 2; a sheet of samples shows what the model
learned to draw. Prompts are one a line; each is sent as a request in the generation records'
own words unless it already asks for an image. CLIP-CLIP writes CLIP features, which have no
pixel decoder: it is refused.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import Image

from uvlm.data.gallery import contact_sheet
from uvlm.data.llava_sources import GENERATION_PROMPTS
from uvlm.errors import UvlmError
from uvlm.eval.decode import Sampling
from uvlm.eval.evaluate import generate_images
from uvlm.eval.sheet import short_lines
from uvlm.io import atomic_write_bytes, read_text_file


def read_prompts(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 file, each made a generation request."""
    lines = [line.strip() for line in read_text_file(path, "prompts file", "a text file, one prompt a line")
             .splitlines() if line.strip()]
    if not lines:
        raise UvlmError(f"prompts file {path} holds no prompt; write one caption a line")
    return [line if line.lower().startswith(("generate", "draw", "create", "please create")) else
            GENERATION_PROMPTS[0] + line for line in lines]


def generation_sheet(run: Path, prompts_file: Path, out: Path, sampling: Sampling | None = None,
                     open_image: bool = False, columns: int = 4) -> int:
    """Draw each prompt of `prompts_file` with the run's model into a sheet at `out`; return how
    many prompts gave a whole image (the others' tiles say the model did not open one)."""
    from uvlm.train.load import load_trained

    prompts = read_prompts(prompts_file)
    model, parts = load_trained(Path(run))
    if parts.out_space is None or not parts.out_space.discrete:
        raise UvlmError(f"{run} does not generate VQ ids (only CLIP-VQ's images can be decoded to pixels)")
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
