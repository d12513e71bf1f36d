"""Decoding: batched with a KV cache (ours), and the plain reference loop (the authors').

Both take prompts that end where the model's answer begins and produce, per prompt, the
answer text and, when the model opens an image with `<boi>` (or the prompt already ends
with it), its N vision tokens:
- text steps: the LM head's choice (greedy);
- image steps: the generation head's output for the hidden state, fed back through the
  generation adapter as the next input. VQ ids are chosen greedily or by seeded sampling
  (temperature, top-k), optionally with classifier-free guidance against an unconditional
  prompt; SigLIP outputs are the head's embedding rescaled to the training targets' length at
  its position (`UnifiedVLM.as_target`), the scale the model was fed during training.

Batched decoding left-pads the prompts and passes explicit position ids, so every row sees
exactly the positions it would see alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import StaticCache

from uvlm.errors import UvlmError
from uvlm.model.prompt import TEXT, Encoded
from uvlm.model.unified import Batch, UnifiedVLM

# A compiled step is specialised to its cache length: rounded up to a multiple of this, batches
# whose prompts differ by a few tokens reuse one compilation (later positions are masked anyway).
COMPILED_LENGTH_STEP = 64


@dataclass
class Sampling:
    """How VQ ids are chosen. temperature 0 = greedy."""

    temperature: float = 0.0
    top_k: int = 0
    cfg_scale: float = 1.0  # > 1: classifier-free guidance against the unconditional prompt
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise UvlmError(f"--temperature {self.temperature} must be a number >= 0 (0: greedy)")
        if self.top_k < 0:
            raise UvlmError(f"--top-k {self.top_k} must be >= 0 (0: all ids)")


@dataclass
class Output:
    text_ids: list[int] = field(default_factory=list)
    vision: torch.Tensor | None = None  # (N,) ids or (N, D) embeddings, when an image was made


def _choose(logits: torch.Tensor, s: Sampling, g: torch.Generator | None) -> torch.Tensor:
    if s.temperature <= 0:
        return logits.argmax(-1)
    logits = logits / s.temperature
    if s.top_k:
        kth = logits.topk(min(s.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(-1)


class _Stepper:
    """Runs the LLM over left-padded inputs, the prompts first, then one position at a time,
    keeping a KV cache, preallocated (a growing one would copy every layer's keys and values at
    each step).

    `compile_step`: each one-position step through torch.compile (CUDA graphs on a GPU), which
    matters where a step's time is its kernel launches, not its arithmetic. A compiled step has
    one shape throughout: its attention mask covers all `max_len` positions from the start
    (the prompts' padding masked; later positions are hidden by the causal mask until they are
    written), and its cache is the one the previous batch of that shape used, reset, so that
    CUDA graphs replay on the same buffers. The eager step's mask grows with the sequence, as
    flash-attention reads the mask's length as the number of keys to attend to."""

    def __init__(self, model: UnifiedVLM, embeds: torch.Tensor, mask: torch.Tensor, max_len: int,
                 compile_step: bool = False):
        self.model = model
        self.compiled = compile_step
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        self.position = positions[:, -1:]
        self._step = self._run
        if compile_step:
            # batches of prompts a little longer or shorter share a compiled step
            max_len = -(-max_len // COMPILED_LENGTH_STEP) * COMPILED_LENGTH_STEP
            attention = model.llm.config._attn_implementation
            if attention not in ("sdpa", "eager"):
                raise UvlmError(f"a compiled decode step needs sdpa or eager attention, not {attention}; set "
                                "model.attention: sdpa, or train.compile: false")
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], max_len - mask.shape[1])], dim=1)
            mode = "reduce-overhead" if embeds.device.type == "cuda" else None  # CUDA graphs on a GPU
            self._step = torch.compile(self._run, mode=mode, dynamic=False)
        self.mask = mask
        self.cache = _static_cache(model, embeds, max_len, reuse=compile_step)
        self.hidden, self.logits = self._run(embeds, positions)

    def _run(self, embeds, positions):
        # The decoder alone: the last position's normed hidden state, and logits for it only.
        llm = self.model.llm
        out = llm.get_decoder()(inputs_embeds=embeds, attention_mask=self.mask, position_ids=positions,
                                cache=self.cache, use_cache=True)
        last = out.last_hidden_state[:, -1]
        return last, llm.get_output_embeddings()(last).float()

    def step(self, embeds: torch.Tensor) -> None:
        """Append one position (B, 1, H) to every row."""
        if not self.compiled:
            self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.position = self.position + 1
        self.hidden, self.logits = self._step(embeds, self.position)


