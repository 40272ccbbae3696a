"""The GPT model of chapter 4: configuration, layer norm, GELU, feed forward, transformer block, GPTModel.

Introduced in ch04_gpt_model. The classes are the book's, with two extensions that keep its behaviour by
default: ``cfg["attn_impl"]`` picks the attention implementation (``"scratch"``, the book's, or ``"sdpa"``, the
fast path, with the same state-dict layout), and ``generate_text_simple(..., use_cache=True)`` generates with a
KV cache (``llmscratch.kv_cache``), token for token the same as the book's loop.
"""

from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn as nn

from .attention import attention_class
from .kv_cache import generate_text_cached


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
GPT2_CONFIGS: dict[str, GPTConfig] = {
    "124M": GPT_CONFIG_124M,    # gpt2 (small)
    "355M": GPT_CONFIG_355M,    # gpt2-medium
    "774M": GPT_CONFIG_774M,    # gpt2-large
    "1558M": GPT_CONFIG_1558M,  # gpt2-xl
}


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


def check_token_ids(in_idx, context_length):
    """Clear errors for token ids a GPT cannot take: not integers, not 2-D, longer than the context."""
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
    if in_idx.shape[1] > context_length:
        raise ValueError(
            f"the input has {in_idx.shape[1]} tokens but the model's context_length is {context_length}; "
            f"keep the last ones with idx[:, -{context_length}:] (generate_text_simple crops for you)"
        )


class GPTModel(nn.Module):
    """The GPT model: embeddings, ``n_layers`` transformer blocks, final norm, output head (ch04_gpt_model, 4.6)."""

    def __init__(self, cfg):
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
        check_token_ids(in_idx, self.pos_emb.num_embeddings)
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


def generate_text_simple(model, idx, max_new_tokens, context_size, use_cache=False):
    """Greedy generation: append the most likely next token ``max_new_tokens`` times (ch04_gpt_model, 4.7).

    ``idx`` is a (batch, num_tokens) tensor of token ids. With ``use_cache=True`` the keys and values of the
    tokens already seen are kept (KV cache) instead of recomputed at every step: same tokens, much faster.
    """
    if use_cache:
        return generate_text_cached(model, idx, max_new_tokens, context_size)

    for _ in range(max_new_tokens):
        # Crop the current context if it exceeds the supported context size
        idx_cond = idx[:, -context_size:]  # (batch, n_tokens), at most context_size tokens

        with torch.no_grad():
            logits = model(idx_cond)  # (batch, n_tokens, vocab_size)

        # Focus only on the last time step
        logits = logits[:, -1, :]  # (batch, vocab_size)

        probas = torch.softmax(logits, dim=-1)  # (batch, vocab_size)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)  # (batch, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (batch, n_tokens+1)

    return idx
