"""LoRA, low-rank adaptation: finetune a few million parameters instead of all 124 million (appendix E).

Introduced in ch06_finetune_classification, appendix E. ``LoRALayer``, ``LinearWithLoRA`` and
``replace_linear_with_lora`` are the book's: a frozen linear layer ``W`` plus a trainable low-rank update,
``x @ W.T + b + alpha * (x @ A @ B)``, with ``A`` (in_features, rank) and ``B`` (rank, out_features), ``B``
starting at zero so that a fresh adapter changes nothing.

Beyond the book:

- ``merge_lora`` folds every adapter into a plain ``nn.Linear``, ``W' = W + alpha * (A @ B).T``: the same
  function, no extra work per token, and a state dict that loads into a plain ``GPTModel``;
- the package's fast paths (``attn_impl="sdpa"``, the KV cache, ``generate(..., use_cache=True)``) read a
  ``LinearWithLoRA`` with its adapter folded in (``lora_weight_and_bias``, registered below with
  ``llmscratch.attention.register_linear_layer``), so a wrapped model gives the same logits and tokens on every
  path. A layer of another type, a subclass of ``LinearWithLoRA`` included, is called, never read for weights.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn as nn

from .attention import linear_weight_and_bias, register_linear_layer


def _check_lora_args(rank, alpha):
    """Clear ``ValueError``s for a rank or an alpha that LoRA cannot use (appendix E)."""
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1 (the inner dimension of A and B; the book uses 16), "
                         f"got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number (the scale of the adapter's output; the book uses "
                         f"alpha = 16 with rank 16), got {alpha!r}")


class LoRALayer(torch.nn.Module):
    """The low-rank update ``alpha * (x @ A @ B)``: (..., in_dim) -> (..., out_dim).

    Introduced in ch06_finetune_classification, appendix E. ``A`` (in_dim, rank) starts like a linear layer's
    weights (Kaiming uniform), ``B`` (rank, out_dim) at zero, so the update starts at zero.
    """

    def __init__(self, in_dim, out_dim, rank, alpha):
        _check_lora_args(rank, alpha)  # beyond the book: a ValueError naming a bad rank or alpha
        super().__init__()
        self.A = torch.nn.Parameter(torch.empty(in_dim, rank))  # (in_dim, rank)
        torch.nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # similar to standard weight initialization
        self.B = torch.nn.Parameter(torch.zeros(rank, out_dim))  # (rank, out_dim)
        self.alpha = alpha

    def forward(self, x):
        x = self.alpha * (x @ self.A @ self.B)  # (..., out_dim)
        return x


class LinearWithLoRA(torch.nn.Module):
    """A linear layer plus a ``LoRALayer`` of the same shape: ``linear(x) + lora(x)``.

    Introduced in ch06_finetune_classification, appendix E. ``merge_lora`` folds it back into one ``nn.Linear``.
    """

    def __init__(self, linear, rank, alpha):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(
            linear.in_features, linear.out_features, rank, alpha
        )

    def forward(self, x):
        return self.linear(x) + self.lora(x)  # (..., out_features)


def replace_linear_with_lora(model, rank, alpha):
    """Wrap every ``nn.Linear`` of ``model`` (at any depth) in a ``LinearWithLoRA``, in place.

    Introduced in ch06_finetune_classification, appendix E. Freeze the model's parameters first, as the book
    does: only the adapters' ``A`` and ``B`` are then trainable.
    """
    _check_lora_args(rank, alpha)  # beyond the book: a ValueError naming a bad rank or alpha
    for name, module in model.named_children():
        if isinstance(module, torch.nn.Linear):
            # Replace the Linear layer with LinearWithLoRA
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        else:
            # Recursively apply the same function to child modules
            replace_linear_with_lora(module, rank, alpha)


def lora_weight_and_bias(layer):
    """The (weight (out, in), bias) of the one linear layer that computes what the ``LinearWithLoRA`` ``layer``
    computes: ``W + alpha * (A @ B).T`` and the bias of its linear layer.

    Introduced in ch06_finetune_classification, appendix E (beyond the book): what the fast paths read for a
    LoRA layer. Differentiable: gradients reach ``A`` and ``B``. ``None`` if the wrapped layer is itself of a
    type whose weights cannot be read (see ``llmscratch.attention.LINEAR_LAYERS``).
    """
    inner = linear_weight_and_bias(layer.linear)  # nn.Linear, or a LinearWithLoRA wrapped again
    if inner is None:
        return None
    weight, bias = inner
    lora = layer.lora
    delta = lora.alpha * (lora.A @ lora.B)  # (in_features, out_features)
    return weight + delta.T, bias  # (out_features, in_features), (out_features,) or None


register_linear_layer(LinearWithLoRA, lora_weight_and_bias)  # the fast paths fold the adapter in


def _merged_linear(layer):
    """``layer``'s own ``nn.Linear`` with the adapter added to its weight, in place: W += alpha * (A @ B).T."""
    linear, lora = layer.linear, layer.lora
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"merge_lora folds a LinearWithLoRA around an nn.Linear, not around {type(linear).__name__}")
    with torch.no_grad():
        linear.weight += (lora.alpha * (lora.A @ lora.B)).T  # (out_features, in_features); the bias stays
    return linear


def _merge_children(module):
    for name, child in module.named_children():
        _merge_children(child)  # from the inside out: a layer wrapped twice folds both adapters
        if type(child) is LinearWithLoRA:
            setattr(module, name, _merged_linear(child))


def merge_lora(model):
    """Fold every ``LinearWithLoRA`` of ``model`` into a plain ``nn.Linear`` with ``W + alpha * (A @ B).T``.

    Introduced in ch06_finetune_classification, appendix E (beyond the book). In place: each wrapper is
    replaced by its own linear layer, whose weight is updated (bias, device, dtype and ``requires_grad`` stay).
    The merged model computes the same function (logits within float rounding), with no adapter work per
    token, and its state dict has the plain model's keys. Returns ``model`` (given a ``LinearWithLoRA`` itself,
    returns its merged ``nn.Linear``). Subclasses of ``LinearWithLoRA``, which may compute something else, are
    left as they are.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"merge_lora needs a torch.nn.Module, got {type(model).__name__}")
    _merge_children(model)
    return _merged_linear(model) if type(model) is LinearWithLoRA else model


__all__ = ["LinearWithLoRA", "LoRALayer", "lora_weight_and_bias", "merge_lora", "replace_linear_with_lora"]
