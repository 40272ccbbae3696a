"""KV-cache generation for ``GPTModel`` (ch04_gpt_model, beyond the book).

Without a cache, every new token recomputes the keys and values of the whole context. With one, each step
feeds only the newest token through the model and attends to the keys and values kept from earlier steps.
The cache works on the model's own modules and weights (any ``attn_impl``, and LoRA-wrapped layers of appendix E,
whose adapters it folds into the weights it reads), so it needs no change to the book's classes, and it
reproduces the book's loop exactly, including the crop to ``context_size``: once the text is longer than the
context, positions shift, so the cache is refilled from the last ``context_size`` tokens, just as the full
recomputation sees them.

A decoding step works on one token, so its cost is reading every weight once (memory bound) plus a few
hundred tiny operations. The fast path therefore prepares once per generation what it can (the query/key/value
weights stacked into one matrix; on CPU, for long generations, the weights copied into the layout that
matrix-vector products read fastest) and runs per step as few operations as it can (fused ``layer_norm`` and
``gelu`` kernels for the book's ``LayerNorm`` and ``GELU``, which compute the same functions; the output head
for the last position only; a preallocated cache; ``torch.inference_mode``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import linear_weight_and_bias, qkv_projection, qkv_weights_and_bias
from .gpt import GELU, FeedForward, LayerNorm, check_generation_args, check_token_ids, generate_text_simple


class KVCache:
    """Keys and values of every layer for the tokens seen so far: (n_layers, b, num_heads, max_tokens, head_dim)."""

    def __init__(self, n_layers, batch_size, num_heads, max_tokens, head_dim, device, dtype):
        shape = (n_layers, batch_size, num_heads, max_tokens, head_dim)
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.max_tokens = max_tokens
        self.length = 0  # tokens stored so far

    @classmethod
    def for_model(cls, model, batch_size, max_tokens):
        att = model.trf_blocks[0].att
        weight = model.tok_emb.weight
        return cls(len(model.trf_blocks), batch_size, att.num_heads, max_tokens, att.head_dim,
                   weight.device, weight.dtype)

    def append(self, layer, keys, values):
        """Store (b, num_heads, n_new, head_dim) keys/values; return all of this layer's, new ones included."""
        end = self.length + keys.shape[2]
        if end > self.max_tokens:
            raise ValueError(f"KV cache holds {self.max_tokens} tokens; cannot store {end}")
        self.keys[layer, :, :, self.length:end] = keys
        self.values[layer, :, :, self.length:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


def cached_attention(att, x, cache, layer, qkv, out_proj):
    """Multi-head attention of new tokens ``x`` (b, n_new, d_in) over the cached and the new tokens.

    ``qkv`` computes the fused query/key/value projection, (b, n_new, 3 * d_out), and ``out_proj`` the output
    projection of ``att``, both prepared once per generation (``DecodePlan``).
    """
    b, n_new, _ = x.shape
    qkv_out = qkv(x).view(b, n_new, 3, att.num_heads, att.head_dim)
    queries, keys, values = qkv_out.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (b, num_heads, n_new, head_dim)
    start = cache.length
    keys, values = cache.append(layer, keys, values)  # (b, num_heads, n_seen, head_dim)
    n_seen = keys.shape[2]
    if n_new == 1:
        # One query that may look at every position: two small matrix products, no mask
        attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, 1, n_seen)
        attn_weights = torch.softmax(attn_scores / math.sqrt(att.head_dim), dim=-1)
        context_vec = attn_weights @ values  # (b, num_heads, 1, head_dim)
    elif start == 0:
        # Prefill: plain causal attention over the new tokens
        context_vec = F.scaled_dot_product_attention(queries, keys, values, is_causal=True)
    else:
        # New token i sits at position start + i and may look at every position up to its own
        mask = torch.ones(n_new, n_seen, dtype=torch.bool, device=x.device).tril(diagonal=start)
        context_vec = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
    context_vec = context_vec.transpose(1, 2).reshape(b, n_new, att.d_out)
    return out_proj(context_vec)  # (b, n_new, d_out)


