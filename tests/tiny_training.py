"""A tiny GPT and text that train in seconds: shared by the chapter 5 tests (training, checkpoints)."""

from __future__ import annotations

from llmscratch.gpt import GPT_CONFIG_TINY
from llmscratch.pretraining import create_train_val_loaders

TINY_CONFIG = {**GPT_CONFIG_TINY, "context_length": 16}  # the package's tiny GPT, with 16-token windows
TEXT = (
    "Every effort moves you forward. The quick brown fox jumps over the lazy dog, "
    "and the dog, being lazy, does not move. Every day the fox comes back and jumps again. "
) * 4


def tiny_loaders(tokenizer=None, text=TEXT, batch_size=2, max_length=16):
    """Train (first 80%, shuffled) and validation loaders of non-overlapping windows, as in chapter 5
    (``create_train_val_loaders``, GPT-2's tokenizer; ``tokenizer`` is accepted for the callers' symmetry)."""
    return create_train_val_loaders(text, max_length, batch_size=batch_size, train_ratio=0.8)
