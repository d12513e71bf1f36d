"""The paper's model names, parsed into architectures and back.

    SigLIP_u, VQ_u          understanding only (input space, no generation)
    VQ_g, SigLIP_g          generation only (output space, no understanding)
    SigLIP-VQ, VQ-VQ, ...   unified: input space - output space
    ...-D                   detached: separate understanding and generation adapters
    SigLIP*, VQ*            the affine distortion on the understanding input
    LLaVA, CLIP-CLIP, CLIP-VQ   Table 2: LLaVA-1.5 (CLIP input; LLaVA is CLIP_u) and its unified forms
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from uvlm.errors import UvlmError

SPACES = {"siglip": "SigLIP", "vq": "VQ", "clip": "CLIP"}
_NAME = re.compile(r"^(SigLIP|VQ|CLIP)(\*?)(?:_(u|g)|-(SigLIP|VQ|CLIP)(-D)?)$")
ALIASES = {"LLaVA": "CLIP_u"}  # Table 2 calls the understanding-only CLIP model by its family's name


@dataclass(frozen=True)
class Architecture:
    """Which spaces a model reads and writes, and how its adapters relate."""

    input_space: str | None  # "siglip" | "vq"; None for generation-only models
    output_space: str | None  # None for understanding-only models
    affine: bool = False  # distort the understanding input
    detached: bool = False  # separate adapters even though the spaces match

    @property
    def tasks(self) -> str:
        if self.input_space and self.output_space:
            return "both"
        return "understanding" if self.input_space else "generation"

    @property
    def shared_adapter(self) -> bool:
        """One adapter for both roles: the paper's default when the spaces match."""
        return self.tasks == "both" and self.input_space == self.output_space and not self.detached

    @property
    def name(self) -> str:
        star = "*" if self.affine else ""
        if self.tasks == "understanding":
            plain = f"{SPACES[self.input_space]}{star}_u"
            return next((alias for alias, name in ALIASES.items() if name == plain), plain)
        if self.tasks == "generation":
            return f"{SPACES[self.output_space]}_g"
        return f"{SPACES[self.input_space]}{star}-{SPACES[self.output_space]}" + ("-D" if self.detached else "")


def parse_name(name: str) -> Architecture:
    """Architecture of a paper name such as `VQ-VQ-D`, `SigLIP*_u` or `VQ_g`."""
    m = _NAME.match(ALIASES.get(name.strip(), name.strip()))
    if m is None:
        raise UvlmError(f"unknown model name {name!r}; use e.g. SigLIP_u, VQ_g, VQ-VQ, SigLIP-VQ, "
                        "VQ-VQ-D, SigLIP*-SigLIP, or Table 2's LLaVA, CLIP-CLIP, CLIP-VQ")
    first, star, only, second, detached = m.groups()
    first_space = first.lower()
    if only == "g":
        if star:
            raise UvlmError(f"{name}: the affine map distorts the understanding input, which a _g model lacks")
        return Architecture(None, first_space)
    if only == "u":
        return Architecture(first_space, None, affine=bool(star))
    second_space = second.lower()
    if detached and first_space != second_space:
        raise UvlmError(f"{name}: -D only applies when input and output spaces match "
                        "(mismatched spaces always have separate adapters)")
    return Architecture(first_space, second_space, affine=bool(star), detached=bool(detached))
