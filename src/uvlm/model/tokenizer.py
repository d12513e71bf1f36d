"""Small tokenizers for the tiny LLMs, trained with `tokenizers`: word-level on our own template
text (SmartWatch, CelebA), byte-level BPE on a dataset's text (Table 2's LLaVA data, whose words
no template lists).

Digits are single tokens (so "03:15:30" is eight tokens the model can learn to read and
write one by one) and words carry their leading space (" sunny"), so decoding is plain
concatenation and gives back the exact text the scorer parses.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
# One token per digit, a word with its leading space, a lone space or newline, one symbol.
_PIECES = Regex(r"\d| ?[A-Za-z]+|\s|[^\sA-Za-z\d]")


def train_tokenizer(texts: Iterable[str], special_tokens: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `texts`; every printable ASCII character is a token too."""
    texts = list(texts)
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(_PIECES, behavior="isolated")
    tok.decoder = decoders.Fuse()
    specials = [PAD, UNK, BOS, EOS, *special_tokens]
    chars = sorted(set(string.printable) | {c for t in texts for c in t})
    trainer = trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1)
    tok.train_from_iterator([*texts, *chars], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, additional_special_tokens=list(specials[4:]))


def template_corpus(domain: str = "smartwatch") -> list[str]:
    """Every phrase our templates of a dataset (smartwatch | celeba) and the chat template can
    produce, values included. Each dataset has its own: adding CelebA's words to SmartWatch's
    would renumber the tokens of every SmartWatch run."""
    from uvlm.data import text
    from uvlm.data.smartwatch import POSITIONS, WEATHERS
    from uvlm.model.prompt import ASSISTANT, USER

    if domain == "celeba":
        from uvlm.data.faces import face_corpus

        corpus = [USER, ASSISTANT, *face_corpus()]
        return corpus + [" " + c for c in corpus]

    corpus = [USER, ASSISTANT, text.CAPTION_OPENING, *text.CAPTION_QUESTIONS, *text.GENERATION_REQUESTS,
              *text.GENERATION_REPLIES, "0123456789 : % ."]
    corpus += [q for qs in text.QUESTIONS.values() for q in qs]
    values = [*WEATHERS, *POSITIONS, "12:34:56", "78%"]
    corpus += [c.format(value=v) for cs in text.CLAUSES.values() for c in cs for v in values]
    corpus += values
    return corpus + [" " + c for c in corpus]  # words at the start of a turn follow a space


def train_byte_tokenizer(texts: Iterable[str], special_tokens: Iterable[str] = (),
                         vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Byte-level BPE over `texts`: any text encodes (no unknown token), so a tiny model trained on
    one dataset still reads a benchmark's questions."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, UNK, BOS, EOS, *special_tokens]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, additional_special_tokens=list(specials[4:]))
