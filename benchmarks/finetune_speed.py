"""Finetuning speed of chapter 6 and appendix E: last-block, full and LoRA finetuning, side by side in one run.

Introduced in ch06_finetune_classification, appendix E (beyond the book). Three ways to finetune the spam
classifier, on GPT-2 small's shapes as loaded from GPT-2 (GPT_CONFIG_124M with qkv_bias, drop_rate 0.0,
context 1024) with a new 768 -> 2 output head, random weights and random token batches of the spam data's
shape (8 texts of 120 tokens):

- last-block: chapter 6's setup: all frozen, then the new head, the last transformer block and the final norm
  trainable (7,090,946 parameters at 124M);
- full: every parameter trainable (exercise 6.2; 124,441,346);
- lora: all frozen, then ``replace_linear_with_lora(model, rank=16, alpha=16)`` (appendix E, ``add_lora``; 2,666,528).

Each path has its own copy of the same weights (seed 123), the book's ``AdamW(lr=5e-5, weight_decay=0.1)`` and
chapter 6's loss (cross-entropy of the last token's logits). A step is zero_grad + forward + loss + backward +
optimizer step. After ``--warmup`` untimed steps each, the paths are timed interleaved: ``--repeats`` rounds
(at least 3), each timing ``--steps`` steps of every path on the same batches, each round starting at the next
path, so that a change in the machine's load hits every path alike. Prints the machine, a table of medians and,
last, ``speedup: LoRA vs full finetuning N.NNx`` (LoRA's steps/s over full finetuning's, wall clock). On the CPU
the table also gives the process's CPU time per step: with ``--threads 1`` on a machine that other processes
load, it measures the work while the wall clock also counts the waiting.

    python benchmarks/finetune_speed.py                  # 124M shapes, batch 8 x 120, 3 rounds of 2 steps
    python benchmarks/finetune_speed.py --tiny           # a quick check that it runs (seconds)
    python benchmarks/finetune_speed.py --device cuda --steps 20 --attn-impl sdpa
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import _clone  # noqa: F401  (first: this clone's llmscratch)
import torch

from llmscratch.benchmarking import busy_machine_note, machine_label, time_call
from llmscratch.classification import calc_loss_batch
from llmscratch.classifier import prepare_classifier
from llmscratch.gpt import GPT_CONFIG_124M, GPT_CONFIG_TINY, GPTModel
from llmscratch.lora import add_lora
from llmscratch.settings import SettingsError, resolve_device

PATHS = ("last-block", "full", "lora")
SEED = 123
NUM_CLASSES = 2  # spam / not spam
LORA_RANK, LORA_ALPHA = 16, 16  # appendix E's
# GPT-2 small as load_pretrained_gpt2 builds it (context 1024, qkv_bias, no dropout); tiny: a quick check.
CONFIGS = {
    "124M": {**GPT_CONFIG_124M, "context_length": 1024, "qkv_bias": True, "drop_rate": 0.0},
    "tiny": {**GPT_CONFIG_TINY, "qkv_bias": True, "drop_rate": 0.0},
}
# --tiny's sizes where an option is not given: (batch_size, seq_len, steps)
DEFAULTS = {"124M": (8, 120, 2), "tiny": (2, 16, 1)}


def spam_classifier(cfg):
    """Chapter 6's base model before finetuning: a GPTModel with random weights (seed 123)."""
    torch.manual_seed(SEED)
    return GPTModel(cfg)


def prepare(path, model):
    """``model`` as chapter 6 (last-block), exercise 6.2 (full) or appendix E (lora) finetune it; returns it.

    Every path gets the same new ``out_head`` (seeded), through the package's ``prepare_classifier``.
    """
    torch.manual_seed(SEED)
    if path == "lora":  # appendix E: everything frozen, the new head included, then the adapters
        prepare_classifier(model, NUM_CLASSES, trainable_layers="none")
        return add_lora(model, rank=LORA_RANK, alpha=LORA_ALPHA)
    return prepare_classifier(model, NUM_CLASSES, trainable_layers="all" if path == "full" else "last_block")


def train_steps(model, optimizer, batches):
    """One optimizer step per (input (b, seq_len), target (b,)) batch."""
    for input_batch, target_batch in batches:
        optimizer.zero_grad()
        loss = calc_loss_batch(input_batch, target_batch, model, input_batch.device)  # chapter 6's loss
        loss.backward()
        optimizer.step()
    return loss.item()


