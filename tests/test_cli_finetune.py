"""What both finetune commands share (issue 20): folders of another command refused, ``--resume`` after an
interruption (real SIGINT in a fresh process), temporary files of a killed save, bounds, a diverging loss.

The interrupted runs are fresh processes (``python -c DRIVER POINT ARGS...``) on the tiny GPT and small data: the
driver sends the process a real SIGINT at a given point (right after a function returns), as a Ctrl+C that
lands there would. The other tests call ``cli.main`` in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cli import assert_one_line_error, child_env, files_of, restore_sigint
from test_cli_classifier import OUTPUTS as CLASSIFIER_OUTPUTS
from test_cli_classifier import call_main
from test_cli_instructions import OUTPUTS as INSTRUCTION_OUTPUTS
from test_cli_instructions import synthetic_entries

from llmscratch.classifier import load_classifier
from llmscratch.instruction_run import load_instruction_model
from llmscratch.settings import get_settings

pytestmark = pytest.mark.usefixtures("one_thread")

# SIGINT to itself right after POINT (module.function) returns, then cli.main(ARGS); the small spam collection
DRIVER = """
import os, signal, sys
import pandas as pd
from llmscratch import cli, cli_classifier, cli_instruction_finetune, resumable
df = cli_classifier.load_spam_data()
small = pd.concat([df[df["Label"] == "spam"].head(60), df[df["Label"] == "ham"].head(340)])
cli_classifier.load_spam_data = lambda: small
point = sys.argv[1]
if point != "none":
    owner, name = point.split(".")
    module = {"cli_classifier": cli_classifier, "cli_instruction_finetune": cli_instruction_finetune,
              "ResumableRun": resumable.ResumableRun}[owner]
    original = getattr(module, name)
    def interrupted(*args, **kwargs):
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return result
    setattr(module, name, interrupted)
sys.exit(cli.main(sys.argv[2:]))
"""
CLASSIFIER = ["finetune-classifier", "--tiny", "--epochs", "2", "--out", "run"]
INSTRUCTIONS = ["finetune-instructions", "--tiny", "--data", "mine.json", "--batch-size", "4", "--epochs", "2",
                "--max-new-tokens", "3", "--out", "run"]


def run_driver(cwd: Path, point: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", DRIVER, point, *args], capture_output=True, text=True,
                          env=child_env(cwd), cwd=cwd, timeout=300, preexec_fn=restore_sigint)


@pytest.fixture
def main(tmp_path, monkeypatch, one_thread):
    (tmp_path / "mine.json").write_text(json.dumps(synthetic_entries(12)), encoding="utf-8")
    yield lambda *args, **kwargs: call_main(monkeypatch, tmp_path, *args, **kwargs)
    get_settings.cache_clear()


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- bug 6: a folder holding another command's run --------------------------------------------------------------


@pytest.mark.parametrize("command, other_files, other", [
    (["finetune-classifier", "--tiny"], ["instruction_model.pt", "loss.png"], "finetune-instructions"),
    (["finetune-instructions", "--tiny", "--data", "mine.json"], ["classifier.pt", "loss.png"], "finetune-classifier"),
    (["finetune-classifier", "--tiny"], ["checkpoint.pt", "losses.png"], "pretrain"),
    (["pretrain", "--tiny"], ["metrics.json", "loss.png"], "finetune-classifier"),
])
def test_a_folder_of_another_command_is_refused(main, tmp_path, command, other_files, other):
    """Both finetune commands write loss.png: one used to overwrite the other's plot without a word."""
    (tmp_path / "run").mkdir()
    for name in other_files:
        (tmp_path / "run" / name).write_bytes(b"another command's file")
    before = files_of(tmp_path / "run")
    assert_one_line_error(main(*command, "--out", "run"), f"--out run holds a run of {other}", "pick another --out")
    assert files_of(tmp_path / "run") == before


# --- bug 7: interrupted runs can be finished --------------------------------------------------------------------


