"""Our chat template, and the token layout of a record.

    <s>[system prompt ]USER: <image>\\nWhat is the weather?\\nASSISTANT: sunny</s>USER: ...\\nASSISTANT: ...</s>

- `<image>` in a human turn becomes N understanding slots (encoder features, adapted).
- `<image>` in an answer becomes `<boi>`, N generation slots, `<eoi>`: the model learns to
  emit `<boi>`; each slot's target is predicted by the generation head from the hidden
  state one position earlier; during training (teacher forcing) the slot's input is the
  target fed back through the generation adapter.
- Text loss only on answer tokens (answers, `<boi>`, `<eoi>`, `</s>`), never on the prompt.
- An optional system prompt opens every sequence (the paper preset: Vicuna v1's, as the
  authors' release trains with it); the cpu preset has none.
- The `plain` template (upstream LLaVA-1.5's stage 1) has no system prompt and no role words:
  a human turn that shows an image is the image alone (its instruction is dropped, as LLaVA
  does), a human turn without one (a generation request) is its text, and the answer follows:

    <s><image slots>a photo of a red bus</s>        <s>Draw a red bus.<boi>...<eoi></s>

  A plain-template model is LLaVA's stage 1: `prompt` keeps the rule, so a question asked of an
  image is dropped, as its training dropped them (benchmarks are for a chat-template stage 2).

The text is split at `<image>` by us and each piece tokenised on its own: special tokens are
real added tokens, and no position is found by searching for magic ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE = "<image>"
BOI, EOI = "<boi>", "<eoi>"
SPECIAL_TOKENS = (IMAGE, BOI, EOI)
IGNORE = -100

TEXT, UNDERSTAND, GENERATE = 0, 1, 2  # slot kinds


@dataclass
class Encoded:
    """One record as arrays of equal length."""

    input_ids: np.ndarray  # token ids; vision slots hold the <image> id (their embedding is replaced)
    labels: np.ndarray  # target id at answer positions, IGNORE elsewhere
    kinds: np.ndarray  # TEXT, UNDERSTAND or GENERATE per position

    def __len__(self) -> int:
        return len(self.input_ids)

    def cut(self, max_tokens: int | None) -> Encoded:
        """The first `max_tokens` positions (all of them under None), as LLaVA-1.5 cuts a record
        at 2,048 tokens, through an image's slots if need be: the cut image keeps its first slots."""
        if max_tokens is None or len(self) <= max_tokens:
            return self
        return Encoded(self.input_ids[:max_tokens], self.labels[:max_tokens], self.kinds[:max_tokens])


USER, ASSISTANT = "USER: ", "\nASSISTANT:"
TEMPLATES = ("chat", "plain")


class PromptEncoder:
    """Turns LLaVA-style conversations into token ids, labels and slot kinds."""

    def __init__(self, tokenizer, n_understand: int, n_generate: int | None = None, system: str = "",
                 template: str = "chat"):
        """n_understand / n_generate: vision tokens of the input and output spaces (the paper's
        SigLIP-VQ reads 196 and writes 256); system: text before the first turn (chat only);
        template: chat or plain."""
        if template not in TEMPLATES:
            raise ValueError(f"template {template!r}: use one of {TEMPLATES}")
        self.tokenizer = tokenizer
        self.template = template
        self.system = f"{system.strip()} " if system.strip() and template == "chat" else ""
        self.n_understand = n_understand
        self.n_generate = n_understand if n_generate is None else n_generate
        ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
        if tokenizer.unk_token_id in ids:
            raise ValueError(f"tokenizer lacks the special tokens {SPECIAL_TOKENS}; add them first")
        self.image_id, self.boi_id, self.eoi_id = ids
        self.bos_id, self.eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id

    def _text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def encode(self, conversations: list[dict], answer_image: bool = True) -> Encoded:
        """Encode a whole conversation. With answer_image=False an `<image>` in an answer is
        left as `<boi>` alone (the prompt for generating it)."""
        ids, labels, kinds = [self.bos_id], [IGNORE], [TEXT]

        def add(tokens: list[int], learn: bool, kind: int = TEXT) -> None:
            ids.extend(tokens)
            labels.extend(tokens if learn else [IGNORE] * len(tokens))
            kinds.extend([kind] * len(tokens))

        add(self._text(self.system), learn=False)
        for turn in conversations:
            human = turn["from"] == "human"
            text = self._turn_text(turn["value"], human)
            pieces = text.split(IMAGE)
            for k, piece in enumerate(pieces):
                add(self._text(piece), learn=not human)
                if k == len(pieces) - 1:
                    continue
                if human:
                    add([self.image_id] * self.n_understand, learn=False, kind=UNDERSTAND)
                else:
                    add([self.boi_id], learn=True)
                    if not answer_image:
                        return Encoded(np.array(ids), np.array(labels), np.array(kinds, dtype=np.int8))
                    ids.extend([self.image_id] * self.n_generate)
                    labels.extend([IGNORE] * self.n_generate)
                    kinds.extend([GENERATE] * self.n_generate)
                    add([self.eoi_id], learn=True)
            if not human:
                add([self.eos_id], learn=True)
        return Encoded(np.array(ids), np.array(labels), np.array(kinds, dtype=np.int8))

    def _turn_text(self, value: str, human: bool) -> str:
        if self.template == "plain":
            return IMAGE if human and IMAGE in value else value
        return f"{USER}{value}{ASSISTANT}" if human else f" {value}"

    def prompt(self, question: str, with_image: bool = True) -> Encoded:
        """The prompt of one question, ending where the model's answer begins."""
        text = f"{IMAGE}\n{question}" if with_image else question
        return self.encode([{"from": "human", "value": text}])
