"""The command line, tiny settings. A first training run, a resumed run interrupted with Ctrl+C and a download
run as a reader runs them, in a fresh process (``python -m llmscratch ...``); the other tests call
``cli.main([...])`` in this process, which checks the same (exit code, stdout, every stderr line) and spares a
torch import (seconds) each."""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from tiny_training import TEXT

from llmscratch import cli, data
from llmscratch.run_lock import LOCK_NAME, lock_run_folder
from llmscratch.settings import get_settings

# 445 tokens of text, 16-token windows, batches of 4: 6 steps an epoch
TINY = ["--tiny", "--data", "text.txt", "--context-length", "16", "--batch-size", "4", "--eval-freq", "4",
        "--eval-iter", "1"]
TRAIN = ["pretrain", *TINY, "--epochs", "1"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")


def write_inputs(folder: Path) -> None:
    (folder / "text.txt").write_text(TEXT * 3, encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    (folder / "short.txt").write_text("Only a few words here.", encoding="utf-8")


def child_env(cwd: Path) -> dict[str, str]:
    env = {**os.environ, "LLMSCRATCH_DATA_DIR": str(cwd / "data"), "LLMSCRATCH_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    env.pop("LLMSCRATCH_SMOKE", None)
    return env


def run_cli(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmscratch", *args], capture_output=True, text=True,
                          env=child_env(cwd), cwd=cwd, timeout=300, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}


@pytest.fixture
def main(tmp_path, monkeypatch, capsys, one_thread):
    """``main("pretrain", ...)``: ``cli.main`` in this process, in ``tmp_path`` (with text.txt, empty.txt and
    short.txt), on the CPU; returns a CompletedProcess. ``env=`` sets LLMSCRATCH_* variables for the call."""
    monkeypatch.chdir(tmp_path)
    write_inputs(tmp_path)
    for name, value in child_env(tmp_path).items():
        if name.startswith("LLMSCRATCH_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLMSCRATCH_SMOKE", raising=False)

    def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()  # read the variables again
        try:
            code = cli.main(list(args))
        except SystemExit as exit:
            code = exit.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    yield call
    get_settings.cache_clear()  # the next reader sees the restored environment


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny pretraining run, shared by the tests that need a checkpoint: its folder holds run/."""
    cwd = tmp_path_factory.mktemp("cli")
    write_inputs(cwd)
    result = run_cli(*TRAIN, "--out", "run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd


# --- training, resuming, Ctrl+C --------------------------------------------------------------------------------


def test_download_from_mirror(tmp_path):
    if not os.environ.get("LLMSCRATCH_DATA_MIRROR"):
        pytest.skip("LLMSCRATCH_DATA_MIRROR is not set (CI sets it to ../shared/data)")
    result = run_cli("download", "the-verdict", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["the-verdict", os.path.join("data", "the-verdict.txt")]
    assert (tmp_path / "data" / "the-verdict.txt").stat().st_size == 20_479
    assert "Warning" not in result.stderr


def test_pretrain_writes_checkpoint_plot_and_settings(trained):
    run = trained / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "losses.png"]  # no lock, no temp file
    assert (run / "losses.png").stat().st_size > 1000
    state = torch.load(run / "checkpoint.pt", weights_only=True)["training_state"]
    assert state["epoch"] == 1 and state["config"]["emb_dim"] == 64
    assert state["run_settings"] == {
        "data": str(trained / "text.txt"), "model": "tiny", "context_length": 16, "batch_size": 4, "lr": 4e-4,
        "weight_decay": 0.1, "eval_freq": 4, "eval_iter": 1, "seed": 123, "attn_impl": "scratch", "epochs": 1,
        "start_context": "Every effort moves you"}


def test_resume_takes_the_saved_settings(main, trained):
    run = trained / "run"
    result = main("pretrain", "--out", str(run), "--resume", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "tokens/s:" in result.stdout and "Ep 2 (Step" in result.stderr
    assert (f"resuming {run} from epoch 1 to 2 with --data {trained / 'text.txt'} --tiny --context-length 16 "
            "--batch-size 4 --lr 0.0004 --weight-decay 0.1 --eval-freq 4 --eval-iter 1 --seed 123 "
            "--attn-impl scratch --start-context 'Every effort moves you'") in result.stderr
    state = torch.load(run / "checkpoint.pt", weights_only=True)["training_state"]
    assert state["epoch"] == 2 and state["run_settings"]["epochs"] == 2
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "losses.png"]


def restore_sigint():
    """Give the child the default SIGINT action, as a terminal's Ctrl-C finds it: a pytest started in the
    background of a non-interactive shell (``cmd &``) ignores SIGINT, children inherit that, and Python then
    installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def saved_version(path: Path) -> tuple[int, int]:
    stat = path.stat()  # every save is a new file renamed into place: a new inode
    return stat.st_ino, stat.st_mtime_ns


@pytest.mark.slow
def test_interrupted_run_keeps_last_checkpoint(trained):
    before = saved_version(trained / "run" / "checkpoint.pt")
    proc = subprocess.Popen([sys.executable, "-m", "llmscratch", "pretrain", "--epochs", "50", "--out", "run",
                             "--resume"], cwd=trained, env=child_env(trained), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and saved_version(trained / "run" / "checkpoint.pt") == before:
        time.sleep(0.2)  # wait until at least one more epoch was saved, so the signal lands mid-training
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    state = torch.load(trained / "run" / "checkpoint.pt", weights_only=True)["training_state"]
    assert state["epoch"] >= 2
    assert not [p for p in (trained / "run").iterdir() if p.name.startswith(".")], "temporary or lock files left"


# --- the bugs ----------------------------------------------------------------------------------------


def test_empty_start_context_fails_before_any_work(main, tmp_path):
    assert_one_line_error(main(*TRAIN, "--start-context", "", "--out", "run"), "--start-context is empty")
    assert not (tmp_path / "run").exists()


def test_second_run_on_a_locked_folder_fails_at_once(main, trained):
    run = trained / "run"
    with lock_run_folder(run):  # this process is "the first run"
        start = time.monotonic()
        result = main("pretrain", "--out", str(run), "--resume", "--epochs", "99")
        assert time.monotonic() - start < 10
    assert_one_line_error(result, f"{run} is in use by another run (process id {os.getpid()}): wait for it to end, "
                          "or pick another --out")
    assert not (run / LOCK_NAME).exists()
    (run / LOCK_NAME).write_text("999999999\n")  # left by a killed run: blocks nobody
    assert main("pretrain", "--out", str(run), "--resume", "--epochs", "1").returncode == 0
    assert not (run / LOCK_NAME).exists()


def test_folder_created_meanwhile_by_another_run(main, tmp_path, monkeypatch):
    """A new folder is locked once everything is checked: a run that created it and finished meanwhile wins."""
    read_text = cli._read_text

    def another_run_finishes(name):
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "checkpoint.pt").write_bytes(b"the other run's")
        return read_text(name)

    monkeypatch.setattr(cli, "_read_text", another_run_finishes)
    assert_one_line_error(main(*TRAIN, "--out", "run"), "run/checkpoint.pt exists: add --resume")
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == b"the other run's"


def test_resume_of_a_complete_run_leaves_every_file_alone(main, trained):
    run = trained / "run"
    before = files_of(run)
    result = main("pretrain", "--out", str(run), "--resume", "--epochs", "1")
    assert result.returncode == 0 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and "already complete" in result.stderr
    assert "pass --epochs N larger than" in result.stderr
    assert files_of(run) == before


def test_stale_temp_file_is_removed_by_the_next_run(main, tmp_path):
    """Issue 20, bug 8: a run killed (SIGKILL) while saving leaves its hidden temporary file; a rerun within a
    minute holds the lock, so nobody else writes the run's own files: it removes theirs whatever their age. A
    fresh temporary file of another name (e.g. a scores file that evaluate is writing) stays."""
    run = tmp_path / "run"
    run.mkdir()
    stale, fresh = run / ".checkpoint.pt.abcd1234.tmp", run / ".checkpoint.pt.efgh5678.tmp"
    other = run / ".notes-scores.json.ijkl9012.tmp"
    stale.write_bytes(b"half a checkpoint of a killed run")
    fresh.write_bytes(b"half a checkpoint of a run killed a second ago")
    other.write_bytes(b"a save of another command in progress")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    # The clean-up comes right after the lock, before anything else: even a run that then stops removes it
    result = main("pretrain", "--tiny", "--data", "short.txt", "--out", "run")
    assert result.returncode == 2 and "too short" in result.stderr
    assert f"removed {Path('run', stale.name)}, left by a run that was killed" in result.stderr
    assert f"removed {Path('run', fresh.name)}, left by a run that was killed" in result.stderr
    assert not stale.exists() and not fresh.exists() and other.exists()


# --- the general rule: one line, exit 2, before the work ----------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "-1"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lr", "inf"], "--lr must be a finite number > 0"),
    (["--lr", "0"], "a learning rate of 0 trains nothing"),
    (["--weight-decay", "-0.1"], "--weight-decay must be a finite number >= 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--context-length", "0"], "--context-length must be at least 1"),
    (["--context-length", "1025"], "--context-length must be at most 1024"),
    (["--eval-freq", "0"], "--eval-freq must be at least 1"),
    (["--eval-iter", "-1"], "--eval-iter must be at least 1"),
    (["--seed", str(2**64)], "--seed must be between -9223372036854775808 and 18446744073709551615"),
    (["--seed", str(-2**63 - 1)], "--seed must be between"),
    (["--epochs", "1.5"], "invalid int value: '1.5'"),
])
def test_bad_pretrain_numbers(main, tmp_path, args, fragment):
    assert_one_line_error(main("pretrain", "--tiny", "--out", "run", *args), fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["--temperature", "inf"], "--temperature must be a finite number >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--seed", str(2**64)], "--seed must be between"),
    (["--prompt", ""], "--prompt is empty"),
])
def test_bad_generate_numbers(main, args, fragment):
    # checked before the model is even looked for: the missing file is not what is reported
    assert_one_line_error(main("generate", "--checkpoint", "missing.pt", *args), fragment)


