"""DDP scaling of chapter 5's training step: tokens/s on 1 and on N processes, measured side by side in one run.

Introduced in ch05_pretraining (beyond the book: ``pretrain`` under torchrun, :mod:`llmscratch.distributed`).
The script starts itself under torchrun (``python -m torch.distributed.run --standalone``) with 1 process, then
with N, then N and 1 again (``--repeats``, the order alternating), and keeps each size's median. Every process
trains the same GPT (``DistributedDataParallel``, AdamW lr 4e-4, weight decay 0.1, seed 123) on batches of
``--batch-size`` windows of random tokens (the speed does not depend on the text): weak scaling, the global
batch is N times larger on N processes, as with ``torchrun --nproc_per_node=N -m llmscratch pretrain``. After
``--warmup`` untimed steps, rank 0 reports the time of ``--steps`` steps (the slowest rank's). Printed: the
machine, tokens/s on 1 and N processes, the speedup (N's tokens/s over 1's) and the scaling efficiency
(speedup / N: 100% is perfect scaling).

On the CPU the N processes share the cores: each gets ``--threads`` threads (default: cores // N) in both runs,
so the figure shows what DDP costs (gloo's all-reduce of the gradients, processes competing for memory) rather
than a speedup. With one GPU per process (``--device cuda``, nccl) it is the real figure.

    python benchmarks/ddp_scaling.py                                   # tiny GPT, 1 and 2 processes, CPU
    python benchmarks/ddp_scaling.py --config tiny --context-length 16 --steps 2 --warmup 1   # a quick check
    python benchmarks/ddp_scaling.py --device cuda --config 124M --nproc 8 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _clone  # noqa: F401  (first: this clone's llmscratch)
import torch

from llmscratch.benchmarking import busy_machine_note, machine_label, synchronize
from llmscratch.gpt import GPT2_CONFIGS, GPT_CONFIG_TINY, GPTModel
from llmscratch.settings import SettingsError, get_settings, resolve_device

CONFIGS = {**GPT2_CONFIGS, "tiny": GPT_CONFIG_TINY}
SEED = 123


def worker(args) -> None:
    """One process of a torchrun launch: warmup + timed DDP steps; rank 0 writes the result to args.result."""
    import torch.distributed as dist

    from llmscratch import distributed
    from llmscratch.pretraining import calc_loss_batch

    launch = distributed.launch_from_env()
    device, backend = distributed.choose_backend(args.device, launch)
    torch.set_num_threads(args.threads)
    with distributed.process_group(launch, backend, device):
        cfg = {**CONFIGS[args.config], "context_length": args.context_length}
        torch.manual_seed(SEED)
        model = GPTModel(cfg).to(device).train()
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, **distributed._NO_BUFFER_SYNC)
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        generator = torch.Generator().manual_seed(SEED + launch.rank)  # this rank's share of the batch
        shape = (args.batch_size, args.context_length + 1)
        batches = [torch.randint(cfg["vocab_size"], shape, generator=generator).to(device)
                   for _ in range(args.warmup + args.steps)]

        def step(batch):
            optimizer.zero_grad()
            loss = calc_loss_batch(batch[:, :-1], batch[:, 1:], ddp, device)
            loss.backward()  # DDP averages the gradients over the ranks here
            optimizer.step()
            return loss

        for batch in batches[:args.warmup]:
            step(batch)
        synchronize(device)
        dist.barrier()
        start = time.perf_counter()
        for batch in batches[args.warmup:]:
            loss = step(batch)
        loss = loss.item()
        synchronize(device)
        seconds = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the slowest rank's time
        if launch.is_main:
            tokens = args.steps * args.batch_size * args.context_length * launch.world_size
            Path(args.result).write_text(json.dumps({
                "processes": launch.world_size, "backend": backend, "seconds": seconds.item(), "tokens": tokens,
                "loss": loss, "machine": machine_label(device)}), encoding="utf-8")


def launch(args, nproc: int, result: Path) -> dict:
    """Run this script's worker under torchrun with ``nproc`` processes; its rank 0's result."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(Path(__file__).resolve()), "--worker", "--result", str(result), "--config", args.config,
               "--context-length", str(args.context_length), "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
               "--device", str(args.device)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not result.is_file():
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise SystemExit(f"ddp_scaling.py: error: the run on {nproc} process(es) failed (exit {done.returncode}): "
                         f"{last[0].strip()}")
    return json.loads(result.read_text(encoding="utf-8"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="ddp_scaling.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="cpu or cuda (default: LLMSCRATCH_DEVICE if set, else cpu)")
    p.add_argument("--config", default="tiny", choices=list(CONFIGS), help="GPT size (default: tiny)")
    p.add_argument("--context-length", type=int, default=64, help="tokens per window (default: 64)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per step and process (default: 4)")
    p.add_argument("--nproc", type=int, default=2, help="N, the processes compared with 1 (default: 2)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    p.add_argument("--repeats", type=int, default=2, help="launches of each size, alternating (default: 2)")
    p.add_argument("--threads", type=int, help="CPU threads per process (default: cores // N)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.context_length, args.batch_size, args.steps, args.repeats) < 1 or args.warmup < 0 or args.nproc < 2:
        p.error("--context-length, --batch-size, --steps and --repeats must be >= 1, --warmup >= 0, --nproc >= 2")
    try:
        args.device = resolve_device(args.device or (None if get_settings().device else "cpu"))
    except SettingsError as error:
        raise SystemExit(f"{p.prog}: error: {error}") from None
    if args.device.type not in ("cpu", "cuda"):
        p.error(f"--device {args.device}: DDP runs on CUDA GPUs (nccl) or the CPU (gloo)")
    if not args.worker and args.device.type == "cuda" and torch.cuda.device_count() < args.nproc:
        p.error(f"--nproc {args.nproc} needs {args.nproc} GPUs, this machine has {torch.cuda.device_count()}")
    if args.device.type == "cuda":
        args.device = torch.device("cuda")  # each process takes the GPU of its local rank
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    args.threads = args.threads or max(1, cores // args.nproc)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if note := busy_machine_note():
        print(note)
    print(f"model:   GPT {args.config}, {args.batch_size} x {args.context_length} tokens per step and process, "
          f"{args.warmup} warmup + {args.steps} timed steps, {args.threads} CPU thread(s) per process")
    seconds = {1: [], args.nproc: []}
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.repeats):
            for nproc in (1, args.nproc) if i % 2 == 0 else (args.nproc, 1):  # alternate who goes first
                result = launch(args, nproc, Path(folder) / f"{i}-{nproc}.json")
                seconds[nproc].append(result["seconds"])
                results[nproc] = result
                print(f"  launch {nproc} process(es): {result['tokens'] / result['seconds']:,.0f} tokens/s", flush=True)
    print(f"machine: {results[1]['machine']}, backend {results[args.nproc]['backend']}")
    print(f"\n{'processes':>9} {'tokens/step':>11} {'s (median)':>10} {'tokens/s':>10}")
    speed = {}
    for nproc in (1, args.nproc):
        median = statistics.median(seconds[nproc])
        speed[nproc] = results[nproc]["tokens"] / median
        print(f"{nproc:>9} {results[nproc]['tokens'] // args.steps:>11} {median:>10.2f} {speed[nproc]:>10,.0f}")
    speedup = speed[args.nproc] / speed[1]
    print(f"speedup: {speedup:.2f}x ({args.nproc} processes over 1)")
    print(f"scaling efficiency: {speedup / args.nproc:.0%} (speedup / {args.nproc}; 100% is perfect scaling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
