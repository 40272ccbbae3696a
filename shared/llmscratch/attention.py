"""Attention mechanisms of chapter 3, from the simplest self-attention to multi-head attention.

Introduced in ch03_attention. The classes are the book's; ``MultiHeadAttentionSDPA`` is the fast path (beyond
the book): the same parameters and state-dict layout as ``MultiHeadAttention``, computed with one fused QKV
projection and ``torch.nn.functional.scaled_dot_product_attention``; ``PyTorchMultiHeadAttention`` is the same
fast path under the name and signature of the book repository's bonus code.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SelfAttention_v1(nn.Module):
    """Self-attention with trainable weight matrices as raw parameters (ch03_attention, 3.4.1)."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x):
        keys = x @ self.W_key  # (num_tokens, d_out)
        queries = x @ self.W_query
        values = x @ self.W_value
        attn_scores = queries @ keys.T  # omega, (num_tokens, num_tokens)
        attn_weights = torch.softmax(
            attn_scores / keys.shape[-1]**0.5, dim=-1
        )
        context_vec = attn_weights @ values  # (num_tokens, d_out)
        return context_vec


class SelfAttention_v2(nn.Module):
    """Self-attention with ``nn.Linear`` projections (ch03_attention, 3.4.2)."""

    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        keys = self.W_key(x)  # (num_tokens, d_out)
        queries = self.W_query(x)
        values = self.W_value(x)
        attn_scores = queries @ keys.T  # (num_tokens, num_tokens)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)
        context_vec = attn_weights @ values  # (num_tokens, d_out)
        return context_vec


class CausalAttention(nn.Module):
    """Single-head causal self-attention with dropout, for batches (ch03_attention, 3.5.3)."""

    def __init__(self, d_in, d_out, context_length,
                 dropout, qkv_bias=False):
        super().__init__()
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            'mask',
            torch.triu(torch.ones(context_length, context_length),
                       diagonal=1)
        )  # (context_length, context_length), 1 above the diagonal

    def forward(self, x):
        b, num_tokens, d_in = x.shape  # (b, num_tokens, d_in)
        keys = self.W_key(x)  # (b, num_tokens, d_out)
        queries = self.W_query(x)
        values = self.W_value(x)

        attn_scores = queries @ keys.transpose(1, 2)  # (b, num_tokens, num_tokens)
        attn_scores.masked_fill_(  # in place: hide the future tokens
            self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = torch.softmax(
            attn_scores / keys.shape[-1]**0.5, dim=-1
        )
        attn_weights = self.dropout(attn_weights)

        context_vec = attn_weights @ values  # (b, num_tokens, d_out)
        return context_vec


class MultiHeadAttentionWrapper(nn.Module):
    """Multi-head attention as a stack of ``CausalAttention`` heads (ch03_attention, 3.6.1)."""

    def __init__(self, d_in, d_out, context_length,
                 dropout, num_heads, qkv_bias=False):
        super().__init__()
        self.heads = nn.ModuleList(
            [CausalAttention(
                d_in, d_out, context_length, dropout, qkv_bias
            )
             for _ in range(num_heads)]
        )

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)  # (b, num_tokens, num_heads * d_out)


def check_heads(d_out, num_heads):
    """Raise a clear ``ValueError`` unless ``d_out`` splits evenly into ``num_heads`` heads (ch03_attention, 3.6.2)."""
    if num_heads < 1 or d_out % num_heads != 0:
        raise ValueError(
            f"d_out must be divisible by num_heads, got d_out={d_out} and num_heads={num_heads}; "
            f"each head gets d_out // num_heads dimensions"
        )


class MultiHeadAttention(nn.Module):
    """Multi-head causal attention with weight splits, the book's efficient version (ch03_attention, 3.6.2)."""

    def __init__(self, d_in, d_out,
                 context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        check_heads(d_out, num_heads)

        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads  # reduce the projection dim to match the desired output dim
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # combines the head outputs
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            'mask',
            torch.triu(torch.ones(context_length, context_length),
                       diagonal=1)
        )

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        keys = self.W_key(x)  # (b, num_tokens, d_out)
        queries = self.W_query(x)
        values = self.W_value(x)

        # Split the last dim into heads: (b, num_tokens, d_out) -> (b, num_tokens, num_heads, head_dim)
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim)
        queries = queries.view(
            b, num_tokens, self.num_heads, self.head_dim
        )

        # (b, num_tokens, num_heads, head_dim) -> (b, num_heads, num_tokens, head_dim)
        keys = keys.transpose(1, 2)
        queries = queries.transpose(1, 2)
        values = values.transpose(1, 2)

        attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, num_tokens, num_tokens)
        mask_bool = self.mask.bool()[:num_tokens, :num_tokens]
        attn_scores.masked_fill_(mask_bool, -torch.inf)

        attn_weights = torch.softmax(
            attn_scores / keys.shape[-1]**0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)

        context_vec = (attn_weights @ values).transpose(1, 2)  # (b, num_tokens, num_heads, head_dim)

        context_vec = context_vec.contiguous().view(
            b, num_tokens, self.d_out
        )  # combine heads: (b, num_tokens, d_out)
        context_vec = self.out_proj(context_vec)  # optional linear projection
        return context_vec


# The layers whose weights the fast paths (the SDPA attention's fused QKV, the KV cache) may read: type -> a function
# giving the (weight (out, in), bias (out,) or None) of the affine map the layer computes. ``llmscratch.lora``
# adds ``LinearWithLoRA`` (its weight folded: W + alpha * (A @ B).T). A layer of any other type (a subclass
# included) is never read for weights: the fast paths call it, so whatever its forward computes applies.
LINEAR_LAYERS = {nn.Linear: lambda linear: (linear.weight, linear.bias)}


