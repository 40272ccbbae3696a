"""A tiny GPT and text that train in seconds: shared by the chapter 5 tests (training, checkpoints)."""

from __future__ import annotations

from torch.utils.data import DataLoader

from llmscratch.dataloader import GPTDatasetV1
from llmscratch.gpt import GPT_CONFIG_124M

TINY_CONFIG = {**GPT_CONFIG_124M, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 2}
TEXT = (
    "Every effort moves you forward. The quick brown fox jumps over the lazy dog, "
    "and the dog, being lazy, does not move. Every day the fox comes back and jumps again. "
) * 4


def tiny_loaders(tokenizer, text=TEXT, batch_size=2, max_length=16):
    """Train (first 80%, shuffled) and validation loaders of non-overlapping windows, as in chapter 5."""
    split = int(0.8 * len(text))
    train = DataLoader(GPTDatasetV1(text[:split], tokenizer, max_length, max_length), batch_size=batch_size,
                       shuffle=True, drop_last=True)
    val = DataLoader(GPTDatasetV1(text[split:], tokenizer, max_length, max_length), batch_size=batch_size,
                     shuffle=False, drop_last=False)
    return train, val