# The cache of the last compiled decode: one at a time (a 7B model's is gigabytes).
_REUSED: dict[tuple, StaticCache] = {}


def _static_cache(model: UnifiedVLM, embeds: torch.Tensor, max_len: int, reuse: bool) -> StaticCache:
    """A preallocated KV cache for `max_len` positions of this batch; with `reuse`, the previous
    one of the same model, shape, dtype and device, emptied."""
    if not reuse:
        return StaticCache(config=model.llm.config, max_cache_len=max_len)
    key = (id(model.llm), embeds.shape[0], max_len, embeds.dtype, embeds.device)
    cache = _REUSED.get(key)
    if cache is None:
        _REUSED.clear()
        cache = _REUSED[key] = StaticCache(config=model.llm.config, max_cache_len=max_len)
    else:
        cache.reset()
    return cache


def _left_pad(prompts: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    kinds = torch.full((len(prompts), length), TEXT, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for i, p in enumerate(prompts):
        n = len(p)
        ids[i, length - n:] = torch.from_numpy(p.input_ids)
        kinds[i, length - n:] = torch.from_numpy(p.kinds.astype("int64"))
        mask[i, length - n:] = 1
    return ids, kinds, mask


@torch.no_grad()
def decode_batch(model: UnifiedVLM, prompts: list[Encoded], und_features: torch.Tensor | None, *,
                 pad_id: int, eos_id: int, boi_id: int, max_new_tokens: int = 24, n_vision: int = 0,
                 sampling: Sampling | None = None, uncond: list[Encoded] | None = None,
                 compile_step: bool = False) -> list[Output]:
    """Decode a batch with a KV cache. und_features: (n_und_slots, D) packed in slot order.

    `uncond`: the unconditional prompts for classifier-free guidance (one per prompt).
    `compile_step`: run each one-position step through torch.compile (compiled once per batch
    shape: worth it for long generations, such as hundreds of image tokens on a GPU).
    """
    sampling = sampling or Sampling()
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(sampling.seed) if sampling.temperature > 0 else None
    b = len(prompts)
    guided = uncond is not None and sampling.cfg_scale != 1.0
    rows = prompts + (uncond if guided else [])
    ids, kinds, mask = _left_pad(rows, pad_id)
    if guided and und_features is not None:
        raise ValueError("classifier-free guidance applies to text-to-image prompts")
    batch = Batch(ids, mask, ids, kinds, und_features, None).to(device)
    stepper = _Stepper(model, model.embed(batch), batch.attention_mask, ids.shape[1] + max_new_tokens + n_vision,
                       compile_step)
    embed_tokens = model.llm.get_input_embeddings()
    done = torch.zeros(b, dtype=torch.bool, device=device)
    # A prompt that already ends in <boi> (the caller opened the image) starts in image mode.
    in_image = torch.tensor([int(p.input_ids[-1]) == boi_id and n_vision > 0 for p in prompts], device=device)
    text = torch.zeros(b, max_new_tokens, dtype=torch.long, device=device)
    n_text = torch.zeros(b, dtype=torch.long, device=device)
    vision: torch.Tensor | None = None  # (b, n_vision) ids or (b, n_vision, D), allocated on first use
    n_vis = torch.zeros(b, dtype=torch.long, device=device)
    rows_b = torch.arange(b, device=device)
    for _ in range(max_new_tokens + n_vision):
        if done.all():
            break
        h = stepper.hidden
        next_embeds = torch.zeros(len(rows), h.shape[-1], dtype=h.dtype, device=device)
        image_rows = in_image & ~done
        text_rows = ~in_image & ~done
        if image_rows.any():
            out = model.generation_head(h)
            if model.generation_head.discrete:
                logits = out.float()
                if guided:
                    logits = logits[b:] + sampling.cfg_scale * (logits[:b] - logits[b:])
                chosen = _choose(logits[:b], sampling, g)
            else:
                chosen = model.as_target(out[:b], n_vis.clamp_max(n_vision - 1))
            targets = torch.cat([chosen, chosen]) if guided else chosen
            fed = model.generate_input(targets).to(h.dtype)
            if vision is None:
                vision = torch.zeros((b, n_vision, *chosen.shape[1:]), dtype=chosen.dtype, device=device)
            idx = rows_b[image_rows]
            vision[idx, n_vis[idx]] = chosen[idx]
            n_vis[idx] += 1
            next_embeds[idx] = fed[idx]
            if guided:
                next_embeds[idx + b] = fed[idx + b]
            done |= image_rows & (n_vis == n_vision)
        if text_rows.any():
            tokens = stepper.logits[:b].argmax(-1)
            idx = rows_b[text_rows]
            text[idx, n_text[idx]] = tokens[idx]
            n_text[idx] += 1
            emb = embed_tokens(tokens).to(h.dtype)
            next_embeds[idx] = emb[idx]
            if guided:
                next_embeds[idx + b] = emb[idx]
            finished = text_rows & ((tokens == eos_id) | (n_text >= max_new_tokens))
            done |= finished
            in_image |= text_rows & ~finished & (tokens == boi_id) & (n_vision > 0)
        if done.all():
            break
        stepper.step(next_embeds[:, None])
    outputs = []
    for i in range(b):
        v = vision[i, : int(n_vis[i])].cpu() if vision is not None and int(n_vis[i]) > 0 else None
        outputs.append(Output(text[i, : int(n_text[i])].tolist(), v))
    return outputs


@torch.no_grad()
def decode_reference(model: UnifiedVLM, prompt: Encoded, und_features: torch.Tensor | None, *,
                     eos_id: int, boi_id: int, max_new_tokens: int = 24, n_vision: int = 0) -> Output:
    """The authors' way: batch size 1, the whole sequence re-run for every new token. Greedy."""
    device = next(model.parameters()).device
    ids = torch.from_numpy(prompt.input_ids).long()[None]
    kinds = torch.from_numpy(prompt.kinds.astype("int64"))[None]
    batch = Batch(ids, torch.ones_like(ids), ids, kinds, und_features, None).to(device)
    embeds = model.embed(batch)
    out = Output()
    vision: list[torch.Tensor] = []
    while True:
        result = model.llm(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                           device=device), output_hidden_states=True, use_cache=False)
        last = out.text_ids[-1] if out.text_ids else int(prompt.input_ids[-1])
        if vision or (last == boi_id and n_vision > 0):
            head = model.generation_head(result.hidden_states[-1][:, -1])
            target = head.argmax(-1) if model.generation_head.discrete else model.as_target(head, len(vision))
            vision.append(target[0].cpu())
            nxt = model.generate_input(target)
            if len(vision) == n_vision:
                break
        else:
            token = int(result.logits[0, -1].argmax())
            out.text_ids.append(token)
            if token == eos_id or len(out.text_ids) >= max_new_tokens:
                break
            nxt = model.llm.get_input_embeddings()(torch.tensor([token], device=device))
        embeds = torch.cat([embeds, nxt[:, None].to(embeds.dtype)], dim=1)
    if vision:
        out.vision = torch.stack(vision)
    return out
