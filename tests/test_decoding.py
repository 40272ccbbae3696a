"""Decoding of ch05_pretraining (5.3): ``generate`` with temperature, top-k, eos_id and the KV cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from llmscratch.decoding import generate, softmax_with_temperature
from llmscratch.gpt import GPT_CONFIG_TINY, GPTModel, generate_text_simple

# The package's tiny GPT with a 97-token vocabulary: top-k and eos cases are easy to reach
TINY_CONFIG = {**GPT_CONFIG_TINY, "vocab_size": 97, "context_length": 16, "emb_dim": 32, "n_heads": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def book_generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    """The book's ``generate`` (ch05, 5.3.3), verbatim: the reference for batch size 1."""
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            min_val = top_logits[:, -1]
            logits = torch.where(logits < min_val, torch.tensor(float("-inf")).to(logits.device), logits)
        if temperature > 0.0:
            logits = logits / temperature
            logits = logits - logits.max(dim=-1, keepdim=True).values
            probs = torch.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)
        if idx_next == eos_id:
            break
        idx = torch.cat((idx, idx_next), dim=1)
    return idx


class ChainModel(nn.Module):
    """A stub language model: the next token after ``t`` is always ``successor[t]`` (exact, no weights)."""

    def __init__(self, successor, vocab_size):
        super().__init__()
        self.successor = torch.tensor([successor.get(t, t) for t in range(vocab_size)])
        self.vocab_size = vocab_size

    def forward(self, idx):  # (b, n) -> (b, n, vocab_size)
        return 10.0 * nn.functional.one_hot(self.successor[idx], self.vocab_size).float()


