"""Which floating-point type to compute in on this device, and why: the course's one place that decides it.

Introduced in ch03_attention (the speed table's low-precision rows) and used by the benchmarks
(``benchmarks/attention_speed.py``, ``benchmarks/train_speed.py``). ``bfloat16`` has float32's range, so it
trains without a gradient scaler, but only some hardware computes it natively:

- NVIDIA GPUs of compute capability 8.0 or newer (A100, L4, RTX 30xx/40xx, H100) and AMD GPUs (ROCm): native.
- Colab's free GPU, a Tesla T4 (7.5), and the V100 (7.0) have no native bfloat16: recent PyTorch *emulates* it
  there (``torch.cuda.is_bf16_supported()`` says True), slower than float32. They have float16 tensor cores,
  so the course uses float16 there: as is for inference, with a gradient scaler for training (float16's
  smallest normal number is about 6e-5, and small gradients would underflow to zero without scaling).
- CPUs run bfloat16 everywhere, natively only with AVX-512 BF16 or AMX (recent Xeon, AMD Zen 4); elsewhere it
  is emulated. The benchmarks time it anyway (the ch03 notebook shows both cases).

``choose_dtype`` answers for inference and benchmarks, ``choose_training_precision`` for training (the autocast
dtype and whether a ``GradScaler`` is needed). Both return the reason as one printable sentence, e.g. ``"this GPU
has no native bfloat16 (Tesla T4): using float16 with a gradient scaler"``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)
TRAINING_MODES = ("auto", "bf16", "fp16", "fp32")
_MODE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
TENSOR_CORES = (7, 0)  # compute capability of the first NVIDIA GPUs with float16 tensor cores (V100)
CPU_BF16_MARGIN = 1.1  # on the CPU, bfloat16 autocast must beat float32 by this factor in the probe


def dtype_name(dtype: torch.dtype | None) -> str:
    """``"bfloat16"`` for ``torch.bfloat16``; ``"float32"`` for ``None`` (no autocast). Introduced in
    ch03_attention (fast path), with ``choose_dtype``."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def _as_device(device) -> torch.device:
    """``device`` (a ``torch.device``, a string or ``None`` for the CPU) as a ``torch.device``; checks nothing
    about this machine, so that tests can ask about a GPU that is not here."""
    return torch.device("cpu") if device is None else torch.device(device)


def gpu_name(device) -> str:
    """The CUDA device's name as the driver gives it (``"Tesla T4"``, ``"NVIDIA H100 80GB HBM3"``), for the reasons
    ``choose_dtype`` gives (introduced in ch03_attention, fast path)."""
    return torch.cuda.get_device_name(_as_device(device))


def native_bf16(device) -> bool:
    """Whether ``device``, a CUDA (or ROCm) GPU, computes bfloat16 natively, not by emulation; other devices:
    ``False`` (a CPU runs bfloat16 anyway, natively or not: see the module docstring). Introduced in
    ch03_attention (fast path), with ``choose_dtype``.

    ``torch.cuda.is_bf16_supported(including_emulation=False)`` where this torch accepts the argument (2.4 and
    newer); older versions answer without it, and then a compute capability of 8.0 or more is required too.
    """
    device = _as_device(device)
    if device.type != "cuda":
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.4: no such argument
        supported = bool(torch.cuda.is_bf16_supported())
        return supported and (bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0))


def _mps_bf16(device) -> bool:
    """Whether this Mac's MPS backend holds bfloat16 tensors (macOS 14 or newer)."""
    try:
        torch.ones(1, dtype=torch.bfloat16, device=device)
    except (RuntimeError, TypeError):
        return False
    return True


class DtypeChoice(NamedTuple):
    """What ``choose_dtype`` picked: ``dtype, reason = choose_dtype(device)`` (ch03_attention, fast path)."""

    dtype: torch.dtype
    reason: str


def choose_dtype(device, want: torch.dtype = torch.bfloat16) -> DtypeChoice:
    """The dtype to compute in on ``device`` when ``want`` is asked for, and one sentence saying why.

    Introduced in ch03_attention (fast path). ``want`` float32 (or float64) is always granted. For ``want``
    bfloat16 or float16: on a CUDA GPU, bfloat16 only where it is native (``native_bf16``), else float16 where
    the GPU has tensor cores (compute capability 7.0 or newer: T4, V100), else float32; float16 likewise needs
    tensor cores. On the CPU ``want`` is granted (bfloat16 may be emulated there, and the reason says so); on
    Apple's MPS, bfloat16 where this macOS supports it, else float16. Other devices get float32.
    """
    device = _as_device(device)
    asked = dtype_name(want)
    if want not in LOW_PRECISION:
        return DtypeChoice(want, f"{asked} as asked")
    if device.type == "cpu":
        if want == torch.bfloat16:
            return DtypeChoice(want, "CPU: bfloat16 runs on every CPU, natively only with AVX-512 BF16 or AMX "
                                     "(elsewhere emulated, slower than float32)")
        return DtypeChoice(want, f"CPU: {asked} as asked")
    if device.type == "mps":
        if want == torch.bfloat16 and not _mps_bf16(device):
            return DtypeChoice(torch.float16, "this Mac's MPS has no bfloat16 (macOS 14 or newer has it): "
                                              "using float16")
        return DtypeChoice(want, f"MPS: using {asked}")
    if device.type != "cuda":
        return DtypeChoice(torch.float32, f"{device.type}: low precision is not checked here, using float32")
    name = gpu_name(device)
    if want == torch.bfloat16 and native_bf16(device):
        return DtypeChoice(want, f"this GPU has native bfloat16 ({name}): using bfloat16")
    no_bf16 = f"this GPU has no native bfloat16 ({name})" if want == torch.bfloat16 else f"{asked} asked ({name})"
    if torch.cuda.get_device_capability(device) >= TENSOR_CORES:
        return DtypeChoice(torch.float16, f"{no_bf16}: using float16")
    return DtypeChoice(torch.float32, f"{no_bf16} and no float16 tensor cores: using float32")


