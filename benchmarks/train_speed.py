"""Training speed of chapter 5: the book's path against ONE named fast path, measured side by side in one run.

Introduced in ch05_pretraining (beyond the book). Both paths train the same GPT (default: GPT-2 small, context
256, batch 2, AdamW lr 4e-4, weight decay 0.1, on the-verdict's training split: chapter 5) from the same weights
(seed 123) on the same batches with the same dropout masks, their steps alternating. The book's path: scratch
attention, fp32, ``calc_loss_batch``, PyTorch's default AdamW, eager. The fast path, chosen up front (``--fast-path``):
SDPA attention, ``AdamW(fused=True)``, mixed precision as ``llmscratch.precision.choose_training_precision`` picks it
(``--precision auto``: bf16 autocast on a GPU with native bf16, fp16 autocast with a GradScaler on one without, such
as Colab's T4; on the CPU bf16 if a measured bf16 matmul beats fp32, else fp32), and ``compiled``
(``torch.compile``; the compiling step is not timed) or ``eager``; ``auto`` (default) is ``compiled`` where
torch.compile works, else ``eager``, and says which. Prints ms/step, tokens/s and MFU (against a matmul peak
measured now), a learning check (the loss curves must agree) and, last, ``speedup: N.NNx (fast path 'NAME' over
the book's)``.

    python benchmarks/train_speed.py                      # 124M, 256 tokens, batch 2, 2 warmup + 8 steps
    python benchmarks/train_speed.py --config tiny --context-length 32 --steps 2   # a quick check that it runs
    LLMSCRATCH_DEVICE=cuda python benchmarks/train_speed.py --batch-size 8
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import _clone  # noqa: F401  (first: this clone's llmscratch, and the offline data next to the clone)
import torch

from llmscratch.benchmarking import busy_machine_note, machine_label, synchronize, time_call
from llmscratch.data import get_data
from llmscratch.gpt import GPT2_CONFIGS, GPT_CONFIG_TINY, GPTModel
from llmscratch.precision import TRAINING_MODES, TrainingPrecision, choose_dtype, choose_training_precision
from llmscratch.pretraining import calc_loss_batch, create_train_val_loaders
from llmscratch.settings import SettingsError, get_settings, resolve_device

CONFIGS = {**GPT2_CONFIGS, "tiny": GPT_CONFIG_TINY}
# torch.compile's modes -> untimed steps first: the compiling one (and with CUDA graphs the recording ones)
COMPILE_MODES = {"default": 1, "reduce-overhead": 3, "max-autotune": 3, "max-autotune-no-cudagraphs": 1}
SEED = 123  # the book's seed, for the weights and the loader's shuffle
FP32_TOL = 1e-3  # max |loss difference| when the fast path computes in fp32 with the book's dropout masks
LOOSE_TOL = 0.1  # ... when it uses bf16/fp16 autocast or draws its own dropout masks


def matmul_tflops(device, dtype, m, k, n, repeats=5) -> float:
    """TFLOP/s of an (m, k) @ (k, n) matmul: the median of ``repeats`` timed calls after one untimed call."""
    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    return 2 * m * k * n / time_call(lambda: a @ b, repeats=repeats, device=device) / 1e12


def choose_fast_path(mode: str, device) -> tuple[str, str]:
    """The fast path and why: ``auto`` is "compiled" where torch.compile runs a small function, else "eager"."""
    if mode != "auto":
        return mode, f"--fast-path {mode}"
    try:
        torch.compile(lambda t: torch.nn.functional.gelu(t) * 2)(torch.ones(8, device=device))
    except Exception as e:  # noqa: BLE001 - no C++ compiler, unsupported Python, ...: the fast path runs eager
        return "eager", f"--fast-path auto: torch.compile fails here ({f'{type(e).__name__}: {e}'.splitlines()[0]})"
    return "compiled", "--fast-path auto: torch.compile works here"


@dataclass
class TrainPath:
    """One way to train the model: its own copy of the weights, its optimizer and its loss function."""

    name: str
    settings: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable  # (input_batch, target_batch) -> scalar loss
    exact: bool = True  # fp32 with the book's dropout masks: the tight learning check applies
    scaler: object = None  # a GradScaler (fp16 autocast), else None
    losses: list = field(default_factory=list)
    step_s: list = field(default_factory=list)  # (forward + backward, optimizer) seconds of the measured steps

    def median_ms(self, part=None) -> float:
        return 1e3 * statistics.median(sum(s) if part is None else s[part] for s in self.step_s)


def build_paths(cfg, device, args, precision: TrainingPrecision) -> tuple[TrainPath, TrainPath]:
    """The book's path and the fast path named by args.fast_path, with the same initial weights (seed 123)."""
    torch.manual_seed(SEED)
    book_model = GPTModel({**cfg, "attn_impl": "scratch"}).to(device).train()
    fast_model = GPTModel({**cfg, "attn_impl": "sdpa"}).to(device).train()
    fast_model.load_state_dict(book_model.state_dict())
    opt = torch.optim.AdamW(book_model.parameters(), lr=4e-4, weight_decay=0.1)  # chapter 5's, PyTorch's default:
    kind = {"cuda": "default=foreach", "cpu": "default=for-loop"}.get(device.type, "default")  # per parameter on CPU
    book = TrainPath("book", f"attn=scratch, fp32, AdamW({kind}), eager", book_model, opt,
                     lambda x, y: calc_loss_batch(x, y, book_model, device))
    try:
        opt, kind = torch.optim.AdamW(fast_model.parameters(), lr=4e-4, weight_decay=0.1, fused=True), "fused"
    except (RuntimeError, ValueError):  # no fused AdamW for this device
        opt, kind = torch.optim.AdamW(fast_model.parameters(), lr=4e-4, weight_decay=0.1, foreach=True), "foreach"

    def loss_fn(x, y):  # the same calc_loss_batch; autocast computes the cross-entropy in fp32
        with precision.autocast():
            return calc_loss_batch(x, y, fast_model, device)

    same_masks = device.type == "cpu"  # CUDA's SDPA kernels draw their own dropout masks
    mode = "eager"
    if args.fast_path == "compiled":
        from torch import _inductor
        # fallback_random: Inductor draws the dropout masks with PyTorch's generator, so on the CPU the compiled
        # path sees the book's masks (an exact learning check); on CUDA, SDPA draws its own anyway.
        options = {**_inductor.list_mode_options(args.compile_mode), "fallback_random": same_masks}
        loss_fn = torch.compile(loss_fn, options=options)
        rng = "eager dropout RNG" if same_masks else "Inductor's dropout RNG"
        mode = f"torch.compile({args.compile_mode}, {rng})"
    fast = TrainPath(args.fast_path, f"attn=sdpa, {precision.label}, AdamW({kind}), {mode}", fast_model, opt,
                     loss_fn, exact=same_masks and precision.autocast_dtype is None,
                     scaler=precision.grad_scaler() if precision.use_grad_scaler else None)
    return book, fast


