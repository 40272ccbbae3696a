"""Training speed of chapter 5, the book's path against the fast path, measured side by side in one run.

Introduced in ch05_pretraining (training loop, beyond the book). Both paths train the same GPT (GPT-2 small
by default, ``context_length`` 256, batch 2, AdamW lr 4e-4, weight decay 0.1, on *the-verdict*, as in chapter 5)
from the same initial weights (seed 123) on the same batches, with the same dropout masks; their steps alternate
so that a busy machine slows both alike. Paths:

* ``book``: the book's code, ``attn_impl="scratch"``, fp32, ``torch.optim.AdamW()`` with PyTorch's default
  implementation (foreach on CUDA, a per-parameter for-loop on the CPU), eager.
* ``fast (eager)``: ``attn_impl="sdpa"`` (fused QKV + ``scaled_dot_product_attention``), ``AdamW(fused=True)``,
  bf16 autocast where it helps (always on CUDA; on the CPU only if a measured matmul is faster in bf16).
* ``fast (compiled)``: the same, with the forward pass and the loss under ``torch.compile`` (``--no-compile``
  leaves it out). Its first step, which compiles, is timed separately and left out of the rate.

The table gives ms/step (forward + backward, optimizer), tokens/s and the achieved FLOP/s with the MFU (model
FLOPs utilization) against a matmul peak measured in the same run; the learning check compares the loss curves;
the last line is ``speedup: N.NNx``, the faster fast path's tokens/s over the book's.

    python benchmarks/train_speed.py                 # defaults: 124M, 256 tokens, batch 2, 2 + 8 steps
    python benchmarks/train_speed.py --no-compile --steps 4
    LLMSCRATCH_DEVICE=cuda python benchmarks/train_speed.py --batch-size 8

Offline: ``LLMSCRATCH_DATA_MIRROR`` and ``TIKTOKEN_CACHE_DIR`` as in ``.ci/run``; when they are unset and the
course material sits next to the clone (``../shared``, the layout ``.ci/run`` expects), it is used.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

from _clone import REPO_ROOT  # first: this clone's llmscratch

for _var, _sub in (("LLMSCRATCH_DATA_MIRROR", "data"), ("TIKTOKEN_CACHE_DIR", "tiktoken_cache")):
    if not os.environ.get(_var) and (REPO_ROOT.parent / "shared" / _sub).is_dir():
        os.environ[_var] = str(REPO_ROOT.parent / "shared" / _sub)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import llmscratch  # noqa: E402
from llmscratch.benchmarking import machine_label, synchronize  # noqa: E402

SEED = 123  # the book's seed, for the weights and the loader's shuffle
TRAIN_RATIO = 0.90  # chapter 5 trains on the first 90% of the-verdict
FP32_TOL = 0.01  # max |loss difference| when both paths compute in fp32 with the same dropout masks
LOOSE_TOL = 0.1  # ... when the fast path uses bf16 or draws its own dropout masks


# ----------------------------------------------------------------------------------------------- machine
def cpu_seconds() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process, wall seconds), or None off Linux."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    t = os.times()
    return ((user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), t.user + t.system,
            time.perf_counter())


def matmul_tflops(device, dtype, m, k, n, *, budget_s=0.5, max_reps=10) -> float:
    """Median TFLOP/s of an (m, k) @ (k, n) matmul: one untimed call, then timed calls for about budget_s."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    a @ b
    times, start = [], time.perf_counter()
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - start < budget_s):
        synchronize(device)
        t = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - t)
        if len(times) == 1 and times[0] > budget_s:  # very slow (emulated dtype): one call tells enough
            break
    return 2 * m * k * n / statistics.median(times) / 1e12


def choose_bf16(mode: str, device: torch.device, emb_dim: int) -> tuple[bool, str]:
    """Whether the fast path runs under bf16 autocast, and why."""
    if mode != "auto":
        return mode == "on", f"--bf16 {mode}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, "CUDA GPU with native bf16: always on"
        return False, "this GPU has no native bf16"
    if device.type != "cpu":
        return False, f"not measured on {device.type}; try --bf16 on"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = None
    m, k, n = 128, emb_dim, 4 * emb_dim  # one of the feed forward's matmuls, 128 rows
    fp32 = matmul_tflops(device, torch.float32, m, k, n)
    bf16 = matmul_tflops(device, torch.bfloat16, m, k, n)
    use = bf16 >= 1.1 * fp32
    why = (f"measured a {m}x{k} @ {k}x{n} matmul: fp32 {fp32 * 1e3:.1f} GFLOP/s, bf16 {bf16 * 1e3:.2f} GFLOP/s "
           f"({'bf16' if use else 'fp32'} is faster; oneDNN native bf16 on this CPU: {native})")
    return use, why