def benchmark_dtypes(device) -> tuple[tuple[torch.dtype, ...], str]:
    """float32 and the low-precision dtype ``choose_dtype(device)`` picks (no duplicate), and its reason.

    Introduced in ch03_attention (fast path): the default dtypes of ``compare_attention``. On the CPU:
    ``(float32, bfloat16)``; on a T4: ``(float32, float16)``; on an H100: ``(float32, bfloat16)``.
    """
    dtype, reason = choose_dtype(device)
    return ((torch.float32,) if dtype == torch.float32 else (torch.float32, dtype)), reason


@dataclass(frozen=True)
class TrainingPrecision:
    """How to train on a device: the autocast dtype (``None``: plain float32) and whether a ``GradScaler`` is
    needed (float16 only). Introduced in ch05_pretraining (beyond the book: ``benchmarks/train_speed.py``'s fast
    path). Built by ``choose_training_precision``; used as::

        precision = choose_training_precision(device)
        print(precision.reason)
        scaler = precision.grad_scaler()            # a disabled scaler when none is needed
        with precision.autocast():
            loss = calc_loss_batch(input_batch, target_batch, model, device)
        scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()
    """

    device_type: str
    autocast_dtype: torch.dtype | None
    use_grad_scaler: bool
    reason: str

    @property
    def label(self) -> str:
        """``"bf16 autocast"``, ``"fp16 autocast + GradScaler"`` or ``"fp32"``."""
        if self.autocast_dtype is None:
            return "fp32"
        short = {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]
        return f"{short} autocast" + (" + GradScaler" if self.use_grad_scaler else "")

    def autocast(self):
        """``torch.autocast`` for this device and dtype; a no-op context in float32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def grad_scaler(self):
        """A ``GradScaler`` for this device, enabled only when float16 needs one (disabled, it passes through)."""
        try:
            return torch.amp.GradScaler(self.device_type, enabled=self.use_grad_scaler)
        except (AttributeError, TypeError):  # torch < 2.3: only the CUDA scaler
            return torch.cuda.amp.GradScaler(enabled=self.use_grad_scaler)


def _matmul_seconds(dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 3) -> float:
    """Median CPU seconds of an (m, k) @ (k, n) matmul in ``dtype``, after one untimed call."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _precision(device: torch.device, dtype: torch.dtype | None, reason: str) -> TrainingPrecision:
    return TrainingPrecision(device.type, dtype, dtype == torch.float16, reason)


def choose_training_precision(device, mode: str = "auto", *, cpu_probe: tuple[int, int, int] | None = None
                              ) -> TrainingPrecision:
    """The mixed precision to train with on ``device``, and why (introduced in ch05_pretraining, beyond the book).

    ``mode``: ``"bf16"``, ``"fp16"`` or ``"fp32"`` is used as asked (the reason warns when bfloat16 would be
    emulated); ``"auto"`` follows ``choose_dtype``: bfloat16 autocast on a GPU with native bfloat16, float16
    autocast with a gradient scaler on a GPU with tensor cores but no bfloat16 (a T4), else float32. On the CPU,
    ``"auto"`` is float32 unless ``cpu_probe=(m, k, n)`` is given: then an (m, k) @ (k, n) matmul is timed in
    both dtypes and bfloat16 is used if it is at least ``CPU_BF16_MARGIN`` times faster. On MPS, float32.
    """
    if mode not in TRAINING_MODES:
        raise ValueError(f"mode must be one of {', '.join(TRAINING_MODES)}; got {mode!r}")
    device = _as_device(device)
    if mode != "auto":
        dtype = _MODE_DTYPES[mode]
        reason = f"{mode} as asked"
        if dtype == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
            reason += f"; this GPU has no native bfloat16 ({gpu_name(device)}): emulated, slower than float32"
        return _precision(device, dtype, reason + (": with a gradient scaler" if dtype == torch.float16 else ""))
    if device.type == "cuda":
        dtype, reason = choose_dtype(device)
        if dtype == torch.bfloat16:
            return _precision(device, dtype, f"{reason} autocast, no gradient scaler needed")
        if dtype == torch.float16:
            return _precision(device, dtype, f"{reason} with a gradient scaler")
        return _precision(device, None, reason)
    if device.type == "cpu" and cpu_probe is not None:
        m, k, n = cpu_probe
        fp32, bf16 = (2 * m * k * n / _matmul_seconds(dtype, m, k, n) / 1e9 for dtype in (torch.float32,
                                                                                          torch.bfloat16))
        use = bf16 >= CPU_BF16_MARGIN * fp32
        return _precision(device, torch.bfloat16 if use else None,
                          f"CPU: a {m}x{k} @ {k}x{n} matmul ran at {fp32:.1f} GFLOP/s in float32 and {bf16:.2f} "
                          f"GFLOP/s in bfloat16: using {'bfloat16 autocast' if use else 'float32'}")
    if device.type == "cpu":
        return _precision(device, None, "CPU: float32 (bfloat16 autocast is emulated, and slower, on CPUs without "
                                        "AVX-512 BF16 or AMX)")
    return _precision(device, None, f"{device.type}: mixed precision is not chosen automatically here: float32")


__all__ = ["DtypeChoice", "TrainingPrecision", "benchmark_dtypes", "choose_dtype", "choose_training_precision",
           "native_bf16"]