def random_batches(n, batch_size, seq_len, vocab_size, device):
    """``n`` batches of random token ids (b, seq_len) and random labels (b,), seeded."""
    generator = torch.Generator().manual_seed(SEED)
    return [(torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator).to(device),
             torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator).to(device)) for _ in range(n)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="finetune_speed.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: llmscratch's get_device(): "
                   "LLMSCRATCH_DEVICE, else CUDA, MPS, CPU)")
    p.add_argument("--tiny", action="store_true", help="GPT_CONFIG_TINY, batch 2 x 16, 1 step: a quick check")
    p.add_argument("--batch-size", type=int, help="texts per step (default 8, the spam loaders')")
    p.add_argument("--seq-len", type=int, help="tokens per text (default 120, the longest spam training text)")
    p.add_argument("--steps", type=int, help="timed steps per path in each round (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the table gives the median "
                   "(at least 3, default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per path first (default 1)")
    p.add_argument("--attn-impl", default="scratch", choices=["scratch", "sdpa"],
                   help="attention of the GPTModel (default: the book's)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    args = p.parse_args(argv)
    args.size = "tiny" if args.tiny else "124M"
    for name, default in zip(("batch_size", "seq_len", "steps"), DEFAULTS[args.size]):
        if getattr(args, name) is None:
            setattr(args, name, default)
    context = CONFIGS[args.size]["context_length"]
    if min(args.batch_size, args.seq_len, args.steps) < 1 or args.warmup < 0:
        p.error("--batch-size, --seq-len and --steps must be >= 1, --warmup >= 0")
    if args.seq_len > context:
        p.error(f"--seq-len must be at most the model's context length, {context}; got {args.seq_len}")
    if args.repeats < 3:
        p.error(f"--repeats must be at least 3 (the median of fewer runs is one noisy run), got {args.repeats}")
    try:  # the course's one device resolver: without --device, get_device()'s choice
        args.device = resolve_device(args.device)
    except SettingsError as error:  # a device this machine lacks: one line, not a traceback
        raise SystemExit(f"{p.prog}: error: {error}") from None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_label(device)}")
    if note := busy_machine_note():
        print(note)
    cfg = {**CONFIGS[args.size], "attn_impl": args.attn_impl}
    print(f"model:   GPT-2 {args.size} shapes (emb_dim {cfg['emb_dim']}, {cfg['n_layers']} layers, context "
          f"{cfg['context_length']}, qkv_bias), random weights, head {cfg['emb_dim']} -> {NUM_CLASSES}, attention "
          f"{args.attn_impl}; AdamW lr 5e-5, weight_decay 0.1")
    print(f"data:    random batches of {args.batch_size} x {args.seq_len} tokens; {args.warmup} warmup step(s), then "
          f"{args.repeats} interleaved rounds of {args.steps} step(s) per path")

    base = spam_classifier(cfg)
    models = {path: prepare(path, copy.deepcopy(base)).to(device).train() for path in PATHS}
    del base
    optimizers = {path: torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.1)
                  for path, model in models.items()}
    batches = random_batches(args.steps, args.batch_size, args.seq_len, cfg["vocab_size"], device)

    for path in PATHS:
        train_steps(models[path], optimizers[path], batches[:1] * args.warmup)
    seconds, cpu_seconds = {path: [] for path in PATHS}, {path: [] for path in PATHS}
    for r in range(args.repeats):
        order = PATHS[r % len(PATHS):] + PATHS[:r % len(PATHS)]
        for path in order:
            cpu_start = time.process_time()
            seconds[path].append(time_call(lambda p=path: train_steps(models[p], optimizers[p], batches),
                                           repeats=1, warmup=0, device=device))
            cpu_seconds[path].append(time.process_time() - cpu_start)  # every thread of this process
        print(f"  round {r + 1}/{args.repeats}: " + ", ".join(
            f"{path} {1e3 * seconds[path][-1] / args.steps:.0f} ms/step" for path in PATHS), flush=True)

    ms = {path: 1e3 * statistics.median(seconds[path]) / args.steps for path in PATHS}
    cpu_ms = {path: 1e3 * statistics.median(cpu_seconds[path]) / args.steps for path in PATHS}
    on_cpu = device.type == "cpu"
    print(f"\n{'path':<11} {'trainable':>12} {'ms/step':>9} {'steps/s':>8} {'vs full':>8}"
          + (f" {'cpu ms/step':>12} {'vs full':>8}" if on_cpu else ""))
    for path in PATHS:
        trainable = sum(p.numel() for p in models[path].parameters() if p.requires_grad)
        print(f"{path:<11} {trainable:>12,} {ms[path]:>9.0f} {1e3 / ms[path]:>8.3f} {ms['full'] / ms[path]:>7.2f}x"
              + (f" {cpu_ms[path]:>12.0f} {cpu_ms['full'] / cpu_ms[path]:>7.2f}x" if on_cpu else ""))
    print("ms/step: median over the rounds, wall clock (a step = zero_grad + forward + loss + backward + AdamW step)"
          + ("; cpu ms/step: CPU time of this process's threads" if on_cpu else ""))
    print(f"speedup: LoRA vs full finetuning {ms['full'] / ms['lora']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