# ----------------------------------------------------------------------------------------------- paths
@dataclass
class TrainPath:
    """One way to train the model: its own copy of the weights, its optimizer and its loss function."""

    name: str
    settings: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: object  # (x, y) -> scalar loss
    compiled: bool = False
    bf16: bool = False
    same_masks: bool = True  # draws the same dropout masks as the book's code for the same seed
    losses: list = field(default_factory=list)
    fwd_bwd_s: list = field(default_factory=list)  # measured steps only (after the warmup)
    optim_s: list = field(default_factory=list)
    first_step_s: float | None = None
    error: str | None = None

    @property
    def step_s(self) -> float:
        return statistics.median(f + o for f, o in zip(self.fwd_bwd_s, self.optim_s))


def optimizer_kind(optimizer) -> str:
    d = optimizer.defaults
    if d.get("fused"):
        return "fused"
    if d.get("foreach"):
        return "foreach"
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach
        params = [p for g in optimizer.param_groups for p in g["params"]]
        _, foreach = _default_to_fused_or_foreach(params, differentiable=False, use_fused=False)
    except (ImportError, TypeError):
        return "default"
    return "default=foreach" if foreach else "default=for-loop"


def make_loss_fn(model, device, bf16):
    """The book's calc_loss_batch on an already moved batch, optionally under bf16 autocast."""
    def loss_fn(input_batch, target_batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_batch)  # (batch, num_tokens, vocab_size)
        return F.cross_entropy(logits.float().flatten(0, 1), target_batch.flatten())
    return loss_fn


def fast_optimizer(params):
    """AdamW(fused=True) where PyTorch has it for this device, else the foreach implementation."""
    try:
        return torch.optim.AdamW(params, lr=4e-4, weight_decay=0.1, fused=True), ""
    except (RuntimeError, ValueError) as e:  # fused AdamW not available for this device / dtype
        return torch.optim.AdamW(params, lr=4e-4, weight_decay=0.1, foreach=True), f" (no fused: {e})"


def build_paths(cfg, device, args, bf16, eager_fast):
    """The book's path, the fast path in eager mode (if eager_fast) and compiled (if args.compile)."""
    torch.manual_seed(SEED)
    book = llmscratch.GPTModel({**cfg, "attn_impl": "scratch"}).to(device)  # the book's initial weights
    book.train()
    state_dict = book.state_dict()

    def fast_model():
        m = llmscratch.GPTModel({**cfg, "attn_impl": "sdpa"}).to(device)
        m.load_state_dict(state_dict)  # the same initial weights as the book's path
        m.train()
        return m

    paths = []
    opt = torch.optim.AdamW(book.parameters(), lr=4e-4, weight_decay=0.1)
    paths.append(TrainPath("book", f"attn=scratch, fp32, AdamW({optimizer_kind(opt)}), eager", book, opt,
                           make_loss_fn(book, device, False)))

    dtype = "bf16 autocast" if bf16 else "fp32"
    same_masks = device.type == "cpu"  # CUDA's SDPA kernels draw their own dropout masks
    if eager_fast:
        fast = fast_model()
        opt, note = fast_optimizer(fast.parameters())
        paths.append(TrainPath("fast (eager)", f"attn=sdpa, {dtype}, AdamW({optimizer_kind(opt)}){note}, eager",
                               fast, opt, make_loss_fn(fast, device, bf16), bf16=bf16, same_masks=same_masks))
    if args.compile:
        fast = fast_model()
        opt, note = fast_optimizer(fast.parameters())
        from torch import _inductor

        options = dict(_inductor.list_mode_options(args.compile_mode))
        # fallback_random: Inductor draws the dropout masks with PyTorch's own generator, so on the CPU the
        # compiled path sees the book's masks (an exact learning check); --inductor-random lets it fuse its own.
        # On CUDA the SDPA kernels draw their own masks anyway, so Inductor keeps its faster RNG there.
        eager_rng = same_masks and not args.inductor_random
        options["fallback_random"] = eager_rng
        loss_fn = torch.compile(make_loss_fn(fast, device, bf16), options=options)
        rnd = "eager dropout RNG" if eager_rng else "Inductor's dropout RNG"
        paths.append(TrainPath("fast (compiled)", f"attn=sdpa, {dtype}, AdamW({optimizer_kind(opt)}){note}, "
                               f"torch.compile({args.compile_mode}, {rnd})", fast, opt, loss_fn, compiled=True,
                               bf16=bf16, same_masks=eager_rng))
    return paths


