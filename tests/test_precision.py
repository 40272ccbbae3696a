"""llmscratch.precision: the one place that picks a dtype, checked on simulated GPUs (T4, V100, P100, H100), the
CPU and MPS; and the places that use it (compare_attention's defaults, the two benchmark scripts).

No GPU is needed: torch.cuda's answers are replaced, so these tests run the same everywhere.
"""

from __future__ import annotations

import re
import sys

import pytest
import torch

from benchmark_scripts import load_script
from llmscratch import benchmarking, precision
from llmscratch.precision import (
    benchmark_dtypes,
    choose_dtype,
    choose_training_precision,
    native_bf16,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py



CUDA = torch.device("cuda")
# name, compute capability, native bf16, bf16 with emulation (torch >= 2.4 emulates it on older GPUs)
GPUS = {
    "T4": ("Tesla T4", (7, 5), False, True),
    "V100": ("Tesla V100-SXM2-16GB", (7, 0), False, True),
    "P100": ("Tesla P100-PCIE-16GB", (6, 0), False, True),
    "H100": ("NVIDIA H100 80GB HBM3", (9, 0), True, True),
}


def fake_gpu(monkeypatch, gpu, *, old_torch=False):
    """Make torch.cuda answer as ``gpu`` would; ``old_torch``: is_bf16_supported takes no argument (torch < 2.4)
    and counts emulation, the worst case for the capability check."""
    name, capability, native, emulated = GPUS[gpu]

    def is_bf16_supported(including_emulation=True):
        return native or (including_emulation and emulated)

    def old_is_bf16_supported():
        return native or emulated

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", old_is_bf16_supported if old_torch else is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", None)


# --- choose_dtype: inference and benchmarks ------------------------------------------------------------------

@pytest.mark.parametrize("old_torch", [False, True])
def test_t4_has_no_native_bf16_so_float16(monkeypatch, old_torch):
    fake_gpu(monkeypatch, "T4", old_torch=old_torch)
    assert not native_bf16(CUDA)
    dtype, reason = choose_dtype(CUDA)
    assert dtype == torch.float16
    assert reason == "this GPU has no native bfloat16 (Tesla T4): using float16"


def test_h100_uses_bf16(monkeypatch):
    fake_gpu(monkeypatch, "H100")
    assert native_bf16("cuda:0")
    assert choose_dtype("cuda:0") == (torch.bfloat16, "this GPU has native bfloat16 (NVIDIA H100 80GB HBM3): "
                                                       "using bfloat16")


def test_v100_float16_and_p100_float32(monkeypatch):
    fake_gpu(monkeypatch, "V100")
    assert choose_dtype(CUDA).dtype == torch.float16
    fake_gpu(monkeypatch, "P100")
    dtype, reason = choose_dtype(CUDA)
    assert dtype == torch.float32
    assert reason == "this GPU has no native bfloat16 (Tesla P100-PCIE-16GB) and no float16 tensor cores: using float32"


def test_cpu_keeps_bf16_and_says_it_may_be_emulated():
    dtype, reason = choose_dtype("cpu")
    assert dtype == torch.bfloat16
    assert reason.startswith("CPU: bfloat16") and "emulated" in reason
    assert not native_bf16("cpu")  # only GPUs are asked


def test_float32_is_always_granted(monkeypatch):
    fake_gpu(monkeypatch, "T4")
    assert choose_dtype(CUDA, want=torch.float32) == (torch.float32, "float32 as asked")
    assert choose_dtype(None, want=torch.float32).dtype == torch.float32


def test_float16_asked_on_a_gpu_without_tensor_cores(monkeypatch):
    fake_gpu(monkeypatch, "P100")
    assert choose_dtype(CUDA, want=torch.float16).dtype == torch.float32
    fake_gpu(monkeypatch, "T4")
    assert choose_dtype(CUDA, want=torch.float16).dtype == torch.float16


