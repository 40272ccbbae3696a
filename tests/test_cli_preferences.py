"""The command line's preference tuning (the book's DPO notebook): ``finetune-preferences``.

``cli.main([...])`` runs in this process, on the CPU, on one thread, from a very small instruction model (GPT-2's
vocabulary, 8 dimensions, one block) saved as ``finetune-instructions`` saves its models. Bad input: one line, exit
code 2, nothing written.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import assert_one_line_error
from test_cli_classifier import call_main

from llmscratch.checkpoints import save_checkpoint
from llmscratch.gpt import GPTModel
from llmscratch.instruction_run import load_instruction_model, save_instruction_model
from llmscratch.settings import get_settings

SMALL = {"vocab_size": 50257, "context_length": 256, "emb_dim": 8, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
         "qkv_bias": False}
QUICK = ["--checkpoint", "start.pt", "--limit", "20", "--batch-size", "4", "--max-new-tokens", "3", "--out", "run"]
OUTPUTS = ["dpo_curves.png", "preference-data-with-response.json", "preference_model.pt"]


@pytest.fixture
def main(tmp_path, monkeypatch, one_thread):
    """``main("finetune-preferences", ...)`` in ``tmp_path``, which holds start.pt, a small instruction model."""
    torch.manual_seed(123)
    save_instruction_model(tmp_path / "start.pt", GPTModel(SMALL), SMALL, base="tiny from scratch", epochs=1)
    yield lambda *args, **kwargs: call_main(monkeypatch, tmp_path, *args, small=False, **kwargs)
    get_settings.cache_clear()


@pytest.mark.slow  # an end-to-end run: 30 to 60 s on the shared 2-core CPU
def test_a_small_run_writes_the_policy_and_the_responses(main, tmp_path):
    result = main("finetune-preferences", *QUICK)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == OUTPUTS
    assert "Ep 1 (Step 000000): Train loss 0.693, Val loss 0.693" in result.stderr  # policy == reference at first
    assert "final train loss" in result.stdout and "reward margins" in result.stdout
    entries = json.loads((tmp_path / "run" / "preference-data-with-response.json").read_text(encoding="utf-8"))
    assert len(entries) == 2 and all({"chosen", "rejected", "reference_response", "policy_response"} <= set(e)
                                     for e in entries)
    policy, info = load_instruction_model(tmp_path / "run" / "preference_model.pt")
    tuning = info["preference_tuning"]
    assert (tuning["method"], tuning["beta"], tuning["lr"], tuning["epochs"]) == ("dpo", 0.1, 1e-4, 1)
    assert tuning["entries"] == {"train": 17, "val": 1, "test": 2} and info["instruction_tuning"]["epochs"] == 1
    assert not info["gpt2_weights"] and "NOT GPT-2" in info["description"]
    start, _ = load_instruction_model(tmp_path / "start.pt")
    assert any(not torch.equal(a, b) for a, b in zip(policy.state_dict().values(), start.state_dict().values()))
    again = main("finetune-preferences", *QUICK)  # the folder holds a finished run: refused, nothing touched
    assert_one_line_error(again, "preference_model.pt exists")


@pytest.mark.parametrize("args, fragment", [
    (["--beta", "0"], "--beta must be a finite number > 0"),
    (["--beta", "nan"], "--beta must be a finite number"),
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--limit", "5"], "use a larger --limit"),
])
def test_bad_numbers_are_one_line_and_write_nothing(main, tmp_path, args, fragment):
    result = main("finetune-preferences", *QUICK, *args)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_a_start_model_of_another_kind_is_refused(main, tmp_path):
    missing = main("finetune-preferences", "--checkpoint", "nothing.pt", "--out", "run")
    assert_one_line_error(missing, "--checkpoint nothing.pt: no such file")
    model = GPTModel(SMALL)
    save_checkpoint(tmp_path / "classifier.pt", model, kind="classifier", config=SMALL)
    classifier = main("finetune-preferences", "--checkpoint", "classifier.pt", "--out", "run")
    assert_one_line_error(classifier, "a spam classifier", "not an instruction model")
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    bare = main("finetune-preferences", "--checkpoint", "bare.pth", "--out", "run")
    assert_one_line_error(bare, "--checkpoint bare.pth")
    save_instruction_model(tmp_path / "phi.pt", model, SMALL, base="tiny from scratch", prompt_style="phi3")
    phi = main("finetune-preferences", "--checkpoint", "phi.pt", "--out", "run")
    assert_one_line_error(phi, "Alpaca prompt")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # two end-to-end runs
def test_an_interrupted_run_goes_on_with_resume(main, tmp_path, monkeypatch):
    from llmscratch import cli_preferences

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # Ctrl+C while the responses are generated: the policy is saved
        patch.setattr(cli_preferences, "instruction_responses", interrupt)
        stopped = main("finetune-preferences", *QUICK)
    assert stopped.returncode == 130 and "preference_model.pt is saved" in stopped.stderr, stopped.stderr
    assert "--resume" in stopped.stderr and (tmp_path / "run" / "preference_checkpoint.pt").is_file()
    refused = main("finetune-preferences", *QUICK)  # without --resume the folder is refused
    assert_one_line_error(refused, "holds an unfinished run", "add --resume")
    resumed = main("finetune-preferences", *QUICK, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "the model is saved, writing the missing outputs" in resumed.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == OUTPUTS
    done = main("finetune-preferences", *QUICK, "--resume")
    assert done.returncode == 0 and "is complete" in done.stderr
