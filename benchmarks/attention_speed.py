"""Forward time of the book's multi-head attentions and the fast path (fused QKV + SDPA), measured here.

    python benchmarks/attention_speed.py                      # GPT-2 small sizes, fp32 and bf16, on the CPU
    python benchmarks/attention_speed.py --device cuda        # fp32 and bf16, or fp16 on a GPU without bf16 (T4)
    python benchmarks/attention_speed.py --device cuda --dtypes float32 bfloat16 float16

Prints the machine, which low-precision dtype it times and why (``llmscratch.precision.choose_dtype``: a T4 has
no native bfloat16, so float16 there), the table and, last, ``speedup: N.NNx``: float32 MultiHeadAttentionSDPA
over the book's MultiHeadAttention (introduced in ch03_attention, fast path).
"""

from __future__ import annotations

import argparse

import _clone  # noqa: F401  (first: this clone's llmscratch)
import torch

from llmscratch.benchmarking import busy_machine_note, compare_attention, machine_label
from llmscratch.precision import benchmark_dtypes, gpu_name, native_bf16
from llmscratch.settings import SettingsError, resolve_device


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps... (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-tokens", type=int, default=1024)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--num-heads", type=int, default=12)
    parser.add_argument("--dtypes", nargs="+", default=None,
                        help="torch dtypes to time, used as given (float32 is always included: the speedup line "
                             "uses it); default: float32 and choose_dtype's pick for the device")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per implementation (median)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, usually one per core)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    try:
        device = resolve_device(args.device)
    except SettingsError as error:  # a device this machine lacks: one line, not a traceback
        raise SystemExit(f"attention_speed.py: error: {error}") from None
    if args.dtypes is None:
        dtypes, why = benchmark_dtypes(device)
    else:
        dtypes, why = [getattr(torch, name) for name in args.dtypes], "--dtypes as given"
        if torch.float32 not in dtypes:
            dtypes.insert(0, torch.float32)
        if torch.bfloat16 in dtypes and device.type == "cuda" and not native_bf16(device):
            why += f"; this GPU has no native bfloat16 ({gpu_name(device)}): its rows are emulated"
    print(machine_label(device))
    if note := busy_machine_note():
        print(note)
    print(f"dtypes: {', '.join(str(d).removeprefix('torch.') for d in dtypes)} ({why})")
    print(f"input: batch {args.batch_size} x {args.num_tokens} tokens x d_model {args.d_model}, "
          f"{args.num_heads} heads; forward only (eval, no_grad), median of {args.repeats}")
    table = compare_attention(args.batch_size, args.num_tokens, args.d_model, args.num_heads, device=device,
                              dtypes=dtypes, repeats=args.repeats)
    print(table.to_string(index=False, formatters={
        "ms": "{:.1f}".format, "speedup": "{:.2f}x".format,
        "max_abs_diff": "{:.1e}".format,
    }, na_rep="-"))  # the wrapper has other weights: no difference to show
    row = table[(table.implementation == "MultiHeadAttentionSDPA") & (table.dtype == "float32")]
    print(f"speedup: {row.speedup.item():.2f}x")


if __name__ == "__main__":
    main()