def register_linear_layer(layer_type, weight_and_bias):
    """Let the fast paths read ``weight_and_bias(layer)`` for layers of exactly ``layer_type`` (ch03_attention,
    fast path): the (weight (out, in), bias or None) of the affine map that such a layer computes."""
    if not isinstance(layer_type, type) or not callable(weight_and_bias):
        raise ValueError("register_linear_layer needs a module class and a function layer -> (weight, bias)")
    LINEAR_LAYERS[layer_type] = weight_and_bias


def linear_weight_and_bias(layer):
    """The (weight (out, in), bias or None) that ``layer`` multiplies by, for ``nn.Linear`` and the registered
    linear layers (``LINEAR_LAYERS``); ``None`` for any other module: call it instead (ch03_attention, fast path)."""
    weight_and_bias = LINEAR_LAYERS.get(type(layer))
    return None if weight_and_bias is None else weight_and_bias(layer)


def qkv_weights_and_bias(att):
    """The query, key and value weights of ``att``, 3 x (d_out, d_in), and their biases stacked, (3 * d_out,)
    or None: what a fused QKV projection (the fast path, the KV cache) multiplies by. ``None`` instead of the
    pair when a projection is not a linear layer the fast paths can read (see ``LINEAR_LAYERS``)."""
    found = [linear_weight_and_bias(p) for p in (att.W_query, att.W_key, att.W_value)]
    if any(pair is None for pair in found):
        return None
    weights = [weight for weight, _ in found]
    if all(bias is None for _, bias in found):
        return weights, None
    biases = [weight.new_zeros(weight.shape[0]) if bias is None else bias for weight, bias in found]
    return weights, torch.cat(biases)  # (3 * d_out,)


def qkv_projection(att, x):
    """Queries, keys and values of ``x`` (b, num_tokens, d_in) side by side, (b, num_tokens, 3 * d_out): one fused
    matrix multiply where ``qkv_weights_and_bias`` can read the weights, else the three projections called."""
    found = qkv_weights_and_bias(att)
    if found is None:  # e.g. a wrapper the fast path does not know: its own forward runs
        return torch.cat([att.W_query(x), att.W_key(x), att.W_value(x)], dim=-1)
    weights, bias = found
    return F.linear(x, torch.cat(weights), bias)


class MultiHeadAttentionSDPA(MultiHeadAttention):
    """``MultiHeadAttention`` computed the fast way (ch03_attention, beyond the book).

    Same parameters, buffers and state-dict keys as ``MultiHeadAttention`` (weights load into either class), but
    the three projections run as one fused matrix multiply and the attention itself is PyTorch's
    ``scaled_dot_product_attention`` (flash / memory-efficient kernels, causal, dropout only in training).
    Projections wrapped by LoRA (appendix E) are fused with their adapters folded in; projections of a type
    the fast path does not know are called one by one (``qkv_projection``).
    """

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        qkv = qkv_projection(self, x)  # (b, num_tokens, 3 * d_out)
        qkv = qkv.view(b, num_tokens, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (b, num_heads, num_tokens, head_dim)

        context_vec = F.scaled_dot_product_attention(
            queries, keys, values, is_causal=True,
            dropout_p=self.dropout.p if self.training else 0.0,
        )  # (b, num_heads, num_tokens, head_dim)
        context_vec = context_vec.transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)  # (b, num_tokens, d_out)


class PyTorchMultiHeadAttention(MultiHeadAttentionSDPA):
    """The SDPA attention under the book repository's name and signature (ch03_attention, beyond the book).

    The book's repository (its speed-up bonus code for chapter 5) calls its attention on PyTorch's
    ``scaled_dot_product_attention`` ``PyTorchMultiHeadAttention(d_in, d_out, num_heads, dropout=0.0,
    qkv_bias=False)``: no ``context_length``, because the causal kernel needs no mask. Here it is
    ``MultiHeadAttentionSDPA`` built that way: the same computation and parameters (``W_query``, ``W_key``,
    ``W_value``, ``out_proj``, fused at run time, where the repository stores one ``qkv`` and a ``proj``), and no
    ``mask`` buffer, so its state dict is ``MultiHeadAttention``'s without ``mask`` (load one into the other with
    ``strict=False``). ``d_out`` must be divisible by ``num_heads`` (a ``ValueError`` otherwise).
    """

    def __init__(self, d_in, d_out, num_heads, dropout=0.0, qkv_bias=False):
        super().__init__(d_in, d_out, context_length=0, dropout=dropout, num_heads=num_heads, qkv_bias=qkv_bias)
        self.mask = None  # no buffer: scaled_dot_product_attention(is_causal=True) masks the future itself


ATTENTION_IMPLEMENTATIONS = {
    "scratch": MultiHeadAttention,  # the book's code (default)
    "sdpa": MultiHeadAttentionSDPA,  # fused QKV + scaled_dot_product_attention
}


def attention_class(attn_impl):
    """The multi-head attention class for ``cfg["attn_impl"]``: ``"scratch"`` or ``"sdpa"`` (ch04_gpt_model)."""
    if attn_impl not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"Unknown attn_impl {attn_impl!r}: use one of {sorted(ATTENTION_IMPLEMENTATIONS)} "
            "('scratch' is the book's code, 'sdpa' the fast path)"
        )
    return ATTENTION_IMPLEMENTATIONS[attn_impl]
