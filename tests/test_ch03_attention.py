"""Chapter 3 (attention): the book's values, causality of every causal class, and the fast path's equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from llmscratch import (
    CausalAttention, MultiHeadAttention, MultiHeadAttentionSDPA, MultiHeadAttentionWrapper, SelfAttention_v1,
    SelfAttention_v2,
)

# "Your journey starts with one step", one 3-d embedding per word (REFERENCE_VALUES.md, ch03)
INPUTS = torch.tensor([
    [0.43, 0.15, 0.89],  # Your
    [0.55, 0.87, 0.66],  # journey
    [0.57, 0.85, 0.64],  # starts
    [0.22, 0.58, 0.33],  # with
    [0.77, 0.25, 0.10],  # one
    [0.05, 0.80, 0.55],  # step
])


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def assert_book_values(actual, expected):
    """Equal to the book's printed values, which have 4 decimals."""
    torch.testing.assert_close(actual, torch.tensor(expected), atol=5e-5, rtol=0)


# --- 3.3: simple self-attention without trainable weights -------------------------------------------------

def test_book_scores_weights_and_context_vector_for_query_2():
    query = INPUTS[1]  # x^(2), "journey"
    attn_scores_2 = INPUTS @ query
    assert_book_values(attn_scores_2, [0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865])

    attn_weights_2 = torch.softmax(attn_scores_2, dim=0)
    assert_book_values(attn_weights_2, [0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581])
    assert attn_weights_2.sum().item() == pytest.approx(1.0)

    context_vec_2 = attn_weights_2 @ INPUTS
    assert_book_values(context_vec_2, [0.4419, 0.6515, 0.5683])


# --- 3.4: trainable weights (exercise 3.1) -----------------------------------------------------------------

def test_self_attention_v1_equals_v2_after_copying_weights():
    torch.manual_seed(789)
    sa_v2 = SelfAttention_v2(d_in=3, d_out=2)
    sa_v1 = SelfAttention_v1(d_in=3, d_out=2)
    assert not torch.allclose(sa_v1(INPUTS), sa_v2(INPUTS))  # different weights so far

    # nn.Linear stores (d_out, d_in) and computes x @ W.T; v1 computes x @ W with W of shape (d_in, d_out)
    sa_v1.W_query = nn.Parameter(sa_v2.W_query.weight.T)
    sa_v1.W_key = nn.Parameter(sa_v2.W_key.weight.T)
    sa_v1.W_value = nn.Parameter(sa_v2.W_value.weight.T)
    torch.testing.assert_close(sa_v1(INPUTS), sa_v2(INPUTS))


# --- 3.6: multi-head attention -----------------------------------------------------------------------------

def test_book_multi_head_attention_output():
    torch.manual_seed(123)
    batch = torch.stack((INPUTS, INPUTS), dim=0)  # (2, 6, 3)
    mha = MultiHeadAttention(d_in=3, d_out=2, context_length=batch.shape[1], dropout=0.0, num_heads=2)
    context_vecs = mha(batch)
    assert context_vecs.shape == (2, 6, 2)
    torch.testing.assert_close(context_vecs[0, 0], torch.tensor([0.3190, 0.4858]), atol=1e-4, rtol=0)
    torch.testing.assert_close(context_vecs[0], context_vecs[1])  # same input, same output


@pytest.mark.parametrize("cls", [MultiHeadAttention, MultiHeadAttentionSDPA])
def test_gpt2_size_multi_head_attention_parameter_count(cls):
    mha = cls(d_in=768, d_out=768, context_length=1024, dropout=0.0, num_heads=12)
    # 3 projections 768 x 768 without bias + out_proj 768 x 768 with bias
    assert sum(p.numel() for p in mha.parameters()) == 2_360_064


@pytest.mark.parametrize("cls", [MultiHeadAttention, MultiHeadAttentionSDPA])
def test_d_out_not_divisible_by_num_heads_is_a_clear_error(cls):
    with pytest.raises(ValueError, match=r"divisible by num_heads.*d_out=6.*num_heads=4"):
        cls(d_in=3, d_out=6, context_length=4, dropout=0.0, num_heads=4)


# --- causality: what comes after position t cannot change the outputs at positions <= t ----------------

CAUSAL_CLASSES = {
    "CausalAttention": lambda: CausalAttention(d_in=8, d_out=6, context_length=10, dropout=0.0),
    "MultiHeadAttentionWrapper": lambda: MultiHeadAttentionWrapper(8, 3, 10, 0.0, num_heads=2),
    "MultiHeadAttention": lambda: MultiHeadAttention(8, 6, 10, 0.0, num_heads=2),
    "MultiHeadAttentionSDPA": lambda: MultiHeadAttentionSDPA(8, 6, 10, 0.0, num_heads=2),
}


