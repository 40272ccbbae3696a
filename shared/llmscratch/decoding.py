"""Decoding strategies of chapter 5: temperature scaling, top-k sampling and the book's ``generate``.

Introduced in ch05_pretraining, 5.3. ``generate`` is the book's function with three fixes and one extension
that leave batch size 1 exactly as in the book (same tokens, same calls to the random number generator):

- top-k works for batches (the book's ``top_logits[:, -1]`` only broadcasts for batch size 1);
- ``eos_id`` stops each sequence of a batch on its own (the book's ``if idx_next == eos_id`` fails for
  batch size > 1, see ``generate``'s docstring for the exact rule);
- clear ``ValueError``s for impossible arguments;
- ``use_cache=True`` generates with the KV cache of ``llmscratch.kv_cache``: the same tokens, faster.
"""

from __future__ import annotations

import math

import torch

from .gpt import check_generation_args
from .kv_cache import CachedDecoder

# The toy vocabulary of the book's temperature demo (ch05_pretraining, 5.3.1)
TEMPERATURE_DEMO_VOCAB = {
    "closer": 0,
    "every": 1,
    "effort": 2,
    "forward": 3,
    "inches": 4,
    "moves": 5,
    "pizza": 6,
    "toward": 7,
    "you": 8,
}
# Next-token logits after "every effort moves you" in that demo (9 values, one per word above)
TEMPERATURE_DEMO_LOGITS = [4.51, 0.89, -1.90, 6.75, 1.63, -1.62, -1.89, 6.28, 1.79]


def softmax_with_temperature(logits, temperature):
    """Softmax of ``logits / temperature``: > 1 flattens, < 1 sharpens the distribution (ch05_pretraining, 5.3.1)."""
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0, got {temperature}; temperature 0 means greedy decoding (argmax), "
            "which needs no softmax"
        )
    scaled_logits = logits / temperature
    return torch.softmax(scaled_logits, dim=0)


def print_sampled_tokens(probas, inverse_vocab=None, num_samples=1_000, seed=123):
    """Sample ``num_samples`` tokens from ``probas`` and print how often each word came out (ch05_pretraining, 5.3.1).

    As in the book, the generator is seeded with 123 first, so the counts are reproducible. ``inverse_vocab``
    maps ids to words (default: the demo vocabulary). Returns the counts, a tensor of ``len(probas)`` ints.
    """
    if inverse_vocab is None:
        inverse_vocab = {i: word for word, i in TEMPERATURE_DEMO_VOCAB.items()}
    if probas.dim() != 1:
        raise ValueError(f"probas must be one distribution, shape (vocab_size,), got {tuple(probas.shape)}")
    torch.manual_seed(seed)  # Manual seed for reproducibility
    sample = [torch.multinomial(probas, num_samples=1).item() for _ in range(num_samples)]
    sampled_ids = torch.bincount(torch.tensor(sample), minlength=len(probas))  # (vocab_size,)
    for i, freq in enumerate(sampled_ids):
        print(f"{freq} x {inverse_vocab[i]}")
    return sampled_ids


def check_sampling_args(temperature, top_k, vocab_size, eos_id=None):
    """Clear ``ValueError``s for sampling settings ``generate`` cannot use (ch05_pretraining, 5.3)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy decoding), got {temperature!r}")
    vocab_size = float("inf") if vocab_size is None else vocab_size
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ValueError(f"top_k must be None (no filtering) or between 1 and the vocabulary size {vocab_size}, "
                         f"got {top_k}")
    if eos_id is not None and not 0 <= eos_id < vocab_size:
        raise ValueError(f"eos_id must be a token id between 0 and {vocab_size - 1}, got {eos_id} "
                         "(GPT-2's <|endoftext|> is 50256)")


def _check_generate_args(model, idx, max_new_tokens, context_size, temperature, top_k, eos_id):
    check_generation_args(model, idx, max_new_tokens, context_size)
    tok_emb = getattr(model, "tok_emb", None)  # any model works; a GPTModel's vocabulary bounds top_k and eos_id
    check_sampling_args(temperature, top_k, tok_emb.num_embeddings if tok_emb is not None else None, eos_id)


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None, use_cache=False):
    """The book's ``generate``: top-k filtering, temperature sampling or greedy argmax (ch05_pretraining, 5.3.3).

    Differences from the book (batch size 1 gives the book's tokens and random draws):

    - top-k keeps a row's k-th largest logit per row (``top_logits[:, -1:]``), so batches work too;
    - ``eos_id`` stops each sequence of a batch on its own: a finished row is padded with ``eos_id`` and the loop
      stops, without appending, once every row has picked it (the book's ``if idx_next == eos_id`` needs batch 1);
    - ``use_cache=True`` decodes with the KV cache of ``llmscratch.kv_cache``: the same tokens, faster.
    """
    _check_generate_args(model, idx, max_new_tokens, context_size, temperature, top_k, eos_id)  # beyond the book
    decoder = CachedDecoder.for_generation(model, idx, max_new_tokens, context_size) if use_cache else None
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)  # (batch,): rows past eos_id

    # For-loop is the same as before: Get logits, and only focus on last time step
    for _ in range(max_new_tokens):
        if decoder is not None:  # beyond the book: one new token through the model, the rest from the cache
            logits = decoder.next_token_logits(idx)  # (batch, vocab_size)
        else:
            idx_cond = idx[:, -context_size:]
            with torch.no_grad():
                logits = model(idx_cond)
            logits = logits[:, -1, :]

        # New: Filter logits with top_k sampling
        if top_k is not None:
            # Keep only top_k values
            top_logits, _ = torch.topk(logits, top_k)
            min_val = top_logits[:, -1:]  # (batch, 1); the book's top_logits[:, -1] needs batch size 1
            logits = torch.where(logits < min_val, torch.tensor(float("-inf")).to(logits.device), logits)

        # New: Apply temperature scaling
        if temperature > 0.0:
            logits = logits / temperature

            # (not in the printed book) subtract the row max before softmax: same result, stable on mps
            logits = logits - logits.max(dim=-1, keepdim=True).values

            # Apply softmax to get probabilities
            probs = torch.softmax(logits, dim=-1)  # (batch_size, context_len)

            # Sample from the distribution
            idx_next = torch.multinomial(probs, num_samples=1)  # (batch_size, 1)

        # Otherwise same as before: get idx of the vocab entry with the highest logits value
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (batch_size, 1)

        if eos_id is not None:  # Stop generating early if end-of-sequence token is encountered and eos_id is specified
            idx_next = idx_next.masked_fill(finished.unsqueeze(1), eos_id)  # finished rows: eos_id as padding
            finished = finished | (idx_next.squeeze(1) == eos_id)
            if bool(finished.all()):
                break

        # Same as before: append sampled index to the running sequence
        idx = torch.cat((idx, idx_next), dim=1)  # (batch_size, num_tokens+1)

    return idx
