"""Where the book raises a bare KeyError or IndexError, the package raises a ValueError that says what to do."""

from __future__ import annotations

import pytest
import torch

from llmscratch import (
    GPT_CONFIG_TINY, GPTModel, generate, generate_text_simple, text_to_token_ids, token_ids_to_text,
)
from llmscratch.kv_cache import generate_text_simple_cached

CFG = {**GPT_CONFIG_TINY, "vocab_size": 50, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 1}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(123)
    return GPTModel(CFG).eval()


@pytest.mark.parametrize("change, message", [
    ({"n_layers": None}, "the config lacks 'n_layers'"),
    ({"emb_dim": 0}, r"cfg\['emb_dim'\] must be a positive integer, got 0"),
    ({"vocab_size": -5}, r"cfg\['vocab_size'\] must be a positive integer"),
    ({"context_length": 2.5}, r"cfg\['context_length'\] must be a positive integer"),
    ({"emb_dim": 18, "n_heads": 4}, "must be divisible"),
    ({"drop_rate": 1.5}, r"cfg\['drop_rate'\] must be in \[0, 1\)"),
])
def test_bad_configs(change, message):
    cfg = {key: value for key, value in {**CFG, **change}.items() if value is not None}
    with pytest.raises(ValueError, match=message):
        GPTModel(cfg)


def test_token_ids_outside_the_vocabulary(model):
    with pytest.raises(ValueError, match=r"token id 50 is outside the model's vocabulary \(0 to 49\)"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="token id -1 is outside"):
        model(torch.tensor([[-1, 2]]))


@pytest.mark.parametrize("generator", [generate_text_simple, generate, generate_text_simple_cached])
def test_empty_prompt_and_too_large_context(model, generator):
    with pytest.raises(ValueError, match="the prompt is empty"):
        generator(model, torch.zeros(1, 0, dtype=torch.long), 3, 8)
    with pytest.raises(ValueError, match=r"context_size must be between 1 and the model's context_length \(8\), got 9"):
        generator(model, torch.tensor([[1, 2]]), 3, 9)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": float("nan")}, "temperature must be a finite number"),
    ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
    ({"top_k": 51}, "top_k must be None .* between 1 and the vocabulary size 50"),
    ({"eos_id": 50}, "eos_id must be a token id between 0 and 49"),
])
def test_sampling_settings(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor([[1, 2]]), 3, 8, **kwargs)


def test_decoding_an_unknown_id(tokenizer):
    with pytest.raises(ValueError, match=r"token id 60000 is not in the tokenizer's vocabulary \(0 to 50256\)"):
        token_ids_to_text(torch.tensor([[15496, 60000]]), tokenizer)
    assert token_ids_to_text(text_to_token_ids("Hello", tokenizer), tokenizer) == "Hello"
