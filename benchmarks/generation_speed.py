"""Greedy generation speed: the book's loop, the same loop with a KV cache and transformers' generate().

    python benchmarks/generation_speed.py                     # GPT-2 small (random weights), 200 tokens, CPU
    python benchmarks/generation_speed.py --device cuda --max-new-tokens 500 --repeats 5

The three are timed interleaved (one run of each per round, at least 3 rounds) and the table gives the median
(``llmscratch.benchmarking.compare_generation``, introduced in ch04_gpt_model, KV cache). Prints the machine,
the table, ``vs transformers: N.NNx`` (the KV cache's tokens/s over transformers' generate()) and, last,
``speedup: N.NNx``: generation with the KV cache over without it. The cached and uncached tokens are checked
to be equal.
"""

from __future__ import annotations

import argparse

import _clone  # noqa: F401  (first: this clone's llmscratch)
import torch

from llmscratch.benchmarking import busy_machine_note, compare_generation, machine_label
from llmscratch.gpt import GPT2_CONFIGS, GPT_CONFIG_TINY
from llmscratch.settings import SettingsError, get_settings, resolve_device

CONFIGS = {**GPT2_CONFIGS, "tiny": GPT_CONFIG_TINY}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="generation_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps... (default: LLMSCRATCH_DEVICE if set, else cpu)")
    parser.add_argument("--model", default="124M", choices=list(CONFIGS),
                        help="GPT-2 size (random weights); tiny: a quick check that the script runs")
    parser.add_argument("--attn-impl", default="scratch", choices=["scratch", "sdpa"],
                        help="attention of the GPTModel (the KV cache path uses its weights either way)")
    parser.add_argument("--prompt", default="Hello, I am")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved rounds, one timed generation of each implementation per round; the "
                        "table gives the median (at least 3, default 3)")
    parser.add_argument("--no-transformers", action="store_true", help="skip transformers' generate()")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, usually one per core)")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3 (the median of fewer runs is one noisy run), got {args.repeats}")
    try:  # the course's one device resolver; without --device: LLMSCRATCH_DEVICE if set, else the CPU
        device = resolve_device(args.device or (None if get_settings().device else "cpu"))
    except SettingsError as error:  # a device this machine lacks: one line, not a traceback
        raise SystemExit(f"{parser.prog}: error: {error}") from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cfg = {**CONFIGS[args.model], "attn_impl": args.attn_impl}
    print(machine_label(device))
    if note := busy_machine_note():
        print(note)
    print(f"GPT-2 {args.model} ({args.attn_impl}), random weights, prompt {args.prompt!r}, "
          f"{args.max_new_tokens} new tokens, greedy, batch 1, median of {args.repeats} interleaved repeats")
    table = compare_generation(cfg, prompt=args.prompt, max_new_tokens=args.max_new_tokens, device=device,
                               include_transformers=not args.no_transformers, repeats=args.repeats)
    print(table.to_string(index=False, formatters={
        "seconds": "{:.2f}".format, "tokens_per_s": "{:.2f}".format,
        "speedup_vs_no_cache": "{:.2f}x".format, "vs_transformers": "{:.2f}x".format,
    }))
    row = table[table.implementation == "KV cache"]
    if "vs_transformers" in table:
        print(f"vs transformers: {row.vs_transformers.item():.2f}x (KV cache tokens/s over transformers' generate())")
    else:
        print("vs transformers: not measured (" + ("--no-transformers" if args.no_transformers
                                                   else "transformers is not installed") + ")")
    print(f"speedup: {row.speedup_vs_no_cache.item():.2f}x")


if __name__ == "__main__":
    main()
