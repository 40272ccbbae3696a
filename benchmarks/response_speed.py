"""Chapter 7's test responses: the book's loop (one prompt at a time, no cache) against batched KV-cache generation.

    python benchmarks/response_speed.py                      # GPT-2 small (random weights), 110 prompts, CPU
    python benchmarks/response_speed.py --model tiny --prompts 4 --max-new-tokens 8     # a quick check
    python benchmarks/response_speed.py --device cuda --batch-size 64

The prompts are the book's: ``format_input(entry)`` for the 110 entries of the test split of
``instruction-data.json`` (entries 935 to 1044). Both paths generate greedily up to ``--max-new-tokens`` tokens,
stopping at ``<|endoftext|>``, and apply the book's post-processing (section 7.7): the book's loop calls
``generate(..., eos_id=50256)`` once per prompt; the fast path is ``generate_batched`` (prompts sorted by length,
batches of ``--batch-size``, left padding, the KV cache) followed by the same post-processing, which is what
``llmscratch.batched_generation.generate_responses`` does. The model has random weights (seed 123), so
``<|endoftext|>`` is rare and nearly every prompt runs all its tokens on both paths: the same work, a fair
comparison. Both run once, in this run, one after the other; the script then compares the tokens prompt by
prompt and reports every prompt whose tokens differ (with the gap between the two best logits where they
part: a near-tie flipped by rounding). Prints the machine, the times and, last, ``speedup: N.NNx``: the book's
loop's time over the batched path's.
"""

from __future__ import annotations

import argparse
import sys
import time

import _clone  # noqa: F401  (first: this clone's llmscratch)
import torch
from tqdm.auto import tqdm

from llmscratch import generate, text_to_token_ids, token_ids_to_text
from llmscratch.batched_generation import DEFAULT_BATCH_SIZE, generate_batched, response_text
from llmscratch.benchmarking import busy_machine_note, machine_label, synchronize
from llmscratch.bpe_gpt2 import GPT2_ENDOFTEXT_ID
from llmscratch.gpt import GPT2_CONFIGS, GPT_CONFIG_TINY, GPTModel
from llmscratch.instruction import format_input
from llmscratch.instruction_data import load_instruction_data, split_instruction_data
from llmscratch.settings import SettingsError, get_settings, resolve_device

CONFIGS = {**GPT2_CONFIGS, "tiny": GPT_CONFIG_TINY}
MAX_LISTED = 10  # differing prompts listed one by one


def book_test_split():
    """The book's test split of the instruction data (ch07, 7.2): 110 of the 1,100 entries."""
    _, _, test_data = split_instruction_data(load_instruction_data())
    return test_data


def book_loop(model, tokenizer, entries, max_new_tokens, context_size, device, progress):
    """The book's loop of section 7.7: one prompt at a time, no cache. Returns the responses and new token ids."""
    responses, new_ids = [], []
    for i, entry in tqdm(enumerate(entries), total=len(entries), disable=not progress, desc="book loop"):
        input_text = format_input(entry)
        idx = text_to_token_ids(input_text, tokenizer).to(device)
        token_ids = generate(model=model, idx=idx, max_new_tokens=max_new_tokens, context_size=context_size,
                             eos_id=GPT2_ENDOFTEXT_ID)
        generated_text = token_ids_to_text(token_ids, tokenizer)
        response = generated_text[len(input_text):].replace("### Response:", "").strip()
        responses.append(response)
        new_ids.append(token_ids[0, idx.shape[1]:].tolist())
    return responses, new_ids


