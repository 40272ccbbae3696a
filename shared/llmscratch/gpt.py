"""The GPT model of chapter 4: configuration, layer norm, GELU, feed forward, transformer block, GPTModel.

Introduced in ch04_gpt_model. The classes and ``generate_text_simple`` are the book's. Beyond the book:
``cfg["attn_impl"]`` picks the attention implementation (``"scratch"``, the book's and the default, or
``"sdpa"``, the fast path, with the same state-dict layout; ``GPTModelFast(cfg)``, the book repository's name,
is ``GPTModel`` with ``"sdpa"``); ``check_config`` and ``check_token_ids`` turn the
book's ``KeyError``/``IndexError`` on a bad config or bad token ids into ``ValueError``s that say what to do.
The KV-cache generator lives in ``llmscratch.kv_cache`` (which imports this module, never the reverse).
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn as nn

from .attention import attention_class


class GPTConfig(TypedDict, total=False):
    """Keys of a GPT configuration dict (ch04_gpt_model, 4.1). Values below are GPT-2 small's."""

    vocab_size: int  # 50257: GPT-2's BPE vocabulary
    context_length: int  # 1024: the longest input, in tokens (size of the positional embedding)
    emb_dim: int  # 768: width of the embeddings and of every block
    n_heads: int  # 12: attention heads per block (emb_dim must be divisible by it)
    n_layers: int  # 12: transformer blocks
    drop_rate: float  # 0.1: dropout after embeddings, in attention and on the shortcuts
    qkv_bias: bool  # False: bias in the query/key/value projections (OpenAI's GPT-2 weights have it)
    attn_impl: str  # optional, "scratch" (default, the book's code) or "sdpa" (fused QKV + SDPA)


GPT_CONFIG_124M: GPTConfig = {
    "vocab_size": 50257,     # Vocabulary size
    "context_length": 1024,  # Context length
    "emb_dim": 768,          # Embedding dimension
    "n_heads": 12,           # Number of attention heads
    "n_layers": 12,          # Number of layers
    "drop_rate": 0.1,        # Dropout rate
    "qkv_bias": False        # Query-Key-Value bias
}
# The other GPT-2 sizes differ only in width, depth and heads (ch04_gpt_model, exercise 4.2).
GPT_CONFIG_355M: GPTConfig = {**GPT_CONFIG_124M, "emb_dim": 1024, "n_layers": 24, "n_heads": 16}
GPT_CONFIG_774M: GPTConfig = {**GPT_CONFIG_124M, "emb_dim": 1280, "n_layers": 36, "n_heads": 20}
GPT_CONFIG_1558M: GPTConfig = {**GPT_CONFIG_124M, "emb_dim": 1600, "n_layers": 48, "n_heads": 25}
# A tiny GPT with GPT-2's vocabulary: the same code as GPT_CONFIG_124M, trained in seconds on a CPU. Used by the
# notebooks' quick (smoke) runs, the command line's --tiny and the tests; override keys where a run needs to.
GPT_CONFIG_TINY: GPTConfig = {
    **GPT_CONFIG_124M,
    "context_length": 256,  # long enough for chapter 5's 256-token training windows
    "emb_dim": 64,
    "n_heads": 4,
    "n_layers": 2,
}
GPT2_CONFIGS: dict[str, GPTConfig] = {
    "124M": GPT_CONFIG_124M,    # gpt2 (small)
    "355M": GPT_CONFIG_355M,    # gpt2-medium
    "774M": GPT_CONFIG_774M,    # gpt2-large
    "1558M": GPT_CONFIG_1558M,  # gpt2-xl
}


REQUIRED_CONFIG_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")