@pytest.mark.slow
def test_classifier_interrupted_after_saving_is_finished_by_resume(tmp_path):
    """SIGINT right after classifier.pt is written: the message says it is saved, --resume writes the rest."""
    result = run_driver(tmp_path, "cli_classifier.save_classifier", *CLASSIFIER)
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines()[-1] == ("interrupted: run/classifier.pt is saved, metrics.json, loss.png, "
                                              "accuracy.png, confusion_matrix.png not: run the same command with "
                                              "--resume to write them")
    saved = (tmp_path / "run" / "classifier.pt").stat().st_mtime_ns
    again = run_driver(tmp_path, "none", *CLASSIFIER, "--resume")
    assert again.returncode == 0, again.stderr
    assert "resuming run: the model is saved, writing the missing outputs" in again.stderr
    assert names(tmp_path / "run") == CLASSIFIER_OUTPUTS  # the checkpoint is gone once everything is written
    assert (tmp_path / "run" / "classifier.pt").stat().st_mtime_ns == saved  # not trained again
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["epochs"] == 2 and metrics["train_seconds"] is None
    complete = run_driver(tmp_path, "none", *CLASSIFIER, "--resume")
    assert complete.returncode == 0 and "the run in run is complete" in complete.stderr


@pytest.mark.slow
def test_classifier_interrupted_after_an_epoch_resumes_its_training(tmp_path):
    """finetune-classifier saves a checkpoint after every epoch; --resume continues from it and gives the
    uninterrupted run's classifier."""
    result = run_driver(tmp_path, "ResumableRun.save", *CLASSIFIER)
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines()[-1] == ("interrupted: run/classifier_checkpoint.pt holds the last finished "
                                              "epoch: run the same command with --resume to go on")
    refused = run_driver(tmp_path, "none", *CLASSIFIER)
    assert_one_line_error(refused, "run holds an unfinished run (run/classifier_checkpoint.pt): add --resume")
    again = run_driver(tmp_path, "none", *CLASSIFIER, "--resume")
    assert again.returncode == 0, again.stderr
    assert "resuming run from epoch 1 to 2" in again.stderr and names(tmp_path / "run") == CLASSIFIER_OUTPUTS
    (tmp_path / "whole").mkdir()
    whole = run_driver(tmp_path / "whole", "none", *CLASSIFIER)
    assert whole.returncode == 0, whole.stderr
    resumed, _ = load_classifier(tmp_path / "run" / "classifier.pt")
    uninterrupted, _ = load_classifier(tmp_path / "whole" / "run" / "classifier.pt")
    for (name, a), (_, b) in zip(resumed.state_dict().items(), uninterrupted.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_instructions_interrupted_during_the_responses_are_finished_by_resume(tmp_path):
    """SIGINT while the test responses are generated: --resume writes them from the saved model."""
    (tmp_path / "mine.json").write_text(json.dumps(synthetic_entries(12)), encoding="utf-8")
    result = run_driver(tmp_path, "cli_instruction_finetune.instruction_responses", *INSTRUCTIONS)
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "interrupted: run/instruction_model.pt is saved, instruction-data-with-response.json not: run the same "
        "command with --resume to write them")
    refused = run_driver(tmp_path, "none", *INSTRUCTIONS)
    assert_one_line_error(refused, "run holds an unfinished run (run/instruction_checkpoint.pt): add --resume")
    again = run_driver(tmp_path, "none", *INSTRUCTIONS, "--resume")
    assert again.returncode == 0, again.stderr
    assert names(tmp_path / "run") == INSTRUCTION_OUTPUTS
    model, info = load_instruction_model(tmp_path / "run" / "instruction_model.pt")
    responses = json.loads((tmp_path / "run" / "instruction-data-with-response.json").read_text(encoding="utf-8"))
    assert info["epochs"] == 2 and [entry["output"] for entry in responses] == ["10"]


@pytest.mark.slow
def test_instructions_interrupted_after_an_epoch_resume_their_training(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps(synthetic_entries(12)), encoding="utf-8")
    result = run_driver(tmp_path, "ResumableRun.save", *INSTRUCTIONS)
    assert result.returncode == 130 and "instruction_checkpoint.pt holds the last finished epoch" in result.stderr
    changed = run_driver(tmp_path, "none", *INSTRUCTIONS, "--resume", "--lr", "0.01")
    assert_one_line_error(changed, "the run saved in run used --lr 0.001, not --lr 0.01: drop --lr")
    again = run_driver(tmp_path, "none", *INSTRUCTIONS, "--resume")
    assert again.returncode == 0, again.stderr
    assert "resuming run from epoch 1 to 2" in again.stderr and names(tmp_path / "run") == INSTRUCTION_OUTPUTS