def batched(model, tokenizer, entries, max_new_tokens, context_size, batch_size, progress):
    """``generate_responses``' steps, keeping the token ids: batched generation with the KV cache."""
    prompts = [format_input(entry) for entry in entries]
    prompt_ids = [text_to_token_ids(prompt, tokenizer)[0].tolist() for prompt in prompts]
    new_ids = generate_batched(model, prompt_ids, max_new_tokens, context_size, GPT2_ENDOFTEXT_ID,
                               batch_size=batch_size, progress=progress)
    responses = [response_text(tokenizer, p, ids, new) for p, ids, new in zip(prompts, prompt_ids, new_ids)]
    return responses, new_ids


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def describe_difference(model, tokenizer, i, entry, book, fast, device):
    """Where prompt ``i``'s two token sequences part, and how close the book's two best logits were there."""
    step = next((k for k, (a, b) in enumerate(zip(book, fast)) if a != b), min(len(book), len(fast)))
    prefix = text_to_token_ids(format_input(entry), tokenizer)[0].tolist() + book[:step]
    with torch.no_grad():
        logits = model(torch.tensor([prefix], device=device))[0, -1].float()
    top2 = torch.topk(logits, 2).values
    book_token = book[step] if step < len(book) else "eos"
    fast_token = fast[step] if step < len(fast) else "eos"
    return (f"  prompt {i}: new token {step}: book {book_token}, batched {fast_token}; "
            f"top-2 logit gap {float(top2[0] - top2[1]):.2e}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="response_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps... (default: LLMSCRATCH_DEVICE if set, else cpu)")
    parser.add_argument("--model", "--config", default="124M", choices=list(CONFIGS),
                        help="GPT-2 size (random weights); tiny: a quick check that the script runs")
    parser.add_argument("--attn-impl", default="scratch", choices=["scratch", "sdpa"],
                        help="attention of the GPTModel (the batched path uses its weights either way)")
    parser.add_argument("--prompts", type=int, default=None, help="the first N test prompts (default: all 110)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, usually one per core)")
    args = parser.parse_args(argv)
    try:  # the course's one device resolver; without --device: LLMSCRATCH_DEVICE if set, else the CPU
        device = resolve_device(args.device or (None if get_settings().device else "cpu"))
    except SettingsError as error:  # a device this machine lacks: one line, not a traceback
        raise SystemExit(f"{parser.prog}: error: {error}") from None
    entries = book_test_split()
    n = len(entries) if args.prompts is None else args.prompts
    if not 1 <= n <= len(entries):
        parser.error(f"--prompts must be between 1 and {len(entries)}, got {n}")
    if args.max_new_tokens < 1 or args.batch_size < 1:
        parser.error("--max-new-tokens and --batch-size must be at least 1")
    entries = entries[:n]
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    import tiktoken

    tokenizer = tiktoken.get_encoding("gpt2")
    cfg = {**CONFIGS[args.model], "attn_impl": args.attn_impl}
    context_size = cfg["context_length"]
    torch.manual_seed(123)
    model = GPTModel(cfg).to(device).eval()
    lengths = [len(tokenizer.encode(format_input(entry))) for entry in entries]
    progress = sys.stderr.isatty()

    print(machine_label(device))
    if note := busy_machine_note():
        print(note)
    print(f"GPT-2 {args.model} ({args.attn_impl}), random weights (seed 123), fp32, {n} test prompts of "
          f"{min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / n:.0f}), up to {args.max_new_tokens} new "
          f"tokens, greedy, eos {GPT2_ENDOFTEXT_ID}; batched: batches of {args.batch_size}, sorted by length")
    # warm-up: first-call allocations and kernel selection, on one short prompt
    book_loop(model, tokenizer, entries[:1], 2, context_size, device, False)
    batched(model, tokenizer, entries[:1], 2, context_size, args.batch_size, False)

    book_s, (book_texts, book_ids) = timed(lambda: book_loop(
        model, tokenizer, entries, args.max_new_tokens, context_size, device, progress), device)
    fast_s, (fast_texts, fast_ids) = timed(lambda: batched(
        model, tokenizer, entries, args.max_new_tokens, context_size, args.batch_size, progress), device)

    for name, seconds, ids in [("book loop (generate, no cache, one prompt at a time)", book_s, book_ids),
                               (f"batched + KV cache (batch size {args.batch_size})", fast_s, fast_ids)]:
        tokens = sum(len(t) for t in ids)
        print(f"{name:<55} {seconds:9.2f} s  {tokens:6d} new tokens  {tokens / seconds:8.1f} tokens/s")
    stopped = sum(len(t) < args.max_new_tokens for t in book_ids)
    print(f"<|endoftext|> reached by {stopped} of {n} prompts in the book's loop (random weights: the others run "
          f"all {args.max_new_tokens} tokens, on both paths)")
    differ = [i for i in range(n) if book_ids[i] != fast_ids[i]]
    print(f"same tokens: {n - len(differ)} of {n} prompts ({len(differ)} differ); "
          f"same response texts: {sum(a == b for a, b in zip(book_texts, fast_texts))} of {n}")
    for i in differ[:MAX_LISTED]:
        print(describe_difference(model, tokenizer, i, entries[i], book_ids[i], fast_ids[i], device))
    if len(differ) > MAX_LISTED:
        print(f"  ... and {len(differ) - MAX_LISTED} more")
    print(f"speedup: {book_s / fast_s:.2f}x")


if __name__ == "__main__":
    main()
