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

import torch

from .kv_cache import CachedDecoder, use_transposed_weights

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


def _check_generate_args(idx, max_new_tokens, context_size, temperature, top_k):
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(
            f"idx must be a (batch_size, num_tokens) tensor of token ids, got {shape}; "
            "text_to_token_ids(text, tokenizer) gives one with batch size 1"
        )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if context_size < 1:
        raise ValueError(f"context_size must be >= 1, got {context_size} (use the model's context_length)")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy decoding), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None (no filtering) or >= 1, got {top_k}")


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None, use_cache=False):
    """Generate up to ``max_new_tokens`` tokens after ``idx`` (batch, num_tokens) (ch05_pretraining, 5.3.3).

    Each step takes the logits of the last position, keeps only the ``top_k`` largest (the others become
    ``-inf``), and then either samples from ``softmax(logits / temperature)`` (``temperature > 0``) or takes
    the argmax (``temperature == 0``, greedy, the same tokens as ``generate_text_simple``).

    ``eos_id`` (end of sequence), as the book for batch size 1: when the chosen token is ``eos_id``, generation
    stops *before* appending it, so the result never ends with the token that stopped it. In a batch each
    sequence stops on its own: from the step where a sequence picks ``eos_id`` on, its row gets ``eos_id`` as
    padding (the token it picked stays: it is the first padding token), and once every sequence has picked it
    the loop stops without appending that last column. So:

    - every row is rectangular padding-after-the-end: cut a row at its first generated ``eos_id`` to get the
      text of that sequence;
    - the result has as many new columns as steps before the last sequence finished (at most
      ``max_new_tokens``); for batch size 1 this is exactly the book's behaviour and output;
    - finished rows still go through the model (their tokens are ignored), and the random draws are the same
      as without ``eos_id``: one ``multinomial`` call per step for the whole batch.

    ``use_cache=True`` keeps the keys and values of the tokens already seen (``llmscratch.kv_cache``) instead
    of recomputing the whole context at every step. It gives the same tokens as ``use_cache=False`` (greedy,
    and sampled under the same ``torch.manual_seed``: it makes the same random draws) up to float rounding
    (the cached path computes the same functions with other kernels). Call ``model.eval()`` first: with
    dropout active neither path is reproducible. The top-k filter keeps every token tied with the k-th
    largest logit, as the book's does.
    """
    _check_generate_args(idx, max_new_tokens, context_size, temperature, top_k)
    decoder = None
    if use_cache:
        with torch.no_grad():
            decoder = CachedDecoder(model, idx, context_size, use_transposed_weights(idx, max_new_tokens))
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)  # (batch,)

    for _ in range(max_new_tokens):
        if decoder is not None:
            with torch.no_grad():
                logits = decoder.next_token_logits(idx)  # (batch, vocab_size)
        else:
            idx_cond = idx[:, -context_size:]  # (batch, n_tokens), at most context_size tokens
            with torch.no_grad():
                logits = model(idx_cond)  # (batch, n_tokens, vocab_size)
            logits = logits[:, -1, :]  # (batch, vocab_size): only the last time step

        # Filter logits with top_k sampling: keep only the top_k values of each row
        if top_k is not None:
            if top_k > logits.shape[-1]:
                raise ValueError(f"top_k={top_k} exceeds the vocabulary size {logits.shape[-1]}")
            top_logits, _ = torch.topk(logits, top_k)  # (batch, top_k), sorted descending
            min_val = top_logits[:, -1:]  # (batch, 1): the k-th largest logit of each row
            logits = torch.where(logits < min_val, torch.tensor(float("-inf")).to(logits.device), logits)

        if temperature > 0.0:
            logits = logits / temperature  # temperature scaling
            # (not in the printed book) subtract the row max before softmax: same result, stable on mps
            logits = logits - logits.max(dim=-1, keepdim=True).values
            probs = torch.softmax(logits, dim=-1)  # (batch, vocab_size)
            idx_next = torch.multinomial(probs, num_samples=1)  # (batch, 1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (batch, 1): greedy

        if eos_id is not None:
            # Finished rows keep receiving eos_id as padding; stop (without appending) once all are finished
            idx_next = idx_next.masked_fill(finished.unsqueeze(1), eos_id)
            finished = finished | (idx_next.squeeze(1) == eos_id)
            if bool(finished.all()):
                break

        idx = torch.cat((idx, idx_next), dim=1)  # (batch, num_tokens+1)

    return idx
