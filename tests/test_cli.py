"""The command line, run as a reader would: ``python -m llmscratch ...`` in a fresh process, tiny settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TRAIN = ["pretrain", "--tiny", "--epochs", "1", "--batch-size", "8", "--eval-freq", "4", "--eval-iter", "1"]


def run_cli(*args: str, cwd: Path, env_extra: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMSCRATCH_DATA_DIR": str(cwd / "data"), "LLMSCRATCH_DEVICE": "cpu", **(env_extra or {})}
    env.pop("LLMSCRATCH_SMOKE", None)
    return subprocess.run([sys.executable, "-m", "llmscratch", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def mirror() -> str:
    path = os.environ.get("LLMSCRATCH_DATA_MIRROR")
    if not path:
        pytest.skip("LLMSCRATCH_DATA_MIRROR is not set (CI sets it to ../shared/data)")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny pretraining run on the-verdict, shared by the tests that need a checkpoint."""
    if not os.environ.get("LLMSCRATCH_DATA_MIRROR"):
        pytest.skip("LLMSCRATCH_DATA_MIRROR is not set (CI sets it to ../shared/data)")
    cwd = tmp_path_factory.mktemp("cli")
    result = run_cli(*TRAIN, "--out", "run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd


def test_download_from_mirror(tmp_path, mirror):
    result = run_cli("download", "the-verdict", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["the-verdict", os.path.join("data", "the-verdict.txt")]
    assert (tmp_path / "data" / "the-verdict.txt").stat().st_size == 20_479
    assert "Warning" not in result.stderr


def test_pretrain_writes_checkpoint_plot_and_rate(trained):
    run = trained / "run"
    assert (run / "checkpoint.pt").is_file() and (run / "losses.png").stat().st_size > 1000
    state = torch.load(run / "checkpoint.pt", weights_only=True)["training_state"]
    assert state["epoch"] == 1 and state["config"]["emb_dim"] == 64


def test_pretrain_resume_continues(trained, tmp_path):
    result = run_cli(*TRAIN[:3], "2", *TRAIN[4:], "--out", str(trained / "run"), "--resume", cwd=trained)
    assert result.returncode == 0, result.stderr
    assert "tokens/s:" in result.stdout and "Ep 2 (Step" in result.stderr
    assert torch.load(trained / "run" / "checkpoint.pt", weights_only=True)["training_state"]["epoch"] == 2


def test_generate_from_checkpoint(trained):
    result = run_cli("generate", "--checkpoint", "run/checkpoint.pt", "--prompt", "Every effort", "--max-new-tokens",
                     "5", "--temperature", "1.0", "--top-k", "5", cwd=trained)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Every effort") and result.stdout.strip() != "Every effort"


def restore_sigint():
    """Give the child the default SIGINT action, as a terminal's Ctrl-C finds it: a pytest started in the
    background of a non-interactive shell (``cmd &``) ignores SIGINT, children inherit that, and Python then
    installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_run_keeps_last_checkpoint(trained):
    before = (trained / "run" / "checkpoint.pt").read_bytes()
    env = {**os.environ, "LLMSCRATCH_DATA_DIR": str(trained / "data"), "LLMSCRATCH_DEVICE": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "llmscratch", *TRAIN[:3], "50", *TRAIN[4:], "--out", "run",
                             "--resume"], cwd=trained, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=restore_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (trained / "run" / "checkpoint.pt").read_bytes() == before:
        time.sleep(0.2)  # wait until at least one more epoch was saved, so the signal lands mid-training
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    state = torch.load(trained / "run" / "checkpoint.pt", weights_only=True)["training_state"]
    assert state["epoch"] >= 3
    assert not [p for p in (trained / "run").iterdir() if p.name.startswith(".")], "temporary files left"


@pytest.mark.parametrize("args, fragment", [
    (["pretrain", "--data", "missing.txt"], "no such file"),
    (["pretrain", "--data", "empty.txt"], "is empty"),
    (["pretrain", "--tiny", "--data", "short.txt"], "too short"),
    (["pretrain", "--model", "999M"], "invalid choice: '999M'"),
    (["generate", "--checkpoint", "missing.pt"], "no such file"),
    (["generate", "--gpt2", "2B"], "invalid choice"),
    (["download", "the-verdikt"], "unknown data file 'the-verdikt'"),
])
def test_bad_input_is_a_one_line_error(tmp_path, args, fragment):
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "short.txt").write_text("Only a few words here.", encoding="utf-8")
    assert_one_line_error(run_cli(*args, cwd=tmp_path), fragment)


def test_checkpoint_from_another_config_is_refused(trained):
    result = run_cli("pretrain", "--out", "run", "--resume", "--context-length", "32", cwd=trained)
    assert_one_line_error(result, "config mismatch", "emb_dim")


def test_help_lists_commands(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert all(name in result.stdout for name in ("pretrain", "generate", "download"))
