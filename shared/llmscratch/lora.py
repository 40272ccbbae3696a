"""LoRA, low-rank adaptation: finetune a few million parameters instead of all 124 million (appendix E).

Introduced in ch06_finetune_classification, appendix E. ``LoRALayer``, ``LinearWithLoRA`` and
``replace_linear_with_lora`` are the printed book's: a frozen linear layer ``W`` plus a trainable low-rank update,
``x @ W.T + b + alpha * (x @ A @ B)``, with ``A`` (in_features, rank) and ``B`` (rank, out_features), ``B``
starting at zero so that a fresh adapter changes nothing.

Two scales of the update (``LORA_SCALINGS``): the printed book multiplies by ``alpha`` (``"book"``, the default
here); the book's repository multiplies by ``alpha / rank`` since its commit "Add LoRA scaling" (``"rank"``, as
the LoRA paper and most libraries do). At the book's rank 16 and alpha 16 the two differ 16 times.
``lora_alpha(alpha, rank, scaling)`` gives the ``alpha`` to pass to the book's classes so that they compute
either scale; the classes themselves stay the printed book's.

Beyond the book:

- ``add_lora``: appendix E's recipe in one call, freeze every parameter, then wrap every linear layer;

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


LORA_SCALINGS = ("book", "rank")  # alpha * (x @ A @ B) (printed book) or (alpha / rank) * ... (book's repository)


def _check_lora_args(rank, alpha, model=None):
    """Clear ``ValueError``s for a rank or an alpha that LoRA cannot use, or a model already wrapped (appendix E)."""
    if model is not None and any(isinstance(module, LinearWithLoRA) for module in model.modules()):
        raise ValueError("the model already holds LinearWithLoRA layers: replace_linear_with_lora would wrap them "
                         "again; call it once (or merge_lora(model) first to fold the adapters in)")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1 (the inner dimension of A and B; the book uses 16), "
                         f"got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number (the scale of the adapter's output; the book uses "
                         f"alpha = 16 with rank 16), got {alpha!r}")


class LoRALayer(torch.nn.Module):
    """The low-rank update ``alpha * (x @ A @ B)``: (..., in_dim) -> (..., out_dim), as in the printed book (the
    book's repository scales by ``alpha / rank``: pass ``lora_alpha(alpha, rank, "rank")`` as ``alpha``).

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
    _check_lora_args(rank, alpha, model)  # beyond the book: a ValueError naming a bad rank, alpha or model
    for name, module in model.named_children():
        if isinstance(module, torch.nn.Linear):
            # Replace the Linear layer with LinearWithLoRA
            setattr(model, name, LinearWithLoRA(module, rank, alpha))
        else:
            # Recursively apply the same function to child modules
            replace_linear_with_lora(module, rank, alpha)


def lora_alpha(alpha, rank, scaling="book"):
    """The ``alpha`` to give ``LoRALayer`` (or ``replace_linear_with_lora``) so that the update is scaled as
    ``scaling`` says (ch06_finetune_classification, appendix E, beyond the book's classes).

    ``"book"``: the printed book's ``alpha * (x @ A @ B)``, so ``alpha`` itself. ``"rank"``: the book's
    repository's ``(alpha / rank) * (x @ A @ B)`` (its commit "Add LoRA scaling", as in the LoRA paper), so
    ``alpha / rank``: with the book's rank 16 and alpha 16 the update is 16 times smaller than the printed book's.
    """
    _check_lora_args(rank, alpha)
    if scaling not in LORA_SCALINGS:
        raise ValueError(f"scaling must be one of {LORA_SCALINGS} (the printed book's alpha, or the book "
                         f"repository's alpha / rank), got {scaling!r}")
    return alpha if scaling == "book" else alpha / rank


def add_lora(model, rank, alpha, scaling="book"):
    """Appendix E's recipe in one call: freeze every parameter of ``model``, then wrap every linear layer in a
    ``LinearWithLoRA`` of ``rank`` (only the adapters train); in place, returns ``model``
    (ch06_finetune_classification, appendix E). ``scaling`` as in ``lora_alpha``."""
    alpha = lora_alpha(alpha, rank, scaling)
    for param in model.parameters():
        param.requires_grad = False
    replace_linear_with_lora(model, rank=rank, alpha=alpha)
    return model


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
    """``layer``'s own ``nn.Linear`` with a new weight parameter ``W + alpha * (A @ B).T``.

    A new tensor, never an in-place add: the weight may be shared with another module (GPT-2's output head is
    its token embedding, as ``load_pretrained_gpt2`` ties them), which must keep its values.
    """
    linear, lora = layer.linear, layer.lora
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"merge_lora folds a LinearWithLoRA around an nn.Linear, not around {type(linear).__name__}")
    with torch.no_grad():
        merged = linear.weight + (lora.alpha * (lora.A @ lora.B)).T  # (out_features, in_features); bias stays
    linear.weight = nn.Parameter(merged, requires_grad=linear.weight.requires_grad)
    return linear


def _merge_children(module):
    for name, child in module.named_children():
        _merge_children(child)  # from the inside out: a layer wrapped twice folds both adapters
        if type(child) is LinearWithLoRA:
            setattr(module, name, _merged_linear(child))


def merge_lora(model):
    """Fold every ``LinearWithLoRA`` of ``model`` into a plain ``nn.Linear`` with ``W + alpha * (A @ B).T``.

    Introduced in ch06_finetune_classification, appendix E (beyond the book). In place: each wrapper is
    replaced by its own linear layer, given a new weight parameter (bias, device, dtype and ``requires_grad``
    stay); a weight shared with another module (a tied output head and token embedding) is left to that module
    unchanged, so the head is untied.
    The merged model computes the same function (logits within float rounding), with no adapter work per
    token, and its state dict has the plain model's keys. Returns ``model`` (given a ``LinearWithLoRA`` itself,
    returns its merged ``nn.Linear``). Subclasses of ``LinearWithLoRA``, which may compute something else, are
    left as they are.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"merge_lora needs a torch.nn.Module, got {type(model).__name__}")
    _merge_children(model)
    return _merged_linear(model) if type(model) is LinearWithLoRA else model


__all__ = ["LORA_SCALINGS", "LinearWithLoRA", "LoRALayer", "add_lora", "lora_alpha", "lora_weight_and_bias",
           "merge_lora", "replace_linear_with_lora"]
