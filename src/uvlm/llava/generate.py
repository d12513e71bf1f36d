"""CLIP-VQ's images: a trained Table 2 model draws for a file of prompts, on a contact sheet.

The paper reports no generation metric for Table 2; a sheet of samples shows what the model
learned to draw. Prompts are one a line; each is sent as a request in the generation records'
own words unless it already asks for an image. CLIP-CLIP writes CLIP features, which have no
pixel decoder: it is refused.
"""

from __future__ import annotations

from pathlib import Path

from uvlm.data.llava_sources import GENERATION_PROMPTS
from uvlm.errors import UvlmError
from uvlm.eval.decode import Sampling
from uvlm.eval.sheet import draw_sheet
from uvlm.io import read_text_file


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
    return draw_sheet(model, parts, prompts, out, sampling, open_image, columns)
