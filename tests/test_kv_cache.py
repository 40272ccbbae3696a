"""KV cache (ch04_gpt_model, beyond the book): cached generation equals the book's full recomputation."""

from __future__ import annotations

import pytest
import torch

from llmscratch import GPTModel, generate_text_simple
from llmscratch.kv_cache import (
    TRANSPOSE_MIN_TOKENS, FastLinear, KVCache, forward_with_cache, generate_text_cached, generate_text_simple_cached,
    transposed_blocks,
)

CFG = {"vocab_size": 101, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.1,
       "qkv_bias": True}
ATTN_IMPLS = ["scratch", "sdpa"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def make_model(attn_impl, device="cpu", **changes):
    torch.manual_seed(123)
    return GPTModel({**CFG, **changes, "attn_impl": attn_impl}).to(device).eval()


def assert_cached_equals_uncached(model, idx, max_new_tokens, context_size):
    expected = generate_text_simple(model, idx, max_new_tokens, context_size)
    out = generate_text_simple_cached(model, idx, max_new_tokens, context_size, use_cache=True)
    assert out.shape == (idx.shape[0], idx.shape[1] + max_new_tokens)
    assert torch.equal(out, expected)
    return out


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
@pytest.mark.parametrize(("batch_size", "prompt_len", "max_new_tokens", "context_size"), [
    (1, 1, 5, 16),    # one-token prompt
    (1, 4, 10, 16),   # stays inside the context
    (3, 5, 11, 16),   # batch > 1, ends exactly at the context length
    (2, 16, 6, 16),   # prompt exactly context_size long: every step crops
    (2, 20, 6, 16),   # prompt longer than context_size: cropped, not a crash
    (2, 3, 30, 16),   # generates past the model's context length
    (2, 3, 30, 6),    # context_size smaller than the model's context
    (1, 9, 8, 6),     # prompt longer than a small context_size
])
def test_cached_generation_equals_uncached(attn_impl, batch_size, prompt_len, max_new_tokens, context_size):
    model = make_model(attn_impl)
    idx = torch.randint(0, CFG["vocab_size"], (batch_size, prompt_len), generator=torch.Generator().manual_seed(1))
    out = assert_cached_equals_uncached(model, idx, max_new_tokens, context_size)
    assert torch.equal(out[:, :prompt_len], idx)  # the prompt is kept, even the cropped part


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
@pytest.mark.parametrize(("prompt_len", "context_size"), [(3, 16), (20, 16), (3, 6)])
def test_cached_generation_with_either_weight_layout(transpose, attn_impl, prompt_len, context_size):
    """Long CPU generations read transposed weight copies (``transpose=None`` picks); both layouts are exact."""
    model = make_model(attn_impl)
    idx = torch.randint(0, CFG["vocab_size"], (2, prompt_len), generator=torch.Generator().manual_seed(4))
    expected = generate_text_simple(model, idx, 40, context_size)
    assert torch.equal(generate_text_cached(model, idx, 40, context_size, transpose=transpose), expected)


def test_long_generation_uses_the_default_layout_choice():
    model = make_model("sdpa")
    idx = torch.tensor([[5, 6, 7]])
    assert_cached_equals_uncached(model, idx, TRANSPOSE_MIN_TOKENS + 6, 16)  # past the context, transposed


@pytest.mark.parametrize("transpose, chunks", [(False, None), (True, 1), (True, 2), (True, 3), (True, 4)])
@pytest.mark.parametrize("bias", [False, True])
def test_fast_linear_equals_nn_linear(transpose, chunks, bias):
    # 15 output features: 2 and 4 blocks need padding columns, and blocks straddle the stacked weights
    torch.manual_seed(0)
    linears = [torch.nn.Linear(8, 5, bias=bias) for _ in range(3)]
    x = torch.randn(2, 3, 8)
    stacked = FastLinear([lin.weight for lin in linears],
                         torch.cat([lin.bias for lin in linears]) if bias else None, transpose, chunks)
    with torch.no_grad():
        expected = torch.cat([lin(x) for lin in linears], dim=-1)  # (2, 3, 15)
        torch.testing.assert_close(stacked(x), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(stacked(x[0, 0]), expected[0, 0], atol=1e-6, rtol=0)  # one token, no batch
        torch.testing.assert_close(FastLinear(linears[0].weight, linears[0].bias, transpose, chunks)(x),
                                   linears[0](x), atol=1e-6, rtol=0)


def test_transposed_blocks_layout():
    weights = [torch.arange(12.0).view(3, 4), torch.arange(12.0, 20.0).view(2, 4)]  # stacked: (5, 4)
    blocks = transposed_blocks(weights, 2)  # (2, 4, 3): output features 0-2 and 3-4 (+ one zero column)
    stacked_t = torch.cat(weights).T  # (4, 5)
    assert blocks.shape == (2, 4, 3)
    assert torch.equal(blocks[0], stacked_t[:, :3]) and torch.equal(blocks[1, :, :2], stacked_t[:, 3:])
    assert torch.equal(blocks[1, :, 2], torch.zeros(4))
    with pytest.raises(ValueError, match="same in_features"):
        transposed_blocks([torch.zeros(2, 4), torch.zeros(2, 3)], 2)


def test_cached_generation_with_one_weight_block_per_thread(monkeypatch):
    """On a CPU with several threads the transposed weights are cut into one block per thread."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    model = make_model("sdpa")
    idx = torch.tensor([[5, 6, 7], [8, 9, 10]])
    expected = generate_text_simple(model, idx, 40, 16)
    assert torch.equal(generate_text_cached(model, idx, 40, 16, transpose=True), expected)


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
def test_cached_generation_without_qkv_bias_and_zero_tokens(attn_impl):
    model = make_model(attn_impl, qkv_bias=False)
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert_cached_equals_uncached(model, idx, 20, 16)
    assert torch.equal(generate_text_simple_cached(model, idx, 0, 16, use_cache=True), idx)


def test_cached_output_can_be_used_with_autograd():
    """Generation runs under inference_mode, but hands back an ordinary tensor that training code can use."""
    model = make_model("sdpa")
    out = generate_text_simple_cached(model, torch.tensor([[1, 2]]), 3, 16, use_cache=True)
    assert not out.is_inference()
    model(out).sum().backward()


def test_context_size_larger_than_model_context_is_a_value_error():
    model = make_model("scratch")
    with pytest.raises(ValueError, match=r"context_size must be between 1 and the model's context_length \(16\), got 17"):
        generate_text_simple_cached(model, torch.tensor([[1, 2, 3]]), 2, context_size=17, use_cache=True)


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
def test_cached_logits_equal_full_forward(attn_impl):
    """A prefill then steps of one and of several tokens give the full forward pass's logits."""
    model = make_model(attn_impl)
    idx = torch.randint(0, CFG["vocab_size"], (2, 14), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(idx)  # (2, 14, vocab_size)
    cache = KVCache.for_model(model, batch_size=2, max_tokens=CFG["context_length"])
    pieces = [forward_with_cache(model, idx[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 7), (7, 11), (11, 14)]]
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)

    last = forward_with_cache(model, idx[:, :3], KVCache.for_model(model, 2, 16), last_only=True)
    torch.testing.assert_close(last, full[:, 2:3], atol=1e-5, rtol=0)


def test_cache_overflow_is_a_value_error():
    model = make_model("scratch")
    cache = KVCache.for_model(model, batch_size=1, max_tokens=4)
    forward_with_cache(model, torch.tensor([[1, 2, 3]]), cache)
    with pytest.raises(ValueError, match="holds 4 tokens; cannot store 5"):
        forward_with_cache(model, torch.tensor([[4, 5]]), cache)


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
def test_cached_generation_on_device(device, attn_impl):
    model = make_model(attn_impl, device)
    idx = torch.randint(0, CFG["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(3)).to(device)
    out = assert_cached_equals_uncached(model, idx, 25, 16)
    assert out.device.type == device.type


# --- the timing helper the notebook and benchmarks/generation_speed.py use --------------------------------

def test_compare_generation_table():
    from llmscratch.benchmarking import compare_generation

    table = compare_generation(CFG, prompt=[1, 2, 3], max_new_tokens=5, include_transformers=False)
    assert list(table.implementation) == ["no cache", "KV cache"]
    assert table.same_tokens.all() and (table.tokens_per_s > 0).all()
    assert table.speedup_vs_no_cache.iloc[0] == 1.0


def test_compare_generation_matches_transformers_gpt2():
    """transformers' GPT-2 holding our weights generates our tokens: the architectures match (loader parity)."""
    pytest.importorskip("transformers")
    from llmscratch.benchmarking import compare_generation

    for qkv_bias in (False, True):
        table = compare_generation({**CFG, "qkv_bias": qkv_bias}, prompt=[1, 2, 3], max_new_tokens=12)
        assert list(table.implementation) == ["no cache", "KV cache", "transformers generate()"]
        assert table.same_tokens.all()
        assert table.vs_transformers.iloc[2] == 1.0
    with pytest.raises(ValueError, match="include_transformers=False"):
        compare_generation(CFG, prompt=[1, 2, 3], max_new_tokens=14)  # past transformers' 16 positions