class FixedLogitsModel(nn.Module):
    """A stub whose next-token logits depend only on the row of the batch: ``logits[row]`` at every position."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits  # (b, vocab_size)

    def forward(self, idx):  # (b, n) -> (b, n, vocab_size)
        return self.logits[:, None, :].expand(idx.shape[0], idx.shape[1], -1)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(123)
    return GPTModel(TINY_CONFIG).eval()


@pytest.fixture
def prompts():
    return torch.tensor([[5, 17, 42, 8, 3], [60, 2, 2, 91, 14]])  # (2, 5)


def test_temperature_zero_equals_generate_text_simple(tiny_model, prompts):
    expected = generate_text_simple(tiny_model, prompts, max_new_tokens=20, context_size=16)
    got = generate(tiny_model, prompts, max_new_tokens=20, context_size=16, temperature=0.0)
    assert torch.equal(got, expected)
    # top_k does not change the argmax
    assert torch.equal(generate(tiny_model, prompts, 20, 16, top_k=3), expected)


def test_top_k_never_samples_outside_the_top_k():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3  # (b, vocab): no ties
    allowed = torch.topk(logits, 5).indices  # (4, 5)
    model = FixedLogitsModel(logits)
    seen = [set() for _ in range(4)]
    for seed in range(40):
        torch.manual_seed(seed)
        out = generate(model, torch.zeros(4, 1, dtype=torch.long), 25, 8, temperature=5.0, top_k=5)
        for row in range(4):
            seen[row].update(out[row, 1:].tolist())
    for row in range(4):
        assert seen[row] <= set(allowed[row].tolist())
        assert len(seen[row]) == 5  # a high temperature reaches all five


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79])
    sharp, flat = softmax_with_temperature(logits, 0.1), softmax_with_temperature(logits, 5)
    assert torch.allclose(softmax_with_temperature(logits, 1), torch.softmax(logits, dim=0))
    assert sharp.max() > 0.99 and flat.max() < 0.3
    with pytest.raises(ValueError, match="greedy"):
        softmax_with_temperature(logits, 0)


def chain_model():
    # 2 -> 3 -> 4 -> 0 (eos);  6 -> 7 -> 8 -> 9 -> 0;  10 -> 11 -> 10 ... (never ends)
    return ChainModel({2: 3, 3: 4, 4: 0, 6: 7, 7: 8, 8: 9, 9: 0, 10: 11, 11: 10}, vocab_size=12)


def test_eos_stops_each_sequence_independently():
    model = chain_model()
    out = generate(model, torch.tensor([[1, 2], [5, 6]]), max_new_tokens=10, context_size=4, eos_id=0)
    # row 0 picks eos at step 3 and is padded with it; row 1 picks eos at step 4: the loop stops, not appending
    assert out.tolist() == [[1, 2, 3, 4, 0], [5, 6, 7, 8, 9]]
    # a sequence that never ends runs to max_new_tokens while the finished one is padded
    out = generate(model, torch.tensor([[2], [10]]), max_new_tokens=6, context_size=4, eos_id=0)
    assert out.tolist() == [[2, 3, 4, 0, 0, 0, 0], [10, 11, 10, 11, 10, 11, 10]]
    # without eos_id the chain goes on (0 -> 0)
    out = generate(model, torch.tensor([[2]]), max_new_tokens=5, context_size=4)
    assert out.tolist() == [[2, 3, 4, 0, 0, 0]]


def test_eos_batch_size_one_is_the_book():
    model = chain_model()
    for prompt, steps in [([[1, 2]], 10), ([[6]], 10), ([[6]], 2), ([[10]], 5), ([[4]], 3)]:
        idx = torch.tensor(prompt)
        expected = book_generate(model, idx, steps, 4, eos_id=0)
        assert torch.equal(generate(model, idx, steps, 4, eos_id=0), expected)
    # the book stops before appending the eos token
    assert generate(model, torch.tensor([[1, 2]]), 10, 4, eos_id=0).tolist() == [[1, 2, 3, 4]]


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, None), (1.4, 10), (0.7, 1)])
def test_batch_size_one_matches_the_book(tiny_model, temperature, top_k):
    idx = torch.tensor([[5, 17, 42]])
    torch.manual_seed(7)
    expected = book_generate(tiny_model, idx, 25, 16, temperature=temperature, top_k=top_k)
    for use_cache in (False, True):
        torch.manual_seed(7)
        got = generate(tiny_model, idx, 25, 16, temperature=temperature, top_k=top_k, use_cache=use_cache)
        assert torch.equal(got, expected)


def test_batch_size_one_eos_matches_the_book_on_a_gpt(tiny_model):
    idx = torch.tensor([[5, 17, 42]])
    full = generate(tiny_model, idx, 25, 16)
    eos_id = full[0, 3 + 6].item()  # the 7th generated token; the book stops at its first occurrence
    expected = book_generate(tiny_model, idx, 25, 16, eos_id=eos_id)
    assert expected.shape[1] <= 3 + 6
    for use_cache in (False, True):
        assert torch.equal(generate(tiny_model, idx, 25, 16, eos_id=eos_id, use_cache=use_cache), expected)


@pytest.mark.parametrize("max_new_tokens", [30, 70])
@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, None), (1.5, 20)])
def test_use_cache_equals_no_cache(tiny_model, prompts, temperature, top_k, max_new_tokens):
    # 30 new tokens after 5 overflow the context of 16: the cache is refilled, as the crop requires;
    # 70 (>= TRANSPOSE_MIN_TOKENS) also takes the transposed-weights path and refills several times
    torch.manual_seed(11)
    expected = generate(tiny_model, prompts, max_new_tokens, 16, temperature=temperature, top_k=top_k)
    torch.manual_seed(11)
    got = generate(tiny_model, prompts, max_new_tokens, 16, temperature=temperature, top_k=top_k, use_cache=True)
    assert got.shape == (2, 5 + max_new_tokens)
    assert torch.equal(got, expected)


def test_eos_in_a_batch_with_a_gpt_and_cache(tiny_model, prompts):
    full = generate(tiny_model, prompts, 20, 16)  # (2, 25)
    eos_id = full[0, 5 + 4].item()  # a token row 0 picks at step 5
    for use_cache in (False, True):
        out = generate(tiny_model, prompts, 20, 16, eos_id=eos_id, use_cache=use_cache)
        stops = []
        for row in range(2):
            new = full[row, 5:].tolist()
            stop = new.index(eos_id) if eos_id in new else len(new)
            stops.append(stop)
            got = out[row, 5:].tolist()
            assert got[:stop] == new[:stop]  # the same tokens up to the end of the sequence...
            assert all(t == eos_id for t in got[stop:])  # ...then padding
        # the loop ran until the last sequence finished (that step's token not appended)
        assert out.shape[1] == 5 + (max(stops) if max(stops) < 20 else 20)


def test_generate_errors(tiny_model, prompts):
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_model, prompts, 5, 16, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate(tiny_model, prompts, 5, 16, top_k=0)
    with pytest.raises(ValueError, match="vocabulary size 97"):
        generate(tiny_model, prompts, 5, 16, top_k=98)
    with pytest.raises(ValueError, match="batch_size, num_tokens"):
        generate(tiny_model, prompts[0], 5, 16)
    with pytest.raises(ValueError, match="context_length"):
        generate(tiny_model, prompts, 5, 32, use_cache=True)
    assert torch.equal(generate(tiny_model, prompts, 0, 16), prompts)