def train_step(path: TrainPath, x, y, seed, device) -> tuple[float, float, float]:
    """One optimizer step: the loss and the seconds of forward + backward and of the optimizer."""
    torch.manual_seed(seed)  # the same dropout masks in both paths at this step
    synchronize(device)
    t0 = time.perf_counter()
    path.optimizer.zero_grad(set_to_none=True)
    loss = path.loss_fn(x, y)
    (loss if path.scaler is None else path.scaler.scale(loss)).backward()
    synchronize(device)
    t1 = time.perf_counter()
    if path.scaler is None:
        path.optimizer.step()
    else:  # fp16: unscale, skip the step if a gradient overflowed, adapt the scale
        path.scaler.step(path.optimizer)
        path.scaler.update()
    synchronize(device)
    return loss.item(), t1 - t0, time.perf_counter() - t1


def get_batches(batch_size, context_length, n, device):
    """The first n batches of chapter 5's training loader (epochs repeat, reshuffled), moved to device."""
    torch.manual_seed(SEED)
    text = get_data("the-verdict").read_text(encoding="utf-8")
    try:
        loader, _ = create_train_val_loaders(text, context_length, batch_size=batch_size)
    except ValueError as error:
        raise SystemExit(f"train_speed.py: error: {error}") from None
    batches = []
    while len(batches) < n:
        batches.extend((x.to(device), y.to(device)) for x, y in loader)
    return batches[:n]


def flops_per_token(model, cfg) -> float:
    """6 * N + 12 * L * d * T (PaLM, appendix B; nanoGPT's estimate_mfu): N = parameters without the token
    and position embeddings (the untied output head counts), the second term the attention matmuls."""
    n = sum(p.numel() for p in model.parameters()) - model.tok_emb.weight.numel() - model.pos_emb.weight.numel()
    return 6 * n + 12 * cfg["n_layers"] * cfg["emb_dim"] * cfg["context_length"]