# Rows of a weight matrix copied at a time when building a transposed copy: blocks of this size keep the
# strided reads in cache (on a 2-core EPYC about 2x faster than torch.cat of the transposed weights).
TRANSPOSE_COPY_ROWS = 512


def transposed_blocks(weights, chunks):
    """The stacked (out, in) ``weights`` transposed and cut into ``chunks`` column blocks, (chunks, in, cols).

    Block j holds output features ``j * cols`` to ``(j + 1) * cols`` in the (in, out) layout, ``cols`` being
    ``ceil(out / chunks)``; the columns past ``out`` in the last block are zeros.
    """
    out_features, in_features = sum(w.shape[0] for w in weights), weights[0].shape[1]
    if any(w.shape[1] != in_features for w in weights):
        raise ValueError(f"weights to stack need the same in_features, got {[tuple(w.shape) for w in weights]}")
    cols = -(-out_features // chunks)
    blocks = torch.empty(chunks, in_features, cols, device=weights[0].device, dtype=weights[0].dtype)
    blocks[-1, :, out_features - (chunks - 1) * cols:] = 0  # padding of the last block
    row = 0  # output feature (row of the stacked weights) copied next
    for w in weights:
        start = 0
        while start < w.shape[0]:
            chunk, col = divmod(row, cols)
            n = min(TRANSPOSE_COPY_ROWS, w.shape[0] - start, cols - col)
            blocks[chunk, :, col:col + n].copy_(w[start:start + n].T)  # (in, n)
            start, row = start + n, row + n
    return blocks


class FastLinear:
    """``nn.Linear``'s function, y = x W^T + b, optionally with W stored transposed, (in_features, out_features).

    ``weights`` is one (out, in) matrix or a list of them, stacked into one (as for the fused QKV projection).
    For one token a linear layer is a matrix-vector product, limited by how fast the weights stream from
    memory. On CPUs (MKL) reading W in the (in, out) layout, the one GPT-2's original Conv1D uses, is faster
    than in ``nn.Linear``'s (out, in), and faster still when the output features are cut into ``chunks``
    column blocks, one per thread, multiplied by one batched product (``torch.bmm``): each thread then streams
    its own block. On a 2-core EPYC, 2 blocks read GPT-2's weights about 1.4x faster than one (in, out) matrix
    and 1.6x faster than ``nn.Linear``. The copy costs memory and time once, so it is made only when
    ``transpose=True``; ``chunks`` (default: torch's CPU threads) only matters then.
    """

    def __init__(self, weights, bias=None, transpose=False, chunks=None):
        weights = list(weights) if isinstance(weights, (list, tuple)) else [weights]
        self.bias = bias
        self.out_features = sum(w.shape[0] for w in weights)
        if transpose:
            chunks = torch.get_num_threads() if chunks is None else chunks
            self.weight, self.blocks = None, transposed_blocks(weights, max(1, chunks))  # (chunks, in, cols)
        else:
            self.weight, self.blocks = torch.cat(weights) if len(weights) > 1 else weights[0], None

    def __call__(self, x):
        if self.blocks is None:
            return F.linear(x, self.weight, self.bias)
        x2d = x.reshape(-1, x.shape[-1])  # (m, in)
        chunks = self.blocks.shape[0]
        if chunks == 1:
            y = x2d @ self.blocks[0]  # (m, out)
        else:
            y = torch.bmm(x2d.expand(chunks, *x2d.shape), self.blocks)  # (chunks, m, cols): a block per thread
            y = y.transpose(0, 1).reshape(x2d.shape[0], -1)[:, :self.out_features]  # (m, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def fused_qkv(att, transpose=False):
    """The query, key and value projections of ``att`` as one ``FastLinear``: (b, n, d_in) -> (b, n, 3 * d_out).

    LoRA-wrapped projections (appendix E) are fused with their adapters folded into the weights; projections
    the fast path cannot read (``llmscratch.attention.LINEAR_LAYERS``) are called one by one instead.
    """
    found = qkv_weights_and_bias(att)
    if found is None:
        return lambda x: qkv_projection(att, x)
    weights, bias = found
    return FastLinear(weights, bias, transpose)


def _fast(module, transpose=False):
    """A function computing ``module``: fused kernels for the book's LayerNorm and GELU, ``FastLinear`` for
    ``nn.Linear`` and the registered linear layers (a LoRA layer's adapter folded into its weight), nothing for
    dropout in eval mode; any other module is used as it is, so its own forward runs."""
    if type(module) is FeedForward:
        return _fast(module.layers, transpose)
    if type(module) is LayerNorm:
        return lambda x: F.layer_norm(x, module.scale.shape, module.scale, module.shift, module.eps)
    if type(module) is GELU:
        return lambda x: F.gelu(x, approximate="tanh")  # the same tanh approximation as the book's GELU
    if (linear := linear_weight_and_bias(module)) is not None:  # nn.Linear, LinearWithLoRA (folded)
        return FastLinear(*linear, transpose)
    if type(module) is nn.Dropout and not (module.training and module.p > 0):
        return lambda x: x
    if type(module) is nn.Sequential:
        steps = [_fast(m, transpose) for m in module]

        def run(x):
            for step in steps:
                x = step(x)
            return x
        return run
    return module


class DecodePlan:
    """What a cached generation prepares once and ``forward_with_cache`` uses at every step (ch04_gpt_model,
    KV cache): the blocks' modules as fast functions and each block's query/key/value weights stacked into
    one matrix; with ``transpose=True`` every linear layer's weights copied into transposed blocks (see
    ``FastLinear``). A LoRA layer (appendix E) enters with its adapter folded in, W + alpha * (A @ B).T, a
    copy of its weight held for the plan's life. Build it again whenever the weights change.
    """

    def __init__(self, model, transpose=False):
        self.drop_emb = _fast(model.drop_emb)
        self.final_norm = _fast(model.final_norm)
        self.out_head = _fast(model.out_head, transpose)
        self.blocks = [
            (block.att, fused_qkv(block.att, transpose),
             _fast(block.att.out_proj, transpose), _fast(block.norm1), _fast(block.norm2),
             _fast(block.ff, transpose), _fast(block.drop_shortcut))
            for block in model.trf_blocks
        ]


@torch.no_grad()
def forward_with_cache(model, new_idx, cache, last_only=False, plan=None):
    """Logits (b, n_new, vocab_size) for ``new_idx`` (b, n_new), the tokens after the ``cache.length`` seen.

    ``last_only=True`` returns the logits of the last position only, (b, 1, vocab_size): all that greedy
    generation needs. ``plan``: a ``DecodePlan(model)`` built once per generation; without one, each call
    builds its own (which stacks the query/key/value weights again: fine for a single call, slow in a loop).
    """
    plan = DecodePlan(model) if plan is None else plan
    start = cache.length
    positions = torch.arange(start, start + new_idx.shape[1], device=new_idx.device)
    x = plan.drop_emb(model.tok_emb(new_idx) + model.pos_emb(positions))  # (b, n_new, emb_dim)
    for layer, (att, qkv, out_proj, norm1, norm2, ff, drop_shortcut) in enumerate(plan.blocks):
        x = drop_shortcut(cached_attention(att, norm1(x), cache, layer, qkv, out_proj)) + x
        x = drop_shortcut(ff(norm2(x))) + x
    cache.length += new_idx.shape[1]
    if last_only:
        x = x[:, -1:]
    return plan.out_head(plan.final_norm(x))


class CachedDecoder:
    """Next-token logits for a growing ``idx`` (b, n_tokens), one model step per new token.

    The cache holds every token but the newest, so each call feeds only that one through the model; once the
    cache holds ``context_size`` tokens (the text outgrew the context and positions shift) it is refilled from
    the last ``context_size`` tokens, exactly what the book's full recomputation of ``idx[:, -context_size:]``
    sees. Both ``generate_text_cached`` and ``llmscratch.generate(..., use_cache=True)`` decode with it.
    ``transpose``: see ``FastLinear`` and ``DecodePlan``. Use it under ``torch.inference_mode()`` or
    ``torch.no_grad()``, and build a new one whenever the weights change.
    """

    def __init__(self, model, idx, context_size, transpose=False):
        context_length = model.pos_emb.num_embeddings
        if context_size > context_length:
            raise ValueError(f"context_size={context_size} exceeds the model's context_length={context_length}")
        check_token_ids(idx[:, -context_size:], context_length, model.tok_emb.num_embeddings)
        self.model = model
        self.context_size = context_size
        self.plan = DecodePlan(model, transpose)
        self.cache = KVCache.for_model(model, idx.shape[0], context_size)  # (n_layers, b, heads, context_size, hd)
        self.filled = False

    @classmethod
    def for_generation(cls, model, idx, max_new_tokens, context_size):
        """A decoder for ``max_new_tokens`` steps, with transposed weights where they pay off (on CPU, long runs)."""
        with torch.no_grad():
            return cls(model, idx, context_size, use_transposed_weights(idx, max_new_tokens))

    @torch.no_grad()
    def next_token_logits(self, idx):
        """Logits (b, vocab_size) of the token after ``idx`` (b, n_tokens); ``idx`` grows by one column a call."""
        if not self.filled or self.cache.length == self.context_size:
            self.cache.length = 0  # (re)fill from position 0 with the last context_size tokens
            new_tokens = idx[:, -self.context_size:]  # (b, min(n_tokens, context_size))
            self.filled = True
        else:
            new_tokens = idx[:, -1:]  # (b, 1): the cache holds every earlier token
        logits = forward_with_cache(self.model, new_tokens, self.cache, last_only=True, plan=self.plan)
        return logits[:, -1, :]  # (b, vocab_size)


# Below this many new tokens, copying the weights into the transposed blocks of ``FastLinear`` costs more than
# it saves (on a 2-core CPU the copy takes about as long as 30 steps save: both scale with the model's size).
TRANSPOSE_MIN_TOKENS = 40


def use_transposed_weights(idx, max_new_tokens):
    """The default of ``transpose``: on CPU, for generations of at least ``TRANSPOSE_MIN_TOKENS`` tokens."""
    return idx.device.type == "cpu" and max_new_tokens >= TRANSPOSE_MIN_TOKENS


def generate_text_cached(model, idx, max_new_tokens, context_size, transpose=None):
    """``generate_text_simple`` with a KV cache: the same greedy tokens, one model step per new token.

    ``transpose``: use a copy of the linear layers' weights in the (in, out) layout (see ``FastLinear``); ``None``
    (default) does so on CPU for ``max_new_tokens >= TRANSPOSE_MIN_TOKENS``. The copy lives only during the call.
    """
    check_generation_args(model, idx, max_new_tokens, context_size)
    if transpose is None:
        transpose = use_transposed_weights(idx, max_new_tokens)
    with torch.inference_mode():
        decoder = CachedDecoder(model, idx, context_size, transpose)
        for _ in range(max_new_tokens):
            logits = decoder.next_token_logits(idx)  # (batch, vocab_size)
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1)
            idx = torch.cat((idx, idx_next), dim=1)  # (batch, n_tokens+1)
    return idx.clone()  # a normal tensor again (tensors made under inference_mode cannot enter autograd)


def generate_text_simple_cached(model, idx, max_new_tokens, context_size=None, use_cache=True):
    """The book's name and signature for KV-cache generation (its bonus material on the KV cache, ch04).

    ``context_size`` defaults to the model's context length; ``use_cache=False`` runs the book's
    ``generate_text_simple``. Same greedy tokens either way (``generate_text_cached`` does the work).
    """
    context_size = model.pos_emb.num_embeddings if context_size is None else context_size
    if not use_cache:
        return generate_text_simple(model, idx, max_new_tokens, context_size)
    return generate_text_cached(model, idx, max_new_tokens, context_size)
