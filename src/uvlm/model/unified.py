"""The unified VLM: any Hugging Face causal LM, driven through `inputs_embeds`.

Understanding: encoder features -> standardisation -> [affine distortion] -> understanding
adapter -> placed at the prompt's understanding slots. Generation: at each generation slot the
input is the target (a VQ code vector or a SigLIP feature), standardised, through the
generation adapter (the understanding adapter itself when shared), and the generation head
predicts that target from the hidden state one position earlier. Every row of the paper's tables is one
`Architecture` of this class.

A SigLIP-space head is trained with 1 - cosine, which leaves the length of its output free. So
a generated vector is rescaled to the mean length of the training targets at its position
(`target_norm`, fitted with the standardisations) before it is fed back or judged: fed back
raw, a short vector lands far from every target after standardisation, and decoding drifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uvlm.model.adapters import AffineDistortion, Standardize, default_adapter, make_adapter
from uvlm.model.heads import GenerationHead
from uvlm.model.names import Architecture
from uvlm.model.prompt import GENERATE, IGNORE, UNDERSTAND


@dataclass(frozen=True)
class SpaceInfo:
    """What the model needs to know of a vision space (no encoder weights)."""

    name: str
    feature_dim: int
    n_tokens: int
    discrete: bool
    vocab_size: int | None = None


@dataclass
class Batch:
    """A padded batch. Vision inputs are packed in slot order (row-major over the masks)."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L), IGNORE where no text loss
    kinds: torch.Tensor  # (B, L), TEXT / UNDERSTAND / GENERATE
    und_features: torch.Tensor | None  # (n_und_slots, D_in)
    gen_targets: torch.Tensor | None  # (n_gen_slots,) ids or (n_gen_slots, D_out)
    scored: torch.Tensor | None = None  # flat positions (b * L + p) whose hidden state predicts an answer token
    slots: torch.Tensor | None = None  # flat positions whose hidden state predicts a generation slot
    # a model that trains its encoder reads pixels instead of und_features: uint8 (n_images, 3, S, S),
    # and which of each image's N features fill slots (n_images, N) (a cut record keeps the first ones)
    und_images: torch.Tensor | None = None
    und_keep: torch.Tensor | None = None

    def positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scored, slots) flat positions, as `collate` precomputes them on the host (no device sync)."""
        if self.scored is not None and self.slots is not None:
            return self.scored, self.slots
        return predicting_positions(self.labels, self.kinds)

    def to(self, device) -> Batch:
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return Batch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


def predicting_positions(labels, kinds) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions b * L + p of the hidden states that predict an answer token (labels at p + 1)
    and a generation slot (kinds at p + 1): each head reads only those."""
    as_tensor = torch.as_tensor
    labels, kinds = as_tensor(labels), as_tensor(kinds)
    length = labels.shape[1]
    grid = torch.arange(labels.shape[0] * length, device=labels.device).view(-1, length)[:, :-1]
    return grid[labels[:, 1:] != IGNORE], grid[kinds[:, 1:] == GENERATE]


