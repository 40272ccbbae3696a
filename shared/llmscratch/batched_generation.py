"""Batched greedy generation with the KV cache: many prompts at once (ch07_finetune_instructions, beyond the book).

The book generates chapter 7's 110 test responses one prompt at a time, recomputing the whole context for every
new token. Here the prompts are sorted by length and cut into batches; each batch is left-padded to its longest
prompt and runs through the model together, one new token per row and step, with the keys and values of
``llmscratch.kv_cache``. Three things keep every row exactly what it would be alone:

- an attention mask: no token ever attends to padding (a padding slot attends only to itself, which keeps its
  softmax finite; nothing reads its output);
- positions per row: a prompt's first real token gets position 0, however much padding precedes it;
- ``eos_id`` per row: a row whose next token is ``eos_id`` is finished (the token is not kept, as in the book's
  ``generate``), leaves the batch and its cache (no more work for it), and the batch ends when every row has.

So ``generate_batched`` gives, prompt by prompt, the greedy tokens of the book's
``generate(model, idx, max_new_tokens, context_size, eos_id=eos_id)`` (up to floating-point rounding of
different matrix shapes, which can flip a near-tie; on CPU in fp32 the tests and
``benchmarks/response_speed.py`` compare token for token).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .decoding import generate
from .instruction import extract_response
from .kv_cache import TRANSPOSE_MIN_TOKENS, DecodePlan, KVCache
from .pretraining import text_to_token_ids
from .prompt_formats import _check_prompt_style
from .settings import check_device_name

DEFAULT_BATCH_SIZE = 16  # rows per batch: on CPU a step of 16 rows costs about what one row does (weights stream once)


def masked_cached_attention(att, x, cache, layer, qkv, out_proj, mask):
    """Multi-head attention of new tokens ``x`` (b, n_new, d_in) over the cached and new tokens, where ``mask``
    (b, 1, n_new, n_seen), True = may attend, says which cached slots each row's tokens see (padding: never).

    ``llmscratch.kv_cache.cached_attention`` with a mask per row (ch07_finetune_instructions, batched generation).
    """
    b, n_new, _ = x.shape
    qkv_out = qkv(x).view(b, n_new, 3, att.num_heads, att.head_dim)
    queries, keys, values = qkv_out.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (b, num_heads, n_new, head_dim)
    keys, values = cache.append(layer, keys, values)  # (b, num_heads, n_seen, head_dim)
    context_vec = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
    context_vec = context_vec.transpose(1, 2).reshape(b, n_new, att.d_out)
    return out_proj(context_vec)  # (b, n_new, d_out)


def forward_padded(model, plan, tokens, positions, cache, mask):
    """Next-token logits (b, vocab_size) after ``tokens`` (b, n_new), fed at the per-row ``positions`` (b, n_new):
    ``llmscratch.kv_cache.forward_with_cache`` for padded rows (ch07_finetune_instructions, batched generation).

    ``plan`` is a ``DecodePlan(model)``; ``cache`` a ``KVCache`` holding ``cache.length`` slots per row; ``mask``
    as in ``masked_cached_attention``. The last column of ``tokens`` must be a real token in every row.
    """
    x = plan.drop_emb(model.tok_emb(tokens) + model.pos_emb(positions))  # (b, n_new, emb_dim)
    for layer, (att, qkv, out_proj, norm1, norm2, ff, drop_shortcut) in enumerate(plan.blocks):
        x = drop_shortcut(masked_cached_attention(att, norm1(x), cache, layer, qkv, out_proj, mask)) + x
        x = drop_shortcut(ff(norm2(x))) + x
    cache.length += tokens.shape[1]
    return plan.out_head(plan.final_norm(x[:, -1:]))[:, -1]  # (b, vocab_size): the last position only


def _generate_batch(model, plan, prompts, max_new_tokens, eos_id, pad_token_id):
    """New token ids of each prompt (a list of non-empty lists of ids) of one left-padded batch."""
    device = model.tok_emb.weight.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # (b,)
    b, width = len(prompts), max(len(p) for p in prompts)
    tokens = torch.full((b, width), pad_token_id, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        tokens[row, width - len(prompt):] = torch.tensor(prompt)  # left padding: every row ends at the last slot
    slots = torch.arange(width, device=device)
    pads = width - lengths  # (b,)
    positions = (slots - pads[:, None]).clamp(min=0)  # (b, width): 0 at each row's first real token
    n_slots = width + max_new_tokens - 1  # the last new token is never fed back
    real = torch.zeros(b, n_slots, dtype=torch.bool, device=device)  # (b, n_slots): slots holding real tokens
    real[:, :width] = slots >= pads[:, None]
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    mask = causal & (real[:, None, :width] | torch.eye(width, dtype=torch.bool, device=device))  # (b, w, w)

    cache = KVCache.for_model(model, b, n_slots)
    logits = forward_padded(model, plan, tokens.to(device), positions, cache, mask[:, None])  # prefill
    new = torch.full((b, max_new_tokens), -1, dtype=torch.long, device=device)  # -1: no token (finished)
    rows = torch.arange(b, device=device)  # the batch row of each row still generating
    next_positions = lengths.clone()  # (b,)
    for step in range(max_new_tokens):
        next_token = torch.argmax(logits, dim=-1)  # (rows,): greedy, as the book's temperature 0
        if eos_id is None:
            new[rows, step] = next_token
        else:
            done = next_token == eos_id
            new[rows, step] = next_token.masked_fill(done, -1)  # eos itself is not kept, as in the book
            if bool(done.any()):  # finished rows leave the batch and the cache
                keep = (~done).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                rows, next_token, next_positions, real = rows[keep], next_token[keep], next_positions[keep], real[keep]
                cache.keys, cache.values = cache.keys[:, keep], cache.values[:, keep]
        if step == max_new_tokens - 1:
            break
        real[:, cache.length] = True
        mask = real[:, None, None, :cache.length + 1]  # (rows, 1, 1, n_seen)
        logits = forward_padded(model, plan, next_token[:, None], next_positions[:, None], cache, mask)
        next_positions += 1
    new = new.tolist()
    return [row[:row.index(-1)] if -1 in row else row for row in new]


def _as_id_list(prompt, i, vocab_size):
    if isinstance(prompt, torch.Tensor):
        if prompt.dim() == 2 and prompt.shape[0] == 1:
            prompt = prompt[0]  # text_to_token_ids' (1, num_tokens)
        if prompt.dim() != 1 or prompt.is_floating_point() or prompt.is_complex():
            raise ValueError(f"prompt {i} must be a 1-D tensor of token ids, got {prompt.dtype} {tuple(prompt.shape)}")
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, numbers.Integral) for t in prompt):
        raise ValueError(f"prompt {i} must be a list of token ids or a 1-D tensor, got {type(prompt).__name__}")
    if not prompt:
        raise ValueError(f"prompt {i} is empty: give at least one token (e.g. <|endoftext|>, id {GPT2_ENDOFTEXT_ID})")
    if min(prompt) < 0 or max(prompt) >= vocab_size:
        bad = min(prompt) if min(prompt) < 0 else max(prompt)
        raise ValueError(f"prompt {i} holds token id {bad}, outside the model's vocabulary (0 to {vocab_size - 1})")
    return [int(t) for t in prompt]


def _check_id(name, value, vocab_size, allow_none):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < vocab_size:
        raise ValueError(f"{name} must be a token id between 0 and {vocab_size - 1}, got {value!r}")


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def generate_batched(model, prompts, max_new_tokens, context_size, eos_id=None, *, batch_size=DEFAULT_BATCH_SIZE,
                     pad_token_id=GPT2_ENDOFTEXT_ID, progress=False, transpose=None):
    """Greedy new tokens for many prompts, in batches with the KV cache (ch07_finetune_instructions, beyond the book).

    ``prompts``: a list of prompts, each a list of token ids or a 1-D tensor (a (1, n) tensor is taken as its row).
    Returns, in the prompts' order, a list of lists: the **new** token ids of each prompt only (not the prompt),
    without ``eos_id``: for every prompt ``p``, what the book's
    ``generate(model, p, max_new_tokens, context_size, eos_id=eos_id)[0, len(p):]`` gives (temperature 0).
    Prompts are sorted by length into batches of ``batch_size`` (less padding); ``pad_token_id`` fills the
    padding and is never attended to. Put the model in eval mode first, as for any generation.

    The context crop: a prompt whose length plus ``max_new_tokens`` exceeds ``context_size`` would need the
    book's crop to ``idx[:, -context_size:]`` (positions shift at every step), which a padded batch cannot share;
    such prompts are generated one by one with ``generate(..., use_cache=True)``, which crops exactly like the
    book. ``transpose``: the weight layout of ``llmscratch.kv_cache.FastLinear`` (``None``: on CPU, for long runs).
    ``progress``: a tqdm bar over the prompts. ``ValueError`` for an empty list, an empty prompt, ids outside the
    vocabulary, ``max_new_tokens < 0``, ``batch_size < 1`` or ``context_size`` outside 1..context_length.
    """
    from tqdm.auto import tqdm

    _check_model(model, "generate_batched(model, prompts, max_new_tokens, context_size)")
    vocab_size, context_length = model.tok_emb.num_embeddings, model.pos_emb.num_embeddings
    if isinstance(prompts, (str, torch.Tensor)) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts, each a list of token ids or a 1-D tensor")
    prompts = [_as_id_list(p, i, vocab_size) for i, p in enumerate(prompts)]
    _check_count("max_new_tokens", max_new_tokens, 0)
    _check_count("batch_size", batch_size, 1)
    if isinstance(context_size, bool) or not isinstance(context_size, numbers.Integral) \
            or not 1 <= context_size <= context_length:
        raise ValueError(f"context_size must be between 1 and the model's context_length ({context_length}), "
                         f"got {context_size!r}")
    _check_id("eos_id", eos_id, vocab_size, allow_none=True)
    _check_id("pad_token_id", pad_token_id, vocab_size, allow_none=False)

    results = [None] * len(prompts)
    fits = [i for i, p in enumerate(prompts) if len(p) + max_new_tokens <= context_size]
    fits.sort(key=lambda i: -len(prompts[i]))  # longest first: similar lengths share a batch
    batches = [fits[start:start + batch_size] for start in range(0, len(fits), batch_size)]
    device = model.tok_emb.weight.device
    if max_new_tokens == 0:
        return [[] for _ in prompts]
    with torch.inference_mode(), tqdm(total=len(prompts), unit="prompt", disable=not progress) as bar:
        if batches:
            if transpose is None:  # as use_transposed_weights: the copy pays off on CPU over many steps
                transpose = device.type == "cpu" and max_new_tokens * len(batches) >= TRANSPOSE_MIN_TOKENS
            plan = DecodePlan(model, transpose)  # built once, shared by every batch
            for batch in batches:
                for i, ids in zip(batch, _generate_batch(model, plan, [prompts[i] for i in batch], max_new_tokens,
                                                         eos_id, pad_token_id)):
                    results[i] = ids
                bar.update(len(batch))
        for i, prompt in enumerate(prompts):
            if results[i] is None:  # too long to share a batch: the book's crop, with the single-row cache
                idx = torch.tensor([prompt], device=device)
                out = generate(model, idx, max_new_tokens, context_size, eos_id=eos_id, use_cache=True)
                results[i] = out[0, len(prompt):].tolist()
                bar.update(1)
    return results


def response_text(tokenizer, prompt, prompt_ids, new_ids, *, prompt_style="alpaca"):
    """The book's post-processing of one generated response (ch07_finetune_instructions, 7.7), from token ids:
    decode prompt and new tokens together, as the book's ``token_ids_to_text(generate(...))``, then
    ``llmscratch.instruction.extract_response`` (the one post-processor: cut off the prompt's text, remove the
    style's response header, strip whitespace)."""
    generated_text = tokenizer.decode(list(prompt_ids) + list(new_ids))
    return extract_response(generated_text, prompt, prompt_style=prompt_style)


def _check_model(model, function):
    if not isinstance(getattr(model, "tok_emb", None), torch.nn.Embedding) \
            or not isinstance(getattr(model, "pos_emb", None), torch.nn.Embedding):
        raise ValueError(f"model must be a GPTModel (with tok_emb and pos_emb), got {type(model).__name__}: "
                         f"pass the model first, as in {function}")


def _check_tokenizer(tokenizer):
    if not callable(getattr(tokenizer, "encode", None)) or not callable(getattr(tokenizer, "decode", None)):
        raise ValueError(f"tokenizer must have encode and decode, got {type(tokenizer).__name__}: use "
                         "llmscratch.gpt2_tokenizer.gpt2_tokenizer() or tiktoken.get_encoding('gpt2')")


def _check_device(device, model_device):
    if device is None:
        return
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda', or a torch.device, got "
                         f"{type(device).__name__}; leave it out to use the model's ({model_device})")
    try:
        wanted = device if isinstance(device, torch.device) else torch.device(device)
    except (RuntimeError, ValueError):  # no device name at all: the course's message, with the names to use
        check_device_name(device, "device")
        raise
    if wanted.type != model_device.type or (wanted.index is not None and wanted.index != model_device.index):
        raise ValueError(f"the model is on {model_device}, not on {wanted}: move it first, model.to(device)")