@pytest.mark.parametrize("has_bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_mps(monkeypatch, has_bf16, expected):
    monkeypatch.setattr(precision, "_mps_bf16", lambda device: has_bf16)
    dtype, reason = choose_dtype("mps")
    assert dtype == expected
    assert ("macOS 14" in reason) == (not has_bf16)


@pytest.mark.parametrize("gpu, expected", [("T4", (torch.float32, torch.float16)),
                                           ("H100", (torch.float32, torch.bfloat16)),
                                           ("P100", (torch.float32,))])
def test_benchmark_dtypes_on_gpus(monkeypatch, gpu, expected):
    fake_gpu(monkeypatch, gpu)
    assert benchmark_dtypes(CUDA)[0] == expected


def test_benchmark_dtypes_on_the_cpu_are_the_notebooks():
    """The ch03 notebook's stored table (CPU) has float32 and bfloat16 rows: the default must keep them."""
    assert benchmark_dtypes("cpu")[0] == (torch.float32, torch.bfloat16)


# --- choose_training_precision: autocast dtype and GradScaler ----------------------------------------------

def test_training_on_a_t4_uses_float16_with_a_gradient_scaler(monkeypatch):
    fake_gpu(monkeypatch, "T4")
    p = choose_training_precision(CUDA)
    assert (p.autocast_dtype, p.use_grad_scaler) == (torch.float16, True)
    assert p.reason == "this GPU has no native bfloat16 (Tesla T4): using float16 with a gradient scaler"
    assert p.label == "fp16 autocast + GradScaler"


def test_training_on_an_h100_uses_bf16_without_a_scaler(monkeypatch):
    fake_gpu(monkeypatch, "H100")
    p = choose_training_precision(CUDA)
    assert (p.autocast_dtype, p.use_grad_scaler, p.label) == (torch.bfloat16, False, "bf16 autocast")
    assert p.reason == ("this GPU has native bfloat16 (NVIDIA H100 80GB HBM3): using bfloat16 autocast, "
                        "no gradient scaler needed")


def test_training_on_a_p100_stays_float32(monkeypatch):
    fake_gpu(monkeypatch, "P100")
    p = choose_training_precision(CUDA)
    assert (p.autocast_dtype, p.use_grad_scaler, p.label) == (None, False, "fp32")


def test_training_bf16_asked_on_a_t4_is_granted_with_a_warning(monkeypatch):
    fake_gpu(monkeypatch, "T4")
    p = choose_training_precision(CUDA, "bf16")
    assert p.autocast_dtype == torch.bfloat16 and not p.use_grad_scaler
    assert "no native bfloat16 (Tesla T4): emulated" in p.reason


def test_training_on_the_cpu_is_float32_unless_the_probe_says_otherwise(monkeypatch):
    p = choose_training_precision("cpu")
    assert (p.autocast_dtype, p.use_grad_scaler) == (None, False)
    assert p.reason.startswith("CPU: float32")
    seconds = {torch.float32: 2.0, torch.bfloat16: 1.0}  # a CPU with AMX: bf16 twice as fast
    monkeypatch.setattr(precision, "_matmul_seconds", lambda dtype, *shape: seconds[dtype])
    p = choose_training_precision("cpu", cpu_probe=(128, 768, 3072))
    assert p.autocast_dtype == torch.bfloat16 and p.reason.endswith("using bfloat16 autocast")
    seconds[torch.bfloat16] = 1.95  # not 1.1x faster: float32
    assert choose_training_precision("cpu", cpu_probe=(128, 768, 3072)).autocast_dtype is None


def test_training_modes_and_errors():
    assert choose_training_precision("cpu", "fp16").use_grad_scaler
    assert choose_training_precision("cpu", "fp32").autocast_dtype is None
    with pytest.raises(ValueError, match="mode must be one of auto, bf16, fp16, fp32"):
        choose_training_precision("cpu", "half")


def test_training_precision_runs_a_scaled_step_on_the_cpu():
    """The helpers work together: fp16 autocast + GradScaler, one SGD step, finite weights."""
    p = choose_training_precision("cpu", "fp16")
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = p.grad_scaler()
    with p.autocast():
        loss = model(torch.ones(3, 4)).float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.isfinite(w).all() for w in model.parameters())
    with choose_training_precision("cpu").autocast():  # fp32: a no-op context
        assert model(torch.ones(1, 4)).dtype == torch.float32


# --- the callers: compare_attention (the ch03 notebook's cell) and the scripts -----------------------------

SMALL = {"batch_size": 1, "num_tokens": 8, "d_model": 16, "num_heads": 2, "repeats": 1}


def test_compare_attention_defaults_on_the_cpu_are_float32_and_bfloat16(capsys):
    table = benchmarking.compare_attention(**SMALL, device="cpu")
    assert list(table.dtype.unique()) == ["float32", "bfloat16"]
    assert table.attrs["precision"].startswith("CPU: bfloat16")
    assert capsys.readouterr().out == ""  # the notebook's stored CPU output has no extra line


def test_compare_attention_defaults_follow_choose_dtype(monkeypatch):
    """On a T4 the default rows are float32 and float16 (simulated on the CPU: benchmark_dtypes answers as a T4)."""
    fake_gpu(monkeypatch, "T4")
    t4_dtypes = benchmark_dtypes(CUDA)
    monkeypatch.setattr(benchmarking, "benchmark_dtypes", lambda device: t4_dtypes)
    table = benchmarking.compare_attention(**SMALL, device="cpu")
    assert list(table.dtype.unique()) == ["float32", "float16"]
    assert table.attrs["precision"] == "this GPU has no native bfloat16 (Tesla T4): using float16"


def test_attention_speed_script_says_which_dtypes(capsys):
    script = load_script("attention_speed")
    script.main(["--batch-size", "1", "--num-tokens", "8", "--d-model", "16", "--num-heads", "2", "--repeats", "1",
                 "--threads", "1"])
    out = capsys.readouterr().out
    assert re.search(r"^dtypes: float32, bfloat16 \(CPU: bfloat16 runs on every CPU", out, re.M)
    assert re.fullmatch(r"speedup: \d+\.\d\dx", out.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_speed_fp16_path_with_a_gradient_scaler(capsys):
    """The T4's training path (fp16 autocast + GradScaler), run on the CPU with a tiny GPT."""
    script = load_script("train_speed")
    code = script.main(["--config", "tiny", "--context-length", "16", "--steps", "2", "--warmup", "1",
                        "--fast-path", "eager", "--precision", "fp16", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "precision: fp16 autocast + GradScaler for the fast path (fp16 as asked: with a gradient scaler)" in out
    assert "attn=sdpa, fp16 autocast + GradScaler" in out
    assert "tolerance 0.1: mixed precision or own dropout masks) OK" in out
