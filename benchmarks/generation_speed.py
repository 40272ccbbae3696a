"""Greedy generation speed: the book's loop, the same loop with a KV cache and transformers' generate().

    python benchmarks/generation_speed.py                     # GPT-2 small (random weights), 200 tokens, CPU
    python benchmarks/generation_speed.py --device cuda --max-new-tokens 500

Prints the machine, the table and, last, ``speedup: N.NNx``: generation with the KV cache over without it
(introduced in ch04_gpt_model, KV cache). The cached and uncached tokens are checked to be equal.
"""

from __future__ import annotations

import argparse

import _clone  # noqa: F401  (first: this clone's llmscratch)
import torch

from llmscratch.benchmarking import busy_machine_note, compare_generation, machine_label
from llmscratch.gpt import GPT2_CONFIGS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps... (default: cpu)")
    parser.add_argument("--model", default="124M", choices=list(GPT2_CONFIGS), help="GPT-2 size (random weights)")
    parser.add_argument("--attn-impl", default="scratch", choices=["scratch", "sdpa"],
                        help="attention of the GPTModel (the KV cache path uses its weights either way)")
    parser.add_argument("--prompt", default="Hello, I am")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1, help="timed generations per implementation (median)")
    parser.add_argument("--no-transformers", action="store_true", help="skip transformers' generate()")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, usually one per core)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cfg = {**GPT2_CONFIGS[args.model], "attn_impl": args.attn_impl}
    print(machine_label(args.device))
    if note := busy_machine_note():
        print(note)
    print(f"GPT-2 {args.model} ({args.attn_impl}), random weights, prompt {args.prompt!r}, "
          f"{args.max_new_tokens} new tokens, greedy, batch 1, median of {args.repeats}")
    table = compare_generation(cfg, prompt=args.prompt, max_new_tokens=args.max_new_tokens, device=args.device,
                               include_transformers=not args.no_transformers, repeats=args.repeats)
    print(table.to_string(index=False, formatters={
        "seconds": "{:.2f}".format, "tokens_per_s": "{:.2f}".format,
        "speedup_vs_no_cache": "{:.2f}x".format, "vs_transformers": "{:.2f}x".format,
    }))
    row = table[table.implementation == "KV cache"]
    print(f"speedup: {row.speedup_vs_no_cache.item():.2f}x")


if __name__ == "__main__":
    main()