def generate_responses(model, tokenizer, prompts, *, max_new_tokens=256, context_size, eos_id=GPT2_ENDOFTEXT_ID,
                       batch_size=DEFAULT_BATCH_SIZE, device=None, prompt_style="alpaca", progress=True):
    """The response text of each prompt string, in order: the book's loop over chapter 7's test set, batched
    with the KV cache (ch07_finetune_instructions, 7.7, beyond the book).

    Encodes each prompt with ``text_to_token_ids``, generates greedily with ``generate_batched`` (the same
    tokens as the book's ``generate(..., eos_id=eos_id)``) and applies the book's post-processing
    (``response_text``, that is ``extract_response`` with ``prompt_style``: ``"alpaca"`` removes
    ``### Response:``, ``"phi3"`` ``<|assistant|>:``). ``device``: where the model is (default: where its
    weights are); the model is not moved, so a different device is a ``ValueError``, and so is a name that is
    no device. ``progress``: a tqdm bar over the prompts.
    """
    _check_model(model, "generate_responses(model, tokenizer, prompts, context_size=...)")
    _check_tokenizer(tokenizer)
    _check_prompt_style(prompt_style)
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts \
            or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings (e.g. format_input(entry) for each entry)")
    _check_device(device, model.tok_emb.weight.device)
    prompt_ids = [text_to_token_ids(prompt, tokenizer)[0].tolist() for prompt in prompts]
    new_ids = generate_batched(model, prompt_ids, max_new_tokens, context_size, eos_id, batch_size=batch_size,
                               progress=progress)
    return [response_text(tokenizer, prompt, ids, new, prompt_style=prompt_style)
            for prompt, ids, new in zip(prompts, prompt_ids, new_ids)]


__all__ = ["generate_batched", "generate_responses", "response_text"]