def test_top_k_larger_than_the_vocabulary(main, trained):
    result = main("generate", "--checkpoint", str(trained / "run" / "checkpoint.pt"), "--top-k", "60000")
    assert_one_line_error(result, "--top-k 60000 is larger than the model's vocabulary of 50257 tokens")


def test_generate_from_checkpoint(main, trained):
    result = main("generate", "--checkpoint", str(trained / "run" / "checkpoint.pt"), "--prompt", "Every effort",
                  "--max-new-tokens", "5", "--temperature", "1.0", "--top-k", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Every effort") and result.stdout.strip() != "Every effort"


@pytest.mark.parametrize("args, env, fragment", [
    (["pretrain", "--tiny", "--device", "tpu"], {}, "device='tpu' is not a device the course runs on"),
    (["pretrain", "--tiny"], {"LLMSCRATCH_DEVICE": "gpu"}, "LLMSCRATCH_DEVICE='gpu' is not a device"),
    pytest.param(["pretrain", "--tiny", "--device", "cuda"], {}, "sees no CUDA GPU", marks=NO_CUDA),
    pytest.param(["generate", "--gpt2", "124M", "--device", "cuda:1"], {}, "sees no CUDA GPU", marks=NO_CUDA),
    pytest.param(["generate", "--gpt2", "124M", "--device", "mps"], {}, "MPS is not available", marks=NO_MPS),
    (["download"], {"LLMSCRATCH_DEVICE": "tpu"}, "LLMSCRATCH_DEVICE='tpu'"),
])
def test_bad_devices(main, tmp_path, args, env, fragment):
    out = ["--out", "run"] if args[0] == "pretrain" else []
    assert_one_line_error(main(*args, *out, env=env), fragment)
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", ["pretrain", "generate", "download"])
def test_settings_that_are_not_booleans(main, tmp_path, command):
    args = {"pretrain": ["--tiny"], "generate": ["--gpt2", "124M"], "download": []}[command]
    result = main(command, *args, env={"LLMSCRATCH_SMOKE": "maybe"})
    assert_one_line_error(result, "LLMSCRATCH_SMOKE='maybe' is not a yes/no value")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def make_paths(tmp_path: Path, case: str) -> None:
    if case == "folder checkpoint":
        (tmp_path / "run" / "checkpoint.pt").mkdir(parents=True)
    elif case == "folder plot":
        (tmp_path / "run" / "losses.png").mkdir(parents=True)
    elif case == "data folder":
        (tmp_path / "texts").mkdir()


@pytest.mark.parametrize("case, args, fragment", [
    ("out is a file", ["--out", "text.txt"], "--out text.txt is a file, not a folder"),
    ("out under a file", ["--out", "text.txt/run"], "text.txt is a file, not a folder"),
    ("folder checkpoint", ["--out", "run"], "run/checkpoint.pt is a folder, but the run writes a file there"),
    ("folder plot", ["--out", "run"], "run/losses.png is a folder, but the run writes a file there"),
    ("data folder", ["--data", "texts", "--out", "run"], "--data texts: is a folder, not a file"),
    ("resume without checkpoint", ["--out", "run", "--resume"], "--resume: no checkpoint at run/checkpoint.pt"),
])
def test_bad_paths(main, tmp_path, case, args, fragment):
    make_paths(tmp_path, case)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert_one_line_error(main("pretrain", "--tiny", *args), fragment)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing written


def test_read_only_output_folder(main, tmp_path, monkeypatch):
    """Root writes into read-only folders, so the refusal of the file system is simulated."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    (tmp_path / "run").mkdir()
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert_one_line_error(main(*TRAIN, "--out", "run"), "cannot write in run (Permission denied)")
    assert list((tmp_path / "run").iterdir()) == []


def write_checkpoint(tmp_path: Path, case: str) -> Path:
    """A file at run/checkpoint.pt (pretrain --resume) or model.pth / a folder (generate) that is no checkpoint."""
    (tmp_path / "run").mkdir()
    (tmp_path / "model").mkdir()
    path = tmp_path / "run" / "checkpoint.pt"
    ours = {"format": "llmscratch-checkpoint", "version": 1, "model_state_dict": {"w": torch.zeros(1)},
            "optimizer_state_dict": None}
    if case == "pickle":
        torch.save({"model_state_dict": argparse.Namespace(code="would run on load")}, path)
        shutil.copy(path, tmp_path / "model.pth")
    elif case == "newer version":
        torch.save({**ours, "version": 99, "training_state": {}}, path)
    elif case == "missing fields":
        torch.save({**ours, "training_state": {"epoch": 1}}, path)
    elif case == "bare state_dict":
        torch.save({"w": torch.zeros(1)}, path)
    elif case == "not torch":
        path.write_text("not a checkpoint")
    elif case == "bad config.json":
        (tmp_path / "model" / "config.json").write_text('{"n_embd": 64,')
    elif case == "config.json list":
        (tmp_path / "model" / "config.json").write_text("[1, 2]")
    elif case == "index without weight_map":
        (tmp_path / "model" / "model.safetensors.index.json").write_text('{"metadata": {}}')
    return path


@pytest.mark.parametrize("case, args, fragment", [
    ("pickle", ["pretrain", "--out", "run", "--resume"], "Python objects other than tensors"),
    ("pickle", ["generate", "--checkpoint", "model.pth"], "Python objects other than tensors"),
    ("newer version", ["pretrain", "--out", "run", "--resume"], "checkpoint version 99, newer than"),
    ("missing fields", ["pretrain", "--out", "run", "--resume"], "lacks global_step, tokens_seen, rng_state"),
    ("bare state_dict", ["pretrain", "--out", "run", "--resume"], "looks like a bare state_dict"),
    ("not torch", ["pretrain", "--out", "run", "--resume"], "is not a checkpoint"),
    ("not torch", ["generate", "--checkpoint", "run/checkpoint.pt"], "is not a PyTorch model file"),
    ("bad config.json", ["generate", "--checkpoint", "model"], "model/config.json is not valid JSON"),
    ("config.json list", ["generate", "--checkpoint", "model"], "model/config.json holds a JSON list"),
    ("index without weight_map", ["generate", "--checkpoint", "model"], 'index.json has no "weight_map"'),
    ("empty folder", ["generate", "--checkpoint", "model"], "holds no model.safetensors"),
])
def test_bad_checkpoints(main, tmp_path, case, args, fragment):
    path = write_checkpoint(tmp_path, case)
    before = files_of(path.parent)
    assert_one_line_error(main(*args), fragment)  # never "weights_only=False"
    assert files_of(path.parent) == before


@pytest.mark.parametrize("args, used, given, drop", [
    (["--lr", "1e-3"], "--lr 0.0004", "--lr 0.001", "--lr"),
    (["--batch-size", "2"], "--batch-size 4", "--batch-size 2", "--batch-size"),
    (["--context-length", "32"], "--context-length 16", "--context-length 32", "--context-length"),
    (["--model", "124M"], "--tiny", "--model 124M", "--model"),
    (["--data", "the-verdict"], "--data ", "--data the-verdict", "--data"),
    (["--seed", "1", "--eval-iter", "2"], "--eval-iter 1 and --seed 123", "--eval-iter 2 and --seed 1",
     "--eval-iter and --seed"),
])
def test_resume_with_different_settings_is_refused(main, trained, args, used, given, drop):
    run = trained / "run"
    before = files_of(run)
    result = main("pretrain", "--out", str(run), "--resume", "--epochs", "99", *args)
    assert_one_line_error(result, f"the run saved in {run} used {used}", f"not {given}: drop {drop} to resume",
                          "or start a new run with another --out")
    assert files_of(run) == before


def test_resume_of_a_checkpoint_without_run_settings(main, trained, tmp_path):
    """A checkpoint of an older command line or of a notebook: the model's settings come from its config."""
    payload = torch.load(trained / "run" / "checkpoint.pt", weights_only=True)
    del payload["training_state"]["run_settings"], payload["training_state"]["config"]["attn_impl"]
    (tmp_path / "old").mkdir()
    torch.save(payload, tmp_path / "old" / "checkpoint.pt")
    before = files_of(tmp_path / "old")
    result = main("pretrain", "--out", "old", "--resume", "--epochs", "99", "--context-length", "32")
    assert_one_line_error(result, "the run saved in old used --context-length 16, not --context-length 32")
    # the saved model is accepted (no config mismatch): what stops this run is the text given, checked next
    assert_one_line_error(main("pretrain", "--out", "old", "--resume", "--epochs", "99", "--data", "short.txt"),
                          "--data short.txt: the training part", "too short")
    assert files_of(tmp_path / "old") == before


def fail_save(monkeypatch, error: BaseException, at_epoch: int) -> None:
    """The save of epoch ``at_epoch`` fails with ``error`` after a few bytes, raised where a real one is: by the
    file's ``write`` inside ``torch.save`` (a full disk; Ctrl+C, whose handler raises KeyboardInterrupt there),
    which torch turns into a RuntimeError, or by the ``fsync`` after it (a full disk noticed late)."""
    save, fsync = torch.save, os.fsync

    class FailingFile:
        def __init__(self, handle):
            self.handle, self.writes = handle, 0

        def write(self, data):
            self.writes += 1
            if self.writes > 2:
                raise error
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

    def failing_save(obj, handle, *args, **kwargs):
        if obj.get("training_state", {}).get("epoch") != at_epoch:
            return save(obj, handle, *args, **kwargs)
        if isinstance(error, OSError) and error.filename == "fsync":
            monkeypatch.setattr(os, "fsync", failing_fsync)
            return save(obj, handle, *args, **kwargs)
        return save(obj, FailingFile(handle), *args, **kwargs)

    def failing_fsync(fd):
        monkeypatch.setattr(os, "fsync", fsync)
        raise error

    monkeypatch.setattr(torch, "save", failing_save)


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),  # while torch.save writes: torch's inline_container error
    OSError(errno.ENOSPC, "No space left on device", "fsync"),  # when the file is flushed to disk
])
def test_full_disk_while_saving(main, tmp_path, monkeypatch, error):
    fail_save(monkeypatch, error, at_epoch=1)
    result = main(*TRAIN, "--out", "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == ["error: no space left on device while saving run/checkpoint.pt: free space or pick "
                      "another --out; no checkpoint was saved"]
    assert list((tmp_path / "run").iterdir()) == []  # no checkpoint, no temp file, no lock