def to_eager(path: TrainPath, device) -> None:
    """After a compiler failure: the same model and optimizer, trained eagerly from here on."""
    path.loss_fn = make_loss_fn(path.model, device, path.bf16)
    path.compiled = False
    path.same_masks = device.type == "cpu"
    path.name = "fast (eager)"
    path.settings = path.settings.split(", torch.compile")[0] + ", eager (torch.compile failed)"


def memory_check(cfg, args, device, n_params) -> tuple[float, float, float | None]:
    """Rough GB one training path holds (weights, gradients, AdamW's two moments: 16 bytes per parameter),
    the GB of activations of one step, and the GB available now (None if unknown)."""
    tokens = args.batch_size * args.context_length
    per_path = 16 * n_params / 1e9
    acts = 4 * tokens * (3 * cfg["vocab_size"] + cfg["n_layers"] * (40 * cfg["emb_dim"]
                         + 3 * cfg["n_heads"] * args.context_length)) / 1e9
    available = None
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[0] / 1e9
    elif device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="utf-8") as f:
                info = dict(line.split(":", 1) for line in f)
            available = int(info["MemAvailable"].split()[0]) * 1024 / 1e9
        except (OSError, KeyError, ValueError):
            available = None
    return per_path, acts, available


def train_step(path: TrainPath, x, y, seed, device):
    """One optimizer step; returns the loss and the seconds of forward + backward and of the optimizer."""
    torch.manual_seed(seed)  # the same dropout masks in every path at this step
    synchronize(device)
    t0 = time.perf_counter()
    path.optimizer.zero_grad(set_to_none=True)
    loss = path.loss_fn(x, y)
    loss.backward()
    synchronize(device)
    t1 = time.perf_counter()
    path.optimizer.step()
    synchronize(device)
    t2 = time.perf_counter()
    return loss.item(), t1 - t0, t2 - t1


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", help="cpu or cuda (default: llmscratch.get_device() if LLMSCRATCH_DEVICE is set, "
                   "else cpu)")
    p.add_argument("--config", default="124M", choices=list(llmscratch.GPT2_CONFIGS), help="GPT-2 size")
    p.add_argument("--context-length", type=int, default=256, help="tokens per sequence (chapter 5: 256)")
    p.add_argument("--batch-size", type=int, default=2, help="sequences per step (chapter 5: 2)")
    p.add_argument("--steps", type=int, default=8, help="measured steps per path")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per path first (at least 1 with compile)")
    p.add_argument("--compile", dest="compile", action="store_true", default=True,
                   help="add the torch.compile path (default)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out")
    p.add_argument("--compile-mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    p.add_argument("--eager-fast", dest="eager_fast", action="store_true", default=None,
                   help="keep the 'fast (eager)' ablation row even when memory looks short (default: kept if "
                   "it fits)")
    p.add_argument("--no-eager-fast", dest="eager_fast", action="store_false",
                   help="with the compiler on, leave the 'fast (eager)' row out (saves memory and time)")
    p.add_argument("--inductor-random", action="store_true",
                   help="let the compiled path fuse its own dropout RNG (not the book's masks: "
                   "looser learning check)")
    p.add_argument("--bf16", default="auto", choices=["auto", "on", "off"],
                   help="bf16 autocast on the fast path (auto: always on CUDA, on the CPU if measured faster)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores this process may use)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.context_length < 1:
        p.error("--steps, --batch-size and --context-length must be >= 1, --warmup >= 0")
    return args


def get_batches(batch_size, context_length, n, device):
    """The first n training batches of chapter 5's loader (epochs repeat, reshuffled), moved to device."""
    text = llmscratch.get_data("the-verdict").read_text(encoding="utf-8")
    train_text = text[: int(TRAIN_RATIO * len(text))]
    torch.manual_seed(SEED)
    loader = llmscratch.create_dataloader_v1(train_text, batch_size=batch_size, max_length=context_length,
                                             stride=context_length, shuffle=True, drop_last=True)
    if len(loader) == 0:
        raise SystemExit(f"the-verdict's training text has fewer than {batch_size} sequences of "
                         f"{context_length + 1} tokens: lower --batch-size or --context-length")
    batches = []
    while len(batches) < n:
        batches.extend((x.to(device), y.to(device)) for x, y in loader)
    return batches[:n]


def flops_per_token(model, cfg) -> float:
    """6 * N + 12 * L * d * T (PaLM, appendix B; nanoGPT's estimate_mfu): N = parameters without the token
    and position embeddings (the untied output head counts), the second term the attention matmuls."""
    n = sum(p.numel() for p in model.parameters())
    n -= model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    return 6 * n + 12 * cfg["n_layers"] * cfg["emb_dim"] * cfg["context_length"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device:
        device = torch.device(args.device)
    elif os.environ.get("LLMSCRATCH_DEVICE"):
        device = llmscratch.get_device()
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but PyTorch sees no CUDA GPU")
    if device.type == "cpu":
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    min_warmup = 1 if args.compile else 0
    if args.compile and device.type == "cuda" and args.compile_mode in ("reduce-overhead", "max-autotune"):
        min_warmup = 3  # CUDA graphs are recorded on the steps after the compiling one
    if args.warmup < min_warmup:
        print(f"note: --warmup raised to {min_warmup} so that compiling (and graph recording) is not measured")
        args.warmup = min_warmup

    cfg = {**llmscratch.GPT2_CONFIGS[args.config], "context_length": args.context_length}
    tokens = args.batch_size * args.context_length
    n_steps = args.warmup + args.steps
    print(f"machine: {machine_label(device)}")
    print(f"model:   GPT-2 {args.config}, context_length {args.context_length}, batch {args.batch_size} "
          f"({tokens} tokens/step), drop_rate {cfg['drop_rate']}; AdamW lr 4e-4, weight_decay 0.1")
    print(f"steps:   {args.warmup} warmup + {args.steps} measured per path, interleaved, on the-verdict "
          "(chapter 5's train split, shuffled with seed 123)")

    bf16, why = choose_bf16(args.bf16, device, cfg["emb_dim"])
    print(f"bf16:    {'on' if bf16 else 'off'} for the fast path: {why}")
    batches = get_batches(args.batch_size, args.context_length, n_steps, device)

    # The eager fast path is the ablation row (what SDPA + fused AdamW give without the compiler); with the
    # compiler on, it is left out when memory is short rather than letting the run be killed.
    with torch.device("meta"):
        n_params = sum(p.numel() for p in llmscratch.GPTModel(cfg).parameters())
    per_path, acts, available = memory_check(cfg, args, device, n_params)
    eager_fast = args.eager_fast if args.eager_fast is not None else True
    if not args.compile:
        eager_fast = True
    n_paths = 1 + eager_fast + args.compile
    need = n_paths * per_path + acts + (1.0 if args.compile else 0.0)  # + ~1 GB for the compiler
    if args.compile and args.eager_fast is None and available is not None and need > 0.9 * available:
        eager_fast, n_paths = False, 2
        print(f"memory:  {available:.1f} GB available, 3 paths need ~{need:.1f} GB: the 'fast (eager)' row is "
              "left out (--eager-fast forces it, --no-compile gives it alone)")
        need -= per_path
    mem = f"{available:.1f} GB available" if available is not None else "available memory unknown"
    print(f"memory:  ~{need:.1f} GB for {n_paths} paths ({per_path:.1f} GB each + {acts:.1f} GB activations"
          f"{' + ~1 GB compiler' if args.compile else ''}); {mem}")

    paths = build_paths(cfg, device, args, bf16, eager_fast)
    fpt = flops_per_token(paths[0].model, cfg)

    compile_error = None
    cpu_start = None  # CPU seconds of the whole machine and of this process when the measured steps start
    for i in range(n_steps):
        if i == args.warmup:
            cpu_start = cpu_seconds()
        x, y = batches[i]
        order = paths if i % 2 == 0 else paths[::-1]  # alternate who goes first
        for path in order:
            if path.error:
                continue
            try:
                loss, fwd_bwd, optim = train_step(path, x, y, SEED + i, device)
            except Exception as e:  # noqa: BLE001 - a compiler failure must not end the benchmark
                if not path.compiled:
                    raise
                error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                compile_error = error
                if any(p.name == "fast (eager)" for p in paths):
                    path.error = error
                    print(f"torch.compile failed on this machine ({error[:300]}); the table keeps the eager "
                          "fast path")
                    continue
                # The optimizer has not stepped: redo this step eagerly with the same model and optimizer.
                print(f"torch.compile failed on this machine ({error[:300]}); the fast path runs eager")
                to_eager(path, device)
                loss, fwd_bwd, optim = train_step(path, x, y, SEED + i, device)
            path.losses.append(loss)
            if i == 0:
                path.first_step_s = fwd_bwd + optim
            if i >= args.warmup:
                path.fwd_bwd_s.append(fwd_bwd)
                path.optim_s.append(optim)
        print(f"  step {i + 1}/{n_steps}: " + ", ".join(
            f"{p.name} {p.losses[-1]:.4f}" for p in paths if not p.error), flush=True)
    cpu_end = cpu_seconds()
    paths = [p for p in paths if not p.error]

    compiled = next((p for p in paths if p.compiled), None)
    if compiled is not None:
        compile_s = compiled.first_step_s - compiled.step_s
        try:
            from torch._dynamo.utils import counters
            cache = (f"; Inductor FX graph cache: {counters['inductor']['fxgraph_cache_hit']} hits, "
                     f"{counters['inductor']['fxgraph_cache_miss']} misses")
        except ImportError:
            cache = ""
        print(f"compile: {compile_s:.1f} s (first compiled step {compiled.first_step_s:.1f} s minus a steady "
              f"step; not in the rates{cache})")
    elif compile_error:
        print(f"compile: failed, so the table has no compiled path ({compile_error[:200]})")
    else:
        print("compile: off (--no-compile)")

    peak_dtype = torch.bfloat16 if (bf16 or device.type == "cuda") else torch.float32
    size = 8192 if device.type == "cuda" else 1024
    peak = matmul_tflops(device, peak_dtype, size, size, size, budget_s=1.0 if device.type == "cuda" else 0.5)
    dtype_name = str(peak_dtype).removeprefix("torch.")
    print(f"peak:    {peak:.2f} TFLOP/s measured now ({dtype_name} {size}x{size} @ {size}x{size} matmul, median); "
          f"FLOPs/token = 6*N_non-embedding + 12*n_layers*emb_dim*context_length = {fpt / 1e6:.0f} MFLOP")

    if device.type == "cpu" and cpu_start is not None and cpu_end is not None:
        cores = len(os.sched_getaffinity(0))
        others = ((cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / (cpu_end[2] - cpu_start[2])
        busy = others > 0.25 * cores
        print(f"load:    other processes used {max(others, 0):.1f} of {cores} cores on average during the measured "
              "steps" + ("" if not busy else
                         ": interleaving keeps the comparison fair, but contention slows the many small kernels (the "
                         "book's elementwise ops, its for-loop AdamW) more than big matmuls, so the ratio comes out "
                         "larger than on an idle machine"))

    book = paths[0]
    fast = min(paths[1:], key=lambda p: p.step_s)
    print()
    rows = [("path", "settings", "steps", "fwd+bwd ms", "optim ms", "ms/step", "tokens/s", "TFLOP/s", "MFU")]
    for p in paths:
        ms = p.step_s * 1e3
        tflops = fpt * tokens / p.step_s / 1e12
        rows.append((p.name + (" *" if p is fast else ""), p.settings, str(len(p.fwd_bwd_s)),
                     f"{statistics.median(p.fwd_bwd_s) * 1e3:.0f}", f"{statistics.median(p.optim_s) * 1e3:.0f}",
                     f"{ms:.0f}", f"{tokens / p.step_s:.1f}", f"{tflops:.3f}", f"{tflops / peak:.1%}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(v.ljust(w) if c < 2 else v.rjust(w) for c, (v, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    print("ms: medians over the measured steps (a step = zero_grad + forward + loss + backward + optimizer step); "
          "* = the fast path in the speedup")

    print("\nlearning check: same initial weights (seed 123), same batches, dropout reseeded before every step")
    ok = True
    for p in paths:
        curve = " ".join(f"{v:.3f}" for v in p.losses)
        line = f"  {p.name:<16} loss {p.losses[0]:.4f} -> {p.losses[-1]:.4f}  [{curve}]"
        if p is not book:
            diff = max(abs(a - b) for a, b in zip(p.losses, book.losses))
            exact = p.same_masks and not p.bf16
            tol = FP32_TOL if exact else LOOSE_TOL
            why = "fp32, same dropout masks" if exact else ", ".join(
                s for s in ("bf16" if p.bf16 else "", "" if p.same_masks else "own dropout masks") if s)
            good = diff <= tol and math.isfinite(diff)
            ok &= good
            verdict = "OK" if good else "MISMATCH"
            line += f"\n  {'':<16} max |loss - book's| = {diff:.2e} (tolerance {tol}: {why}) {verdict}"
        print(line)
    if not ok:
        print("learning check FAILED: the fast path does not train like the book's")

    print(f"speedup: {book.step_s / fast.step_s:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
