"""``pretrain`` under torchrun: real processes on the CPU with gloo, the tiny GPT, a small text.

The launches run ``python -m torch.distributed.run`` (torchrun) in a fresh folder. The equivalence, resume and
multi-node runs go through ``driver.py``, which is ``python -m llmscratch`` with dropout off (so that 2 ranks with
batch b and 1 process with batch 2b take the same steps; with dropout each rank draws its own masks); the run
that loses a rank is the command itself. Each torchrun launch starts 2-3 Pythons that import torch: several
seconds on a busy 2-core machine, so the launches are marked slow (they still run in CI).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_training import TEXT

from llmscratch import cli, distributed
from llmscratch.ports import free_port
from llmscratch.checkpoints import load_model_state
from llmscratch.settings import get_settings

TINY = ["--tiny", "--data", "text.txt", "--context-length", "16", "--eval-freq", "2", "--eval-iter", "1"]
# 445 tokens: 24 training windows of 16 tokens (6 global batches of 4), 2 validation windows
DRIVER = """import sys
from llmscratch import cli
cli.GPT_CONFIG_TINY = {**cli.GPT_CONFIG_TINY, "drop_rate": 0.0}  # no dropout: 1 and 2 processes take the same steps
sys.exit(cli.main())
"""
# 2 ranks sum their gradients in the all-reduce where 1 process sums over the whole batch: the same numbers added
# in another order, float32 rounding (~1e-7 relative) that AdamW carries through 6 steps. Measured: below 1e-6.
TOLERANCE = 1e-5


def child_env(cwd: Path) -> dict[str, str]:
    env = {**os.environ, "LLMSCRATCH_DATA_DIR": str(cwd / "data"), "LLMSCRATCH_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    for name in ("LLMSCRATCH_SMOKE", *distributed.ENV_VARIABLES):
        env.pop(name, None)
    return env


def torchrun_command(*args: str, nproc: int = 2, launcher: tuple[str, ...] = ("--standalone",),
                     script: str = "driver.py") -> list[str]:
    target = ["-m", "llmscratch"] if script == "-m llmscratch" else [script]
    return [sys.executable, "-m", "torch.distributed.run", *launcher, f"--nproc_per_node={nproc}", *target,
            "pretrain", *args]


def torchrun(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_command(*args, **kwargs), capture_output=True, text=True, env=child_env(cwd),
                          cwd=cwd, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model_state(path)[0]


def state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["training_state"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """One epoch on 2 ranks with batch 2 (global batch 4), dropout off: the folder holds run/."""
    cwd = tmp_path_factory.mktemp("ddp")
    (cwd / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    (cwd / "driver.py").write_text(DRIVER, encoding="utf-8")
    result = torchrun(*TINY, "--batch-size", "2", "--epochs", "1", "--out", "run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd


# --- the same run on 1 and 2 processes, and on 2 "machines" -------------------------------------------------

@pytest.mark.slow
def test_two_ranks_take_the_steps_of_one_process_with_twice_the_batch(two_ranks):
    result = torchrun(*TINY, "--batch-size", "4", "--epochs", "1", "--out", "one", nproc=1, cwd=two_ranks)
    assert result.returncode == 0, result.stderr
    two, one = state(two_ranks / "run" / "checkpoint.pt"), state(two_ranks / "one" / "checkpoint.pt")
    assert two["global_step"] == one["global_step"] == 5 and two["tokens_seen"] == one["tokens_seen"] == 6 * 4 * 16
    assert two["history"]["track_tokens_seen"] == one["history"]["track_tokens_seen"]
    for name in ("train_losses", "val_losses"):
        assert len(two["history"][name]) == 3
        assert max(abs(a - b) for a, b in zip(two["history"][name], one["history"][name])) < TOLERANCE
    assert max_difference(weights(two_ranks / "run" / "checkpoint.pt"), weights(two_ranks / "one" / "checkpoint.pt")) \
        < TOLERANCE  # measured: 4.9e-7 (losses: 9.5e-7)
    # only rank 0 talked: one header, the book's lines once, the results once
    assert result.stderr.count("pretraining a tiny GPT") == 1
    assert "1 processes (gloo)" in result.stderr


@pytest.mark.slow
def test_two_nodes_on_one_machine_give_the_two_rank_run(two_ranks):
    """torchrun --nnodes=2 with a c10d rendezvous on 127.0.0.1, one process per "machine", the same folder."""
    launcher = ("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "--rdzv-id=test")
    command = torchrun_command(*TINY, "--batch-size", "2", "--epochs", "1", "--out", "nodes", nproc=1,
                               launcher=launcher)
    nodes = [subprocess.Popen(command, cwd=two_ranks, env=child_env(two_ranks), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert sum(out.count("checkpoint: nodes") for out, _ in outputs) == 1  # rank 0, on one of the two
    nodes, single = two_ranks / "nodes" / "checkpoint.pt", two_ranks / "run" / "checkpoint.pt"
    assert max_difference(weights(nodes), weights(single)) < TOLERANCE
    assert state(nodes)["history"] == state(single)["history"]  # the same 2 ranks: the same sums, in the same order


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_on_one_and_on_two(two_ranks, monkeypatch, capsys):
    import shutil

    for copy in ("on1", "on2"):
        shutil.copytree(two_ranks / "run", two_ranks / copy)
    result = torchrun("--out", "on2", "--resume", "--epochs", "2", cwd=two_ranks)
    assert result.returncode == 0, result.stderr
    assert "resuming on2 from epoch 1 to 2" in result.stderr and "Ep 2 (Step 000006)" in result.stderr
    # one process, no torchrun, in this process (dropout off as in driver.py)
    monkeypatch.chdir(two_ranks)
    monkeypatch.setattr(cli, "GPT_CONFIG_TINY", {**cli.GPT_CONFIG_TINY, "drop_rate": 0.0})
    for name, value in child_env(two_ranks).items():
        if name.startswith("LLMSCRATCH_"):
            monkeypatch.setenv(name, value)
    for name in ("LLMSCRATCH_SMOKE", *distributed.ENV_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        assert cli.main(["pretrain", "--out", "on1", "--resume", "--epochs", "2"]) == 0
    finally:
        get_settings.cache_clear()
    assert "Ep 2 (Step 000016)" in capsys.readouterr().err  # batch 2 on one process: 12 steps an epoch
    for copy, steps in (("on2", 11), ("on1", 17)):
        resumed = state(two_ranks / copy / "checkpoint.pt")
        assert resumed["epoch"] == 2 and resumed["global_step"] == steps
        assert resumed["history"]["train_losses"][:3] == state(two_ranks / "run" / "checkpoint.pt")["history"][
            "train_losses"]


# --- failures ----------------------------------------------------------------------------------------------

def worker_pids(parent: int) -> dict[int, int]:
    """torchrun's workers (its child processes), by RANK: read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                env = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
                found[int(env["RANK"])] = int(entry.name)
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers in /proc (Linux)")
def test_a_rank_that_dies_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    proc = subprocess.Popen(torchrun_command(*TINY, "--batch-size", "2", "--epochs", "1000", "--out", "run",
                                             script="-m llmscratch"),
                            cwd=tmp_path, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not checkpoint.exists() and proc.poll() is None:
        time.sleep(0.2)
    ranks = worker_pids(proc.pid)
    assert checkpoint.exists() and sorted(ranks) == [0, 1], proc.poll()
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("error: the run stopped: ") and "is intact" in lines[0], stderr
    saved = state(checkpoint)
    assert saved["epoch"] >= 1 and f"of epoch {saved['epoch']} is intact" in lines[0]
    assert len(weights(checkpoint)) > 0
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")], "temporary or lock files"


@pytest.mark.slow
def test_a_bad_launch_is_one_line(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    result = torchrun(*TINY, "--device", "cpu", "--dist-backend", "nccl", "--out", "run", cwd=tmp_path,
                      script="-m llmscratch")
    assert result.returncode != 0
    assert error_lines(result.stderr) == ["error: --dist-backend nccl runs on CUDA GPUs only, and the device is the "
                                          "CPU: use --dist-backend gloo (the default on the CPU), or --device cuda"]
    assert not (tmp_path / "run").exists()


# --- the launch checks, in this process (torchrun's variables set by hand) -------------------------------------

LAUNCH = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}


def test_launch_from_env():
    assert distributed.launch_from_env({}) is None
    launch = distributed.launch_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (launch.rank, launch.world_size, launch.local_rank, launch.local_world_size, launch.is_main) == (
        3, 4, 1, 2, False)
    with pytest.raises(ValueError, match="start the command with torchrun"):
        distributed.launch_from_env({"RANK": "0"})
    with pytest.raises(ValueError, match="do not fit together"):
        distributed.launch_from_env({**LAUNCH, "RANK": "2"})


def test_the_ranks_batches_make_up_one_processs_batch_of_twice_the_size():
    text = TEXT * 3  # 24 training windows of 16 tokens
    one = distributed.distributed_loaders(text, 16, 4, distributed.launch_from_env({**LAUNCH, "WORLD_SIZE": "1",
                                                                                    "LOCAL_WORLD_SIZE": "1"}), seed=5)
    ranks = [distributed.distributed_loaders(text, 16, 2, distributed.launch_from_env(
        {**LAUNCH, "RANK": str(r), "LOCAL_RANK": str(r)}), seed=5) for r in (0, 1)]
    for epoch in (0, 1):  # set_epoch reshuffles, the same way on every rank
        for train, _ in (one, *ranks):
            train.sampler.set_epoch(epoch)
        for whole, part0, part1 in zip(one[0], ranks[0][0], ranks[1][0]):
            assert len(one[0]) == len(ranks[0][0]) == 6
            together = sorted(map(tuple, torch.cat([part0[0], part1[0]]).tolist()))
            assert together == sorted(map(tuple, whole[0].tolist()))
    assert [len(ranks[r][1].dataset) for r in (0, 1)] == [2, 2] and len(ranks[0][1]) == len(ranks[1][1]) == 1
    with pytest.raises(ValueError, match="fewer than one batch of 13 for each of the 2 processes"):
        distributed.distributed_loaders(text, 16, 13, distributed.launch_from_env(LAUNCH), seed=5)


@pytest.mark.parametrize("device, backend, gpus, fragment", [
    ("cpu", "nccl", 0, "--dist-backend nccl runs on CUDA GPUs only"),
    ("cuda", None, 1, "torchrun starts 2 processes on this machine but it has 1 GPU(s): use --nproc_per_node=1"),
    ("cuda:1", None, 2, "--device cuda:1 names one GPU, but torchrun starts 2 processes"),
    ("mps", None, 0, "torchrun runs on CUDA GPUs (nccl) or on the CPU (gloo)"),
])
def test_bad_launches(monkeypatch, device, backend, gpus, fragment):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(ValueError) as raised:
        distributed.choose_backend(torch.device(device), distributed.launch_from_env(LAUNCH), backend)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_backends_and_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    second = distributed.launch_from_env({**LAUNCH, "RANK": "1", "LOCAL_RANK": "1"})
    assert distributed.choose_backend(torch.device("cpu"), second) == (torch.device("cpu"), "gloo")
    assert distributed.choose_backend(torch.device("cuda"), second) == (torch.device("cuda:1"), "nccl")
    assert distributed.choose_backend(torch.device("cuda"), second, "gloo") == (torch.device("cuda:1"), "gloo")


def test_cli_launch_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    for name, value in child_env(tmp_path).items():
        if name.startswith("LLMSCRATCH_"):
            monkeypatch.setenv(name, value)
    cases = [({}, ["--dist-backend", "gloo"], "error: --dist-backend is for runs under torchrun"),
             (LAUNCH, ["--device", "cpu", "--dist-backend", "nccl"], "error: --dist-backend nccl runs on CUDA"),
             ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, [], "error: RANK='x': start the command with")]
    for env, args, start in cases:
        for name in distributed.ENV_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        with pytest.raises(SystemExit) as raised:
            cli.main(["pretrain", *TINY, "--out", "run", *args])
        err = capsys.readouterr().err
        assert raised.value.code == 2 and len(err.splitlines()) == 1 and err.startswith(start), err
    get_settings.cache_clear()
    assert not (tmp_path / "run").exists()


def test_other_ranks_are_quiet_about_errors(tmp_path, monkeypatch, capsys):
    """Rank 1 of 2 on this machine: the same bad option exits 2 without a line (rank 0 prints it)."""
    monkeypatch.chdir(tmp_path)
    for name, value in {**LAUNCH, "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as raised:
        cli.main(["pretrain", *TINY, "--batch-size", "0", "--out", "run"])
    assert raised.value.code == 2 and capsys.readouterr().err == ""
