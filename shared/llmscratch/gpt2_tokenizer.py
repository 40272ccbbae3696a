"""GPT-2's tokenizer as the course's finetuning code uses it: ``<|endoftext|>`` in a text is the special token.

Introduced in ch06_finetune_classification and ch07_finetune_instructions (beyond the book). tiktoken's
``encode(text)`` refuses a text that holds ``<|endoftext|>`` (a ``ValueError``), so a message or an instruction
that quotes it cannot be classified or finetuned on. The book's ``text_to_token_ids`` (chapter 5) encodes with
``allowed_special={"<|endoftext|>"}``; the book's ``SpamDataset``, ``classify_review`` and ``InstructionDataset``
call ``tokenizer.encode(text)``. Their bodies stay the book's: give them the tokenizer of ``gpt2_tokenizer()``
(or ``allowing_endoftext(tokenizer)``), whose ``encode`` allows ``<|endoftext|>`` as ``text_to_token_ids`` does.
The package's loaders and the command line do.
"""

from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"


class EndOfTextTokenizer:
    """A tiktoken encoding whose ``encode(text)`` allows ``<|endoftext|>`` by default (``allowed_special=
    {"<|endoftext|>"}``, as the book's ``text_to_token_ids``); everything else is the encoding's own
    (ch06_finetune_classification, beyond the book)."""

    def __init__(self, encoding):
        self.encoding = encoding

    def encode(self, text, *, allowed_special=frozenset({ENDOFTEXT}), **kwargs):
        return self.encoding.encode(text, allowed_special=allowed_special, **kwargs)

    def __getattr__(self, name):  # decode, n_vocab, eot_token...: the encoding's
        return getattr(self.encoding, name)

    def __repr__(self):
        return f"EndOfTextTokenizer({self.encoding!r})"


def allowing_endoftext(tokenizer):
    """``tokenizer`` with ``<|endoftext|>`` allowed in ``encode`` when it is a tiktoken encoding (or already
    such a wrapper: returned as it is); any other tokenizer is returned unchanged (ch06_finetune_classification,
    beyond the book)."""
    import tiktoken

    return EndOfTextTokenizer(tokenizer) if isinstance(tokenizer, tiktoken.Encoding) else tokenizer


def _check_endoftext(text, tokenizer):
    """tiktoken's ``encode`` refuses ``<|endoftext|>`` in a text: a ``ValueError`` that says which tokenizer
    accepts it (the book's functions that call ``tokenizer.encode(text)`` check with it first)."""
    import tiktoken

    if isinstance(tokenizer, tiktoken.Encoding) and isinstance(text, str) and ENDOFTEXT in text:
        raise ValueError(f"the text holds {ENDOFTEXT!r}, which tiktoken's encode(text) refuses: pass "
                         "llmscratch.gpt2_tokenizer.gpt2_tokenizer() (or allowing_endoftext(tokenizer)) as the "
                         "tokenizer, which encodes it as the special token 50256, as text_to_token_ids does")


def gpt2_tokenizer():
    """GPT-2's BPE tokenizer (``tiktoken.get_encoding("gpt2")``) that encodes ``<|endoftext|>`` in a text as the
    special token 50256 (ch06_finetune_classification, beyond the book)."""
    import tiktoken

    return EndOfTextTokenizer(tiktoken.get_encoding("gpt2"))


__all__ = ["EndOfTextTokenizer", "allowing_endoftext", "gpt2_tokenizer"]
