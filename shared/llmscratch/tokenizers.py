"""Word-level tokenizers of chapter 2: the regex split, the vocabulary and ``SimpleTokenizerV1``/``V2``.

Introduced in ch02_text_data, sections 2.2-2.4.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The book's split pattern: punctuation, double dashes and whitespace become separate pieces.
SPLIT_PATTERN = r'([,.:;?_!"()\']|--|\s)'
SPECIAL_TOKENS = ("<|endoftext|>", "<|unk|>")


def split_text(text: str) -> list[str]:
    """Split ``text`` into words and punctuation, dropping whitespace (ch02_text_data, 2.2)."""
    pieces = re.split(SPLIT_PATTERN, text)
    return [item.strip() for item in pieces if item.strip()]


def build_vocab(tokens: Iterable[str], special_tokens: Iterable[str] = ()) -> dict[str, int]:
    """Map each distinct token (sorted) to an id, then append ``special_tokens`` (ch02_text_data, 2.3-2.4)."""
    words = sorted(set(tokens))
    extra = [token for token in special_tokens if token not in words]
    return {token: integer for integer, token in enumerate(words + extra)}


class SimpleTokenizerV1:
    """The book's first tokenizer: a fixed vocabulary, no unknown words (ch02_text_data, 2.3).

    An unknown word raises a ``KeyError`` naming it; use ``SimpleTokenizerV2`` for open text.
    """

    def __init__(self, vocab):
        self.str_to_int = vocab
        self.int_to_str = {i: s for s, i in vocab.items()}

    def encode(self, text):
        preprocessed = re.split(r'([,.:;?_!"()\']|--|\s)', text)
        preprocessed = [item.strip() for item in preprocessed if item.strip()]
        unknown = [s for s in preprocessed if s not in self.str_to_int]
        if unknown:
            raise KeyError(
                f"{unknown[0]!r} is not in the vocabulary ({len(unknown)} unknown token(s)); "
                "add it to the vocabulary or use SimpleTokenizerV2, which maps unknown words to <|unk|>"
            )
        ids = [self.str_to_int[s] for s in preprocessed]
        return ids

    def decode(self, ids):
        text = " ".join([self.int_to_str[i] for i in ids])
        # Remove the spaces before the punctuation
        text = re.sub(r'\s+([,.?!"()\'])', r'\1', text)
        return text


class SimpleTokenizerV2:
    """``SimpleTokenizerV1`` plus ``<|unk|>`` for unknown words (ch02_text_data, 2.4)."""

    def __init__(self, vocab):
        if "<|unk|>" not in vocab:
            raise ValueError("SimpleTokenizerV2 needs '<|unk|>' in the vocabulary; build it with "
                             "build_vocab(tokens, special_tokens=['<|endoftext|>', '<|unk|>'])")
        self.str_to_int = vocab
        self.int_to_str = {i: s for s, i in vocab.items()}

    def encode(self, text):
        preprocessed = re.split(r'([,.:;?_!"()\']|--|\s)', text)
        preprocessed = [item.strip() for item in preprocessed if item.strip()]
        preprocessed = [item if item in self.str_to_int else "<|unk|>" for item in preprocessed]
        ids = [self.str_to_int[s] for s in preprocessed]
        return ids

    def decode(self, ids):
        text = " ".join([self.int_to_str[i] for i in ids])
        # Remove the spaces before the punctuation
        text = re.sub(r'\s+([,.:;?!"()\'])', r'\1', text)
        return text