def test_ctrl_c_during_a_save_exits_130(main, tmp_path, monkeypatch):
    fail_save(monkeypatch, KeyboardInterrupt(), at_epoch=2)
    result = main("pretrain", *TINY, "--epochs", "2", "--out", "run")
    assert result.returncode == 130 and result.stderr.endswith("interrupted: the last checkpoint (if any) is intact\n")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["checkpoint.pt"]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["training_state"]["epoch"] == 1


def test_download_failures_exit_2(main, tmp_path):
    result = main("download", "the-verdict", env={"LLMSCRATCH_DATA_MIRROR": str(tmp_path / "no-mirror")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("the-verdict: FAILED: LLMSCRATCH_DATA_MIRROR is")
    assert lines[-1] == "error: 1 of 1 data files could not be fetched: the-verdict"


def test_download_interrupted_exits_130(main, monkeypatch):
    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "get_data", interrupted)
    result = main("download", "the-verdict")
    assert result.returncode == 130 and result.stderr == "interrupted: no partial file was kept\n"


@pytest.mark.parametrize("args, fragment", [
    (["pretrain", "--data", "missing.txt"], "no such file"),
    (["pretrain", "--data", "empty.txt"], "is empty"),
    (["pretrain", "--tiny", "--data", "short.txt"], "too short"),
    (["pretrain", "--model", "999M"], "invalid choice: '999M'"),
    (["pretrain", "--model", "124M", "--tiny"], "not allowed with argument"),
    (["generate", "--checkpoint", "missing.pt"], "no such file"),
    (["generate", "--gpt2", "2B"], "invalid choice"),
    (["download", "the-verdikt"], "unknown data file 'the-verdikt'"),
])
def test_bad_input_is_a_one_line_error(main, tmp_path, args, fragment):
    assert_one_line_error(main(*args), fragment)
    assert not (tmp_path / "runs").exists()


def test_help_lists_commands(main):
    result = main("--help")
    assert result.returncode == 0
    assert all(name in result.stdout for name in ("pretrain", "generate", "download"))
