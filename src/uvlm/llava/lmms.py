"""uvlm's model class for lmms-eval, registered as a plugin (entry point `lmms_eval.models`: uvlm).

    lmms-eval --model uvlm --model_args pretrained=RUN/stage2 --tasks mme ...

Each request's image is padded to a square of CLIP's mean colour and encoded as in training;
the prompt is the run's own chat template (`<image>` then the task's text in one human turn).
Decoding is greedy with a KV cache, and a task's `until` strings end the answer (the authors'
plugin ignored them). `loglikelihood` scores a continuation after the same prompt. This module
imports lmms-eval and is loaded by it only: `uvlm` itself never needs lmms-eval installed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from uvlm.eval.decode import decode_batch
from uvlm.model.prompt import IGNORE, IMAGE, TEXT, Encoded
from uvlm.model.unified import Batch


def cut_at(text: str, until: list[str]) -> str:
    """`text` up to the first of the stop strings (each honoured, as a task asks)."""
    ends = [text.find(stop) for stop in until if stop and stop in text]
    return text[:min(ends)] if ends else text


class UvlmLMM(lmms):
    """A trained uvlm run (a Table 2 model's stage 2) as an lmms-eval model."""

    def __init__(self, pretrained: str, batch_size: int | str = 1, max_new_tokens: int = 128, **kwargs) -> None:
        super().__init__()
        from uvlm.train.load import load_trained

        self.model, self.parts = load_trained(Path(pretrained))
        if self.parts.in_space is None:
            raise ValueError(f"{pretrained} is a generation-only model; lmms-eval asks questions about images")
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.tokenizer = self.parts.tokenizer

    def _visual(self, request: Instance):
        _, _, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        return visuals[0] if visuals else None  # LLaVA-1.5 reads one image a question

    def _prompt(self, context: str, image) -> tuple[Encoded, torch.Tensor | None]:
        """The encoded prompt of `context` (with the image's slots first, when there is one) and the
        image's features packed in slot order."""
        from uvlm.vision.clip import squared_batch

        if image is None:
            return self.parts.prompts.encode([{"from": "human", "value": context}]), None
        features = self.parts.in_space.encode(squared_batch(self.parts.in_space, [image.convert("RGB")]))
        encoded = self.parts.prompts.encode([{"from": "human", "value": f"{IMAGE}\n{context}"}])
        return encoded, features.reshape(-1, features.shape[-1])

    @torch.no_grad()
    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: dict[int, str] = {}
        for start in range(0, len(requests), self.batch_size):
            items = []
            for i, request in enumerate(requests[start:start + self.batch_size], start):
                context, gen_kwargs = request.args[0], dict(request.args[1])
                until = gen_kwargs.get("until") or []
                items.append((i, *self._prompt(context, self._visual(request)), [until] if isinstance(until, str)
                              else list(until), int(gen_kwargs.get("max_new_tokens", self.max_new_tokens))))
            # questions with and without an image are decoded apart (features are packed by slot)
            for group in ([it for it in items if it[2] is not None], [it for it in items if it[2] is None]):
                if group:
                    answers.update(self._decode(group))
        return [answers[i] for i in range(len(requests))]

    def _decode(self, group: list[tuple]) -> dict[int, str]:
        features = [feats for _, _, feats, _, _ in group if feats is not None]
        with self.parts.place.autocast():
            outputs = decode_batch(self.model, [encoded for _, encoded, _, _, _ in group],
                                   torch.cat(features).to(self.parts.place.device) if features else None,
                                   pad_id=self.tokenizer.pad_token_id, eos_id=self.tokenizer.eos_token_id,
                                   boi_id=self.parts.prompts.boi_id, max_new_tokens=max(it[4] for it in group))
        texts = {}
        for (i, _, _, stops, length), out in zip(group, outputs, strict=True):
            texts[i] = cut_at(self.tokenizer.decode(out.text_ids[:length], skip_special_tokens=True).strip(), stops)
        return texts

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results = []
        device = self.parts.place.device
        for request in requests:
            context, target, _, doc_id, task, split = request.args
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            prompt, feats = self._prompt(context, self._visual(request))
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([[*prompt.input_ids.tolist(), *cont]])
            labels = torch.tensor([[IGNORE] * len(prompt) + cont])
            kinds = torch.tensor([[*prompt.kinds.tolist(), *[TEXT] * len(cont)]])
            batch = Batch(ids, torch.ones_like(ids), labels, kinds, feats, None).to(device)
            with self.parts.place.autocast():
                hidden = self.model.llm.get_decoder()(inputs_embeds=self.model.embed(batch),
                                                      attention_mask=batch.attention_mask).last_hidden_state
                logits = self.model.llm.get_output_embeddings()(hidden[0, len(prompt) - 1:-1]).float()
            targets = torch.tensor(cont, device=device)
            logprob = torch.log_softmax(logits, -1).gather(1, targets[:, None]).sum().item()
            results.append((logprob, bool((logits.argmax(-1) == targets).all())))
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("uvlm answers single-turn benchmark questions (none of Table 2's is multi-round)")


MANIFEST = ModelManifest(model_id="uvlm", simple_class_path="uvlm.llava.lmms.UvlmLMM")