def test_resume_without_a_run_is_refused(main, tmp_path):
    assert_one_line_error(main("finetune-classifier", "--tiny", "--out", "run", "--resume"),
                          "--resume: run holds no run to go on with")
    assert not (tmp_path / "run").exists()


# --- bug 8: temporary files of a save killed a moment ago ------------------------------------------------------


@pytest.mark.parametrize("command, temp", [
    (["finetune-classifier", "--tiny", "--batch-size", "85"], ".classifier.pt.abcd1234.tmp"),
    (["finetune-instructions", "--tiny", "--data", "mine.json", "--batch-size", "20"], ".loss.png.abcd1234.tmp"),
])
def test_fresh_temp_file_of_a_killed_save_is_removed(main, tmp_path, command, temp):
    """SIGKILL during a save leaves a hidden temporary file; a rerun a second later holds the lock, so the file
    can only be a dead run's: removed, whatever its age (the run itself then stops on its batch size)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / temp).write_bytes(b"half a file")
    result = main(*command, "--out", "run")
    assert result.returncode == 2 and f"removed {Path('run', temp)}, left by a run that was killed" in result.stderr
    assert names(tmp_path / "run") == []


# --- weak spots: bounds, a diverging loss, the output folder first -----------------------------------------------


@pytest.mark.parametrize("command", ["finetune-classifier", "finetune-instructions"])
@pytest.mark.parametrize("args, fragment", [
    (["--lora-rank", "65"], "--lora-rank must be at most the model's width (64), got 65"),
    (["--lora-rank", "99999999999"], "--lora-rank must be at most the model's width (64)"),
    (["--lora-rank", "2", "--lora-alpha", "1e308"], "--lora-alpha must be at most 10000, got 1e+308"),
    (["--lr", "1e308"], "--lr must be at most 1, got 1e+308"),
    (["--epochs", "100000000000000000000"], "--epochs must be at most 10000"),
    (["--lora-scaling", "rank"], "--lora-scaling needs --lora-rank"),
    (["--lora-rank", "2", "--lora-scaling", "paper"], "invalid choice: 'paper'"),
])
def test_bounds(main, tmp_path, command, args, fragment):
    assert_one_line_error(main(command, "--tiny", "--out", "run", *args), fragment)
    assert not (tmp_path / "run").exists()


def test_max_new_tokens_bound(main):
    assert_one_line_error(main("finetune-instructions", "--tiny", "--max-new-tokens", "99999999999"),
                          "--max-new-tokens must be at most 100000")


def test_a_diverging_loss_stops_at_its_first_step(main, tmp_path, monkeypatch):
    from llmscratch import cli_classifier

    def poisoned(model, *args, **kwargs):  # an infinite head: the loss of the first step is NaN
        result = prepare(model, *args, **kwargs)
        torch.nn.init.constant_(model.out_head.weight, float("inf"))
        return result

    prepare = cli_classifier.prepare_classifier
    monkeypatch.setattr(cli_classifier, "prepare_classifier", poisoned)
    result = main("finetune-classifier", "--tiny", "--out", "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].split("\r")[-1].strip() == (
        "error: training diverged at step 0: the loss is not a finite number (NaN or infinity); lower --lr (or "
        "--lora-alpha) and run again")  # after the progress lines
    assert names(tmp_path / "run") == []


@pytest.mark.parametrize("command", [["finetune-classifier", "--tiny"],
                                     ["finetune-instructions", "--tiny", "--data", "mine.json"]])
def test_read_only_out_is_reported_before_any_work(main, tmp_path, monkeypatch, command):
    """Root writes into read-only folders, so the refusal of the file system is simulated."""
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    (tmp_path / "run").mkdir()
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert_one_line_error(main(*command, "--out", "run"), "cannot write in run (Permission denied)")
    assert not (tmp_path / "data").exists()  # before the data (and the model) are built


def test_data_folder_that_is_a_file(main, tmp_path):
    (tmp_path / "datafile").write_text("not a folder")
    result = main("finetune-classifier", "--tiny", "--out", "run",
                  env={"LLMSCRATCH_DATA_DIR": str(tmp_path / "datafile")})
    assert_one_line_error(result, "datafile is a file, not a folder (set LLMSCRATCH_DATA_DIR to a folder)")
    assert "Errno" not in result.stderr


def test_lora_scaling_rank_is_saved(main, tmp_path):
    result = main("finetune-classifier", "--tiny", "--epochs", "1", "--lora-rank", "2", "--lora-alpha", "4",
                  "--lora-scaling", "rank", "--out", "run")
    assert result.returncode == 0, result.stderr
    assert "LoRA rank 2, alpha 4, rank scaling" in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["lora"] == {"rank": 2, "alpha": 4.0, "scaling": "rank"}


def test_help_names_resume_and_lora_scaling(main):
    for command in ("finetune-classifier", "finetune-instructions"):
        text = " ".join(main(command, "--help").stdout.split())
        assert "--resume" in text and "commit 'Add LoRA scaling'" in text and "printed book" in text



# --- bug 5: <|endoftext|> in a text ----------------------------------------------------------------------------


def test_classify_a_text_holding_endoftext(main, tmp_path):
    from llmscratch.classification import classify_review
    from llmscratch.classifier import prepare_classifier, save_classifier
    from llmscratch.gpt import GPTModel
    from llmscratch.gpt2_tokenizer import gpt2_tokenizer
    from test_cli_classifier import TINY_CONFIG

    torch.manual_seed(1)
    model = prepare_classifier(GPTModel(TINY_CONFIG)).eval()
    save_classifier(tmp_path / "classifier.pt", model, TINY_CONFIG, max_length=12)
    text = "Claim your prize <|endoftext|> now"
    result = main("classify", "--checkpoint", "classifier.pt", text)
    assert result.returncode == 0, result.stderr
    assert result.stdout == classify_review(text, model, gpt2_tokenizer(), "cpu", max_length=12) + "\n"


def test_finetune_instructions_on_entries_holding_endoftext(main, tmp_path):
    entries = synthetic_entries(12)
    entries[0]["output"] = "0 <|endoftext|>"
    (tmp_path / "mine.json").write_text(json.dumps(entries), encoding="utf-8")
    result = main("finetune-instructions", "--tiny", "--data", "mine.json", "--batch-size", "4", "--epochs", "1",
                  "--max-new-tokens", "2", "--out", "run")
    assert result.returncode == 0, result.stderr
    assert names(tmp_path / "run") == INSTRUCTION_OUTPUTS


# --- misleading messages ----------------------------------------------------------------------------------------


def test_messages_name_what_a_file_is(main, tmp_path):
    from llmscratch.classifier import prepare_classifier, save_classifier
    from llmscratch.gpt import GPTModel
    from llmscratch.instruction_run import TINY_INSTRUCTION_CONFIG, save_instruction_model
    from test_cli_classifier import TINY_CONFIG

    torch.manual_seed(1)
    save_instruction_model(tmp_path / "instruction_model.pt", GPTModel(TINY_INSTRUCTION_CONFIG),
                           TINY_INSTRUCTION_CONFIG, base="tiny from scratch")
    save_classifier(tmp_path / "classifier.pt", prepare_classifier(GPTModel(TINY_CONFIG)), TINY_CONFIG, max_length=8)
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 4)
    assert_one_line_error(main("classify", "--checkpoint", "instruction_model.pt", "Hello"),
                          "it is an instruction model of finetune-instructions (use chat")
    assert_one_line_error(main("chat", "--checkpoint", "classifier.pt"),
                          "it is a spam classifier of finetune-classifier (use classify")
    assert_one_line_error(main("generate", "--checkpoint", "classifier.pt", "--prompt", "Hi"),
                          "--checkpoint classifier.pt is a spam classifier of finetune-classifier")
    result = main("classify", "--checkpoint", "random.pt", "Hello")
    assert_one_line_error(result, "random.pt is not a checkpoint", "not a file of torch.save")
    assert "Python objects" not in result.stderr
    for command in (["pretrain", "--tiny"], ["finetune-instructions", "--tiny"]):
        assert_one_line_error(main(*command, "--data", "", "--out", "run"), "--data is empty")