def learning_check(book: TrainPath, fast: TrainPath) -> tuple[bool, str]:
    """Whether the fast path's losses stay within tolerance of the book's (tight for fp32 with the same masks)."""
    diffs = [abs(a - b) for a, b in zip(fast.losses, book.losses)]
    diff = max(diffs) if all(map(math.isfinite, diffs)) else math.inf
    tol = FP32_TOL if fast.exact else LOOSE_TOL
    ok = diff <= tol
    lines = [f"learning check: same initial weights (seed {SEED}), same batches, dropout reseeded before every step"]
    for p in (book, fast):
        curve = " ".join(f"{v:.3f}" for v in p.losses)
        lines.append(f"  {p.name:<8} loss {p.losses[0]:.4f} -> {p.losses[-1]:.4f}  [{curve}]")
    why = "fp32, same dropout masks" if fast.exact else "mixed precision or own dropout masks"
    lines.append(f"  max |loss - book's| = {diff:.2e} (tolerance {tol}: {why}) {'OK' if ok else 'MISMATCH'}")
    lines += [] if ok else ["learning check FAILED: the fast path does not train like the book's"]
    return ok, "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="train_speed.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: LLMSCRATCH_DEVICE if set, else cpu)")
    p.add_argument("--config", default="124M", choices=list(CONFIGS), help="GPT-2 size (tiny: a quick check)")
    p.add_argument("--context-length", type=int, default=256, help="tokens per sequence (chapter 5: 256)")
    p.add_argument("--batch-size", type=int, default=2, help="sequences per step (chapter 5: 2)")
    p.add_argument("--steps", type=int, default=8, help="measured steps per path")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per path first (at least 1 when compiled)")
    p.add_argument("--fast-path", default="auto", choices=["auto", "compiled", "eager"], help="see above")
    p.add_argument("--compile-mode", default="default", choices=list(COMPILE_MODES), help="torch.compile's mode")
    p.add_argument("--precision", default="auto", choices=list(TRAINING_MODES), help="the fast path's; auto: see above")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores this process may use)",
                   default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.context_length < 1:
        p.error("--steps, --batch-size and --context-length must be >= 1, --warmup >= 0")
    try:
        args.device = resolve_device(args.device or (None if get_settings().device else "cpu"))
    except SettingsError as error:
        raise SystemExit(f"{p.prog}: error: {error}") from None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_label(device)}")
    if note := busy_machine_note():
        print(note)
    cfg = {**CONFIGS[args.config], "context_length": args.context_length}
    tokens = args.batch_size * args.context_length
    print(f"model:   GPT-2 {args.config}, {args.batch_size} x {args.context_length} = {tokens} tokens/step, drop_rate "
          f"{cfg['drop_rate']}, AdamW lr 4e-4, weight_decay 0.1; the-verdict, chapter 5's train split")
    args.fast_path, why = choose_fast_path(args.fast_path, device)
    if args.fast_path == "compiled":
        args.warmup = max(args.warmup, COMPILE_MODES[args.compile_mode])
    print(f"fast:    '{args.fast_path}' ({why}); {args.warmup} warmup + {args.steps} measured steps per path, "
          "alternating")
    precision = choose_training_precision(device, args.precision, cpu_probe=(128, cfg["emb_dim"], 4 * cfg["emb_dim"]))
    print(f"precision: {precision.label} for the fast path ({precision.reason})")
    batches = get_batches(args.batch_size, args.context_length, args.warmup + args.steps, device)
    book, fast = build_paths(cfg, device, args, precision)

    first_step_s = 0.0
    for i, (x, y) in enumerate(batches):
        for path in (book, fast) if i % 2 == 0 else (fast, book):  # alternate who goes first
            loss, fwd_bwd, optim = train_step(path, x, y, SEED + i, device)
            path.losses.append(loss)
            if i >= args.warmup:
                path.step_s.append((fwd_bwd, optim))
            elif i == 0 and path is fast:
                first_step_s = fwd_bwd + optim
        print(f"  step {i + 1}/{len(batches)}: book {book.losses[-1]:.4f}, {fast.name} {fast.losses[-1]:.4f}",
              flush=True)

    if fast.name == "compiled":
        print(f"compile: {first_step_s - fast.median_ms() / 1e3:.1f} s (the first step minus a steady one; not timed)")
    peak_dtype = precision.autocast_dtype or (choose_dtype(device).dtype if device.type == "cuda" else torch.float32)
    size = 8192 if device.type == "cuda" else 1024
    peak = matmul_tflops(device, peak_dtype, size, size, size)
    fpt = flops_per_token(book.model, cfg)
    print(f"peak:    {peak:.2f} TFLOP/s measured now ({str(peak_dtype).removeprefix('torch.')} {size}^3 matmul, "
          f"median); FLOPs/token = 6*N_non-embedding + 12*n_layers*emb_dim*context_length = {fpt / 1e6:.0f} MFLOP")

    print(f"\n{'path':<8} {'steps':>5} {'fwd+bwd ms':>10} {'optim ms':>8} {'ms/step':>8} {'tokens/s':>9} "
          f"{'TFLOP/s':>8} {'MFU':>6}  settings")
    for p in (book, fast):
        tflops = fpt * tokens / p.median_ms() / 1e9
        print(f"{p.name:<8} {len(p.step_s):>5} {p.median_ms(0):>10.0f} {p.median_ms(1):>8.0f} {p.median_ms():>8.0f} "
              f"{tokens / p.median_ms() * 1e3:>9.1f} {tflops:>8.3f} {tflops / peak:>6.1%}  {p.settings}")
    print("ms: medians over the measured steps (a step = zero_grad + forward + loss + backward + optimizer step)")

    ok, report = learning_check(book, fast)
    print("\n" + report)
    print(f"speedup: {book.median_ms() / fast.median_ms():.2f}x (fast path '{fast.name}' over the book's)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