def check_config(cfg):
    """Raise a ``ValueError`` naming the problem unless ``cfg`` can build a ``GPTModel`` (ch04_gpt_model, 4.1)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"cfg must be a dict like GPT_CONFIG_124M, got {type(cfg).__name__}")
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in cfg]
    if missing:
        raise ValueError(f"the config lacks {', '.join(map(repr, missing))}: start from a complete one, e.g. "
                         f"{{**GPT_CONFIG_124M, ...your changes}}")
    for key in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"cfg[{key!r}] must be a positive integer, got {cfg[key]!r}")
    if cfg["emb_dim"] % cfg["n_heads"]:
        raise ValueError(f"cfg['emb_dim']={cfg['emb_dim']} must be divisible by cfg['n_heads']={cfg['n_heads']}: "
                         "each head gets emb_dim // n_heads dimensions")
    if not 0.0 <= cfg["drop_rate"] < 1.0:
        raise ValueError(f"cfg['drop_rate'] must be in [0, 1), got {cfg['drop_rate']!r}")


class LayerNorm(nn.Module):
    """Layer normalization with a trainable scale and shift (ch04_gpt_model, 4.2)."""

    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    """GELU activation, the tanh approximation used by GPT-2 (ch04_gpt_model, 4.3)."""

    def __init__(self):
        super().__init__()

    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(
            torch.sqrt(torch.tensor(2.0 / torch.pi)) *
            (x + 0.044715 * torch.pow(x, 3))
        ))


class FeedForward(nn.Module):
    """Two linear layers around a GELU, expanding to 4 * emb_dim (ch04_gpt_model, 4.3)."""

    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),  # (b, num_tokens, 4 * emb_dim)
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),  # (b, num_tokens, emb_dim)
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Attention and feed forward, each after a layer norm and around a shortcut (ch04_gpt_model, 4.5)."""

    def __init__(self, cfg):
        super().__init__()
        attention = attention_class(cfg.get("attn_impl", "scratch"))  # the book's MultiHeadAttention by default
        self.att = attention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"])
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x):
        # Shortcut connection for the attention block
        shortcut = x
        x = self.norm1(x)
        x = self.att(x)  # (b, num_tokens, emb_dim)
        x = self.drop_shortcut(x)
        x = x + shortcut  # Add the original input back

        # Shortcut connection for the feed forward block
        shortcut = x
        x = self.norm2(x)
        x = self.ff(x)
        x = self.drop_shortcut(x)
        x = x + shortcut  # Add the original input back

        return x


def check_token_ids(in_idx, context_length, vocab_size=None):
    """Clear errors for token ids a GPT cannot take: not integers, not 2-D, empty, longer than the context, or
    (with ``vocab_size``) outside the vocabulary."""
    if in_idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(
            f"token ids must be an integer tensor (torch.long), got {in_idx.dtype}; "
            "use the tokenizer's ids, e.g. torch.tensor(ids) or ids.long()"
        )
    if in_idx.dim() != 2:
        raise ValueError(
            f"token ids must have shape (batch_size, num_tokens), got {tuple(in_idx.shape)}; "
            "add a batch dimension with ids.unsqueeze(0)"
        )
    if in_idx.shape[1] == 0:
        raise ValueError("the input has no tokens: give at least one token id per sequence (an empty prompt "
                         "cannot be continued; start from e.g. the <|endoftext|> token, id 50256)")
    if in_idx.shape[1] > context_length:
        raise ValueError(
            f"the input has {in_idx.shape[1]} tokens but the model's context_length is {context_length}; "
            f"keep the last ones with idx[:, -{context_length}:] (generate_text_simple crops for you)"
        )
    if vocab_size is not None and in_idx.numel() and not torch.compiler.is_compiling():
        low, high = torch.aminmax(in_idx)
        if low < 0 or high >= vocab_size:
            bad = (low if low < 0 else high).item()
            raise ValueError(f"token id {bad} is outside the model's vocabulary (0 to {vocab_size - 1}): encode "
                             "with the tokenizer the model was built for, or build it with a larger vocab_size")