@pytest.mark.parametrize("name", list(CAUSAL_CLASSES))
@pytest.mark.parametrize("t", [0, 3, 8])
def test_attention_is_causal(name, t):
    torch.manual_seed(0)
    attention = CAUSAL_CLASSES[name]().eval()
    x = torch.randn(2, 10, 8)
    changed = x.clone()
    changed[:, t + 1:] = torch.randn(2, 10 - t - 1, 8)
    with torch.no_grad():
        out, out_changed = attention(x), attention(changed)
    assert out.shape == (2, 10, 6)
    torch.testing.assert_close(out_changed[:, :t + 1], out[:, :t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(out_changed[:, t + 1:], out[:, t + 1:])  # the later outputs did see the change


# --- the fast path computes the same thing -----------------------------------------------------------------

@pytest.mark.parametrize("qkv_bias", [False, True])
def test_sdpa_equals_multi_head_attention(qkv_bias):
    torch.manual_seed(123)
    mha = MultiHeadAttention(16, 12, 20, 0.1, num_heads=3, qkv_bias=qkv_bias).eval()
    sdpa = MultiHeadAttentionSDPA(16, 12, 20, 0.1, num_heads=3, qkv_bias=qkv_bias).eval()
    assert list(sdpa.state_dict()) == list(mha.state_dict())  # the same keys: weights load into either class
    x = torch.randn(4, 20, 16)
    with torch.no_grad():
        assert not torch.allclose(sdpa(x), mha(x), atol=1e-3)  # independent random weights differ
        sdpa.load_state_dict(mha.state_dict())  # book -> fast
        torch.testing.assert_close(sdpa(x), mha(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(sdpa(x[:, :7]), mha(x[:, :7]), atol=1e-5, rtol=0)  # shorter than context

        torch.manual_seed(7)
        fresh = MultiHeadAttentionSDPA(16, 12, 20, 0.1, num_heads=3, qkv_bias=qkv_bias).eval()
        mha.load_state_dict(fresh.state_dict())  # fast -> book
        torch.testing.assert_close(mha(x), fresh(x), atol=1e-5, rtol=0)


def test_sdpa_dropout_only_in_training():
    torch.manual_seed(123)
    sdpa = MultiHeadAttentionSDPA(16, 16, 12, dropout=0.5, num_heads=4)
    x = torch.randn(2, 12, 16)
    sdpa.train()
    assert not torch.allclose(sdpa(x), sdpa(x))  # a fresh dropout mask per call
    sdpa.eval()
    with torch.no_grad():
        torch.testing.assert_close(sdpa(x), sdpa(x), atol=0, rtol=0)
        mha = MultiHeadAttention(16, 16, 12, dropout=0.5, num_heads=4).eval()
        mha.load_state_dict(sdpa.state_dict())
        torch.testing.assert_close(sdpa(x), mha(x), atol=1e-5, rtol=0)


# --- the timing helper the notebook and benchmarks/attention_speed.py use ---------------------------------

def test_compare_attention_table():
    from llmscratch.benchmarking import compare_attention, machine_label, time_call

    table = compare_attention(batch_size=2, num_tokens=16, d_model=32, num_heads=4, dtypes=(torch.float32,),
                              repeats=1)
    assert list(table.implementation) == ["MultiHeadAttentionWrapper", "MultiHeadAttention", "MultiHeadAttentionSDPA"]
    assert set(table.columns) >= {"implementation", "dtype", "ms", "speedup", "max_abs_diff"}
    assert (table.ms > 0).all() and table.speedup.iloc[1] == 1.0
    assert table.max_abs_diff.iloc[2] < 1e-5  # same weights, same outputs
    assert machine_label().startswith("CPU: ") and f"torch {torch.__version__}" in machine_label()
    calls = []
    assert time_call(lambda: calls.append(1), repeats=3, warmup=2) >= 0 and len(calls) == 5


def test_busy_machine_note(monkeypatch):
    from llmscratch.benchmarking import busy_machine_note

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (9.0, 0.0, 0.0), raising=False)
    assert "load average 9.0 on 2 cores" in busy_machine_note()
    monkeypatch.setattr("os.getloadavg", lambda: (0.5, 0.0, 0.0), raising=False)
    assert busy_machine_note() is None


# --- issue 20: the book repository's name for the SDPA attention ------------------------------------------------


def test_pytorch_multi_head_attention_has_the_book_repositorys_signature():
    import inspect

    from llmscratch import PyTorchMultiHeadAttention

    params = inspect.signature(PyTorchMultiHeadAttention).parameters
    assert list(params) == ["d_in", "d_out", "num_heads", "dropout", "qkv_bias"]
    assert (params["dropout"].default, params["qkv_bias"].default) == (0.0, False)
    with pytest.raises(ValueError, match="d_out must be divisible by num_heads"):
        PyTorchMultiHeadAttention(8, 10, num_heads=4)


def test_pytorch_multi_head_attention_computes_multi_head_attention():
    """No context_length, no mask buffer; with the book's weights (strict=False: no 'mask'), the same output."""
    from llmscratch import PyTorchMultiHeadAttention

    torch.manual_seed(123)
    book = MultiHeadAttention(6, 8, context_length=16, dropout=0.0, num_heads=2, qkv_bias=True).eval()
    fast = PyTorchMultiHeadAttention(6, 8, num_heads=2, qkv_bias=True).eval()
    assert "mask" not in fast.state_dict()
    result = fast.load_state_dict(book.state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == ["mask"]
    x = torch.rand(3, 11, 6)
    torch.testing.assert_close(fast(x), book(x), atol=1e-6, rtol=0)