class UnifiedVLM(nn.Module):
    def __init__(self, arch: Architecture, llm: nn.Module, input_space: SpaceInfo | None,
                 output_space: SpaceInfo | None, *, understanding_adapter: str = "auto",
                 generation_adapter: str = "auto", affine_strength: float = 0.3, affine_seed: int = 0,
                 affine_place: str = "before", image_loss_weight: float | None = None,
                 codebook: torch.Tensor | None = None, standardize: bool = True, encoder: nn.Module | None = None):
        """`encoder`: the input space's tower when it trains (uvlm.model.encoder); None: the model
        reads features the frozen encoder computed."""
        super().__init__()
        self.arch = arch
        self.llm = llm
        self.encoder = encoder
        hidden = llm.config.hidden_size
        self.understanding_adapter = self.generation_adapter = self.generation_head = None
        self.affine = self.input_norm = self.output_norm = None
        self.affine_place = affine_place
        if arch.input_space:
            kind = default_adapter(arch.input_space) if understanding_adapter == "auto" else understanding_adapter
            self.understanding_adapter = make_adapter(kind, input_space.feature_dim, hidden)
            self.input_norm = Standardize(input_space.feature_dim) if standardize else None
            if arch.affine:
                if affine_place not in ("before", "after"):
                    raise ValueError(f"affine_place {affine_place!r} must be 'before' or 'after' the adapter")
                dim = input_space.feature_dim if affine_place == "before" else hidden
                self.affine = AffineDistortion(dim, affine_strength, affine_seed)
        if arch.output_space:
            if arch.shared_adapter:
                self.generation_adapter = self.understanding_adapter
                self.output_norm = self.input_norm
            else:
                kind = default_adapter(arch.output_space) if generation_adapter == "auto" else generation_adapter
                self.generation_adapter = make_adapter(kind, output_space.feature_dim, hidden)
                self.output_norm = Standardize(output_space.feature_dim) if standardize else None
            out_dim = output_space.vocab_size if output_space.discrete else output_space.feature_dim
            self.generation_head = GenerationHead(hidden, output_space.discrete, out_dim)
            if not output_space.discrete:
                # per position; 0 until fitted, and then generated vectors are used as the head gives them
                self.register_buffer("target_norm", torch.zeros(output_space.n_tokens))
            if output_space.discrete:
                if codebook is None:
                    raise ValueError("a VQ output space needs its codebook to feed generated ids back")
                # Frozen: generated ids re-enter the LLM as their L2-normalised code vectors.
                self.register_buffer("codebook", F.normalize(codebook.float(), dim=-1))
        if image_loss_weight is None:
            image_loss_weight = 0.2 if output_space is not None and output_space.discrete else 1.0
        self.image_loss_weight = image_loss_weight

    def adapter_parameters(self) -> list[nn.Parameter]:
        """Adapters and head: trained with their own learning rate. Shared modules once."""
        modules = {id(m): m for m in (self.understanding_adapter, self.generation_adapter,
                                      self.generation_head) if m is not None}
        return [p for m in modules.values() for p in m.parameters()]

    def fit_standardization(self, und_features: torch.Tensor | None, gen_targets: torch.Tensor | None) -> None:
        """Fit the fixed input standardisations on the training set's vision tensors
        (features (images, N, D); targets (images, N) ids or (images, N, D)), and the
        per-position target length of a continuous output space."""
        if self.input_norm is not None and und_features is not None:
            self.input_norm.fit(und_features)
        if self.output_norm is not None and self.output_norm is not self.input_norm and gen_targets is not None:
            self.output_norm.fit(self.target_embedding(gen_targets))
        if hasattr(self, "target_norm") and gen_targets is not None:
            rows = gen_targets.reshape(-1, len(self.target_norm), gen_targets.shape[-1])
            total = sum(rows[i:i + 4096].double().norm(dim=-1).sum(0) for i in range(0, len(rows), 4096))
            self.target_norm.copy_((total / len(rows)).float())

    def as_target(self, head_output: torch.Tensor, position: torch.Tensor | int) -> torch.Tensor:
        """A continuous head output as a target-space vector: rescaled to the training targets'
        mean length at its position (0..N-1, per row or one for all). VQ logits pass through."""
        if self.generation_head.discrete or not bool((self.target_norm > 0).all()):
            return head_output
        length = self.target_norm[position]
        length = length[:, None] if length.ndim else length
        return head_output / head_output.norm(dim=-1, keepdim=True).clamp_min(1e-12) * length.to(head_output.dtype)

    def understand(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features -> LLM input embeddings (the understanding path)."""
        features = features.float()  # features may be cached in 16 bits; the maps are fp32
        if self.input_norm is not None:
            features = self.input_norm(features)
        if self.affine is not None and self.affine_place == "before":
            features = self.affine(features)
        x = self.understanding_adapter(features)
        if self.affine is not None and self.affine_place == "after":
            x = self.affine(x)
        return x

    def target_embedding(self, targets: torch.Tensor) -> torch.Tensor:
        """Output-space vectors of targets: code vectors of VQ ids, SigLIP features as they are."""
        return self.codebook[targets] if self.generation_head.discrete else targets

    def generate_input(self, targets: torch.Tensor) -> torch.Tensor:
        """A generated (or teacher-forced) vision token -> the LLM's next input embedding."""
        x = self.target_embedding(targets).float()
        return self.generation_adapter(x if self.output_norm is None else self.output_norm(x))

    def embed(self, batch: Batch) -> torch.Tensor:
        """Token embeddings with the vision slots filled (a batch carries vision tensors exactly when it
        has slots of that kind, so nothing here waits on the device)."""
        embeds = self.llm.get_input_embeddings()(batch.input_ids)
        dtype = embeds.dtype
        features = batch.und_features
        if batch.und_images is not None:
            features = self.encoder(batch.und_images)[batch.und_keep]
        if features is not None:
            und = (batch.kinds == UNDERSTAND).unsqueeze(-1)
            embeds = embeds.masked_scatter(und, self.understand(features).to(dtype))
        elif self.encoder is not None and torch.is_grad_enabled():
            # A trained encoder idle in a batch without images encodes a blank image, at weight 0,
            # where a real one would be: its layers may be shard units, which every process must
            # gather (and reduce) in every forward and backward, in the same order
            size = self.encoder.image_size
            blank = self.understand(self.encoder(torch.zeros(1, 3, size, size, dtype=torch.uint8)))
            embeds = embeds + blank.sum().to(dtype) * 0.0
        if batch.gen_targets is not None:
            gen = (batch.kinds == GENERATE).unsqueeze(-1)
            embeds = embeds.masked_scatter(gen, self.generate_input(batch.gen_targets).to(dtype))
        return embeds

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Losses of a batch: text (answer tokens), image (generation slots) and their sum, as means
        over this batch, and the sums and counts behind them (`text_sum`, `n_text`, `image_sum`,
        `n_slots`) from which the training loop takes means over a whole global batch.

        The decoder runs alone, and each head reads only the positions it is scored on: the
        LM head the positions before answer tokens, the generation head those before
        generation slots. Full logits (batch x length x vocabulary, in fp32) would be the
        largest tensor of a 7B run and are never made. Parts that a batch does not use (the
        generation head in a VQA-only micro-batch) still join the graph at weight 0, so that
        data-parallel training sees every parameter in every step."""
        hidden = self.llm.get_decoder()(inputs_embeds=self.embed(batch), attention_mask=batch.attention_mask,
                                        use_cache=False).last_hidden_state
        flat = hidden.reshape(-1, hidden.shape[-1])
        scored, slots = batch.positions()
        targets = batch.labels.reshape(-1).index_select(0, scored + 1)  # the token after each scored position
        logits = self.llm.get_output_embeddings()(flat.index_select(0, scored)).float()
        text_sum = F.cross_entropy(logits, targets, reduction="sum")
        image_sum = self._unused(batch, text_sum)
        if self.generation_head is not None and batch.gen_targets is not None:
            image_sum = image_sum + self.generation_head.loss_sum(flat.index_select(0, slots), batch.gen_targets)
        n_text, n_slots = scored.numel(), slots.numel()
        text_loss, image_loss = text_sum / max(n_text, 1), image_sum / max(n_slots, 1)
        return {"loss": text_loss + self.image_loss_weight * image_loss, "text_loss": text_loss.detach(),
                "image_loss": image_loss.detach(), "text_sum": text_sum, "image_sum": image_sum,
                "n_text": n_text, "n_slots": n_slots}

    def _unused(self, batch: Batch, like: torch.Tensor) -> torch.Tensor:
        """Zero, joined to the parameters of the modules this batch does not use (a trained encoder
        and its adapter are joined in `embed`, by a blank image)."""
        idle = []
        if self.understanding_adapter is not None and batch.und_features is None and batch.und_images is None \
                and self.encoder is None:
            idle.append(self.understanding_adapter)
        if self.generation_head is not None and batch.gen_targets is None:
            idle += [self.generation_head, self.generation_adapter]
        params = [p for m in {id(m): m for m in idle}.values() for p in m.parameters() if p.requires_grad]
        zero = torch.zeros((), device=like.device, dtype=like.dtype)
        return zero + sum((p.sum() * 0.0 for p in params), zero)