class GPTModel(nn.Module):
    """The GPT model: embeddings, ``n_layers`` transformer blocks, final norm, output head (ch04_gpt_model, 4.6)."""

    def __init__(self, cfg):
        check_config(cfg)  # beyond the book: a ValueError naming a missing key or a bad size
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])

        self.trf_blocks = nn.Sequential(
            *[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])

        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(
            cfg["emb_dim"], cfg["vocab_size"], bias=False
        )

    def forward(self, in_idx):
        check_token_ids(in_idx, self.pos_emb.num_embeddings, self.tok_emb.num_embeddings)  # beyond the book
        batch_size, seq_len = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)  # (b, num_tokens, emb_dim)
        pos_embeds = self.pos_emb(
            torch.arange(seq_len, device=in_idx.device)
        )  # (num_tokens, emb_dim)
        x = tok_embeds + pos_embeds  # (b, num_tokens, emb_dim)
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        logits = self.out_head(x)  # (b, num_tokens, vocab_size)
        return logits


class GPTModelFast(GPTModel):
    """The book repository's name for its fast GPT: ``GPTModelFast(cfg)`` (ch04_gpt_model, beyond the book).

    Here it is ``GPTModel`` with the SDPA attention (``cfg["attn_impl"] = "sdpa"``, whatever ``cfg`` says): the
    same parameters and state-dict keys as ``GPTModel``, so weights saved from either load into the other, and
    the same logits up to floating-point rounding. The repository's version also swaps in ``nn.LayerNorm`` and
    ``nn.GELU(approximate="tanh")``, which would rename parameters (``weight``/``bias`` for ``scale``/``shift``);
    the book's ``LayerNorm`` and ``GELU`` stay, so a checkpoint works in both classes.
    """

    def __init__(self, cfg):
        check_config(cfg)  # a ValueError naming the problem, before the copy below
        super().__init__({**cfg, "attn_impl": "sdpa"})


def check_generation_args(model, idx, max_new_tokens, context_size):
    """Clear ``ValueError``s for a generation the model cannot do: an empty prompt, ``context_size`` larger than
    the model's context, a negative number of new tokens (ch04_gpt_model, 4.7; shared with ``generate``)."""
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be a (batch_size, num_tokens) tensor of token ids, got {shape}; "
                         "text_to_token_ids(text, tokenizer) gives one with batch size 1")
    if idx.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. the <|endoftext|> token, id 50256)")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    pos_emb = getattr(model, "pos_emb", None)  # any model works; a GPTModel's context is checked too
    context_length = pos_emb.num_embeddings if isinstance(pos_emb, nn.Embedding) else None
    if context_size < 1 or (context_length is not None and context_size > context_length):
        raise ValueError(f"context_size must be between 1 and the model's context_length ({context_length}), "
                         f"got {context_size}; use model.pos_emb.weight.shape[0]")


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Greedy generation: append the most likely next token ``max_new_tokens`` times (ch04_gpt_model, 4.7).

    ``idx`` is a (batch, n_tokens) tensor of token ids. The KV-cache version, the same tokens much faster, is
    ``llmscratch.kv_cache.generate_text_simple_cached`` (or ``generate(..., use_cache=True)``).
    """
    check_generation_args(model, idx, max_new_tokens, context_size)  # beyond the book: clear errors
    # idx is (batch, n_tokens) array of indices in the current context
    for _ in range(max_new_tokens):

        # Crop current context if it exceeds the supported context size
        # E.g., if LLM supports only 5 tokens, and the context size is 10
        # then only the last 5 tokens are used as context
        idx_cond = idx[:, -context_size:]

        # Get the predictions
        with torch.no_grad():
            logits = model(idx_cond)

        # Focus only on the last time step
        # (batch, n_tokens, vocab_size) becomes (batch, vocab_size)
        logits = logits[:, -1, :]

        # Apply softmax to get probabilities
        probas = torch.softmax(logits, dim=-1)  # (batch, vocab_size)

        # Get the idx of the vocab entry with the highest probability value
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)  # (batch, 1)

        # Append sampled index to the running sequence
        idx = torch.cat((idx, idx_next), dim=1)  # (batch, n_tokens+1)

    return idx
