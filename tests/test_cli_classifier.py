"""The command line's spam classifier (ch06_finetune_classification): ``finetune-classifier`` and ``classify``.

``cli.main([...])`` runs in this process, on the CPU. The training runs use a tiny GPT for one epoch on a small part
of the SMS collection (60 spam and 340 ham messages: 10 training steps), the split and the loaders being the
package's own; the test with the whole collection is marked slow. Bad input: one line, exit code 2, nothing
written.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import tiktoken
import torch
from test_cli import assert_one_line_error, child_env, files_of

from llmscratch import cli, cli_classifier
from llmscratch.checkpoints import save_checkpoint
from llmscratch.classification import calc_accuracy_loader, classify_review
from llmscratch.classification_data import CLASS_NAMES, create_spam_loaders, load_spam_data
from llmscratch.classifier import load_classifier, prepare_classifier, save_classifier
from llmscratch.gpt import GPT_CONFIG_TINY, GPTModel
from llmscratch.settings import get_settings

pytestmark = pytest.mark.usefixtures("one_thread")

OUTPUTS = ["accuracy.png", "classifier.pt", "confusion_matrix.png", "loss.png", "metrics.json"]
TINY_CONFIG = {**GPT_CONFIG_TINY, "drop_rate": 0.0}  # what --tiny builds
SPAM_TEXT = "You are a winner you have been specially selected to receive $1000 cash or a $2000 award."


def small_collection() -> pd.DataFrame:
    """The first 60 spam and 340 ham messages: a balanced split of 84 + 12 + 24 and a natural test set."""
    df = load_spam_data()
    return pd.concat([df[df["Label"] == "spam"].head(60), df[df["Label"] == "ham"].head(340)])


def call_main(monkeypatch, cwd: Path, *args: str, env: dict[str, str] | None = None,
              small: bool = True) -> subprocess.CompletedProcess:
    """``cli.main(args)`` in ``cwd`` with the test environment (CPU, data in cwd/data, LLMSCRATCH_SMOKE unset
    unless ``env`` sets it) and, with ``small``, the small collection; returns exit code, stdout and stderr."""
    monkeypatch.chdir(cwd)
    for name, value in child_env(cwd).items():
        if name.startswith("LLMSCRATCH_"):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLMSCRATCH_SMOKE", raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    if small:
        monkeypatch.setattr(cli_classifier, "load_spam_data", small_collection)
    get_settings.cache_clear()  # read the variables again
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exit:
            code = exit.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def main(tmp_path, monkeypatch, one_thread):
    """``main("classify", ...)``: ``call_main`` in ``tmp_path``."""
    yield lambda *args, **kwargs: call_main(monkeypatch, tmp_path, *args, **kwargs)
    get_settings.cache_clear()  # the next reader sees the restored environment


def finetuned(tmp_path_factory, *args: str, env=None) -> tuple[Path, subprocess.CompletedProcess]:
    """One ``finetune-classifier --epochs 1 --out run`` on the small collection, on one thread; (cwd, result)."""
    cwd = tmp_path_factory.mktemp("classifier")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            result = call_main(monkeypatch, cwd, "finetune-classifier", *args, "--epochs", "1", "--out", "run",
                               env=env)
    finally:
        torch.set_num_threads(threads)
        get_settings.cache_clear()
    assert result.returncode == 0, result.stderr
    return cwd, result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return finetuned(tmp_path_factory, "--tiny")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """LoRA on the tiny GPT, which LLMSCRATCH_SMOKE=1 picks when no model is given."""
    return finetuned(tmp_path_factory, "--lora-rank", "2", "--lora-alpha", "4", env={"LLMSCRATCH_SMOKE": "1"})


def fresh_tiny_model() -> GPTModel:
    torch.manual_seed(123)  # --seed's default: the weights the run started from
    return GPTModel(TINY_CONFIG)


def test_finetune_writes_classifier_metrics_and_plots(tiny_run):
    cwd, result = tiny_run
    run = cwd / "run"
    assert sorted(p.name for p in run.iterdir()) == OUTPUTS  # no lock, no temporary file
    assert all((run / name).stat().st_size > 1000 for name in OUTPUTS if name.endswith(".png"))
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert {key: metrics[key] for key in ("base", "epochs", "trainable_layers", "lora", "lr", "batch_size",
                                          "seed")} == {
        "base": "tiny from scratch", "epochs": 1, "trainable_layers": "all", "lora": None, "lr": 1e-3,
        "batch_size": 8, "seed": 123}
    # every parameter of the tiny GPT: embeddings 50,257 x 64 + 256 x 64, two blocks of 49,792, norm 128, head 130
    assert metrics["trainable_parameters"] == 3_332_674
    natural = metrics["natural_test"]
    assert set(natural) == {"accuracy", "precision", "recall", "f1", "confusion_matrix", "num_examples"}
    matrix = torch.tensor(natural["confusion_matrix"])
    assert matrix.shape == (2, 2) and matrix.sum() == natural["num_examples"]
    assert 0.10 < float(matrix[1].sum()) / natural["num_examples"] < 0.17  # the natural share of spam, 13.4%
    for name, line in (("train", "Training"), ("val", "Validation"), ("test", "Test")):
        assert 0.0 <= metrics[f"{name}_accuracy"] <= 1.0
        assert f"{line} accuracy: {metrics[f'{name}_accuracy'] * 100:.2f}%\n" in result.stdout
    assert "Ep 1 (Step 000000): Train loss " in result.stderr  # the book's progress line, on stderr
    assert "Ep 1 (Step" not in result.stdout and "spam precision" in result.stdout


def test_saved_classifier_is_the_evaluated_one(tiny_run, tokenizer):
    """The file gives the test accuracy of metrics.json, and its embeddings were trained (all layers)."""
    cwd, _ = tiny_run
    model, info = load_classifier(cwd / "run" / "classifier.pt")
    assert info["config"] == TINY_CONFIG and info["num_classes"] == 2 and info["max_length"] > 0
    _, test_loader = create_spam_loaders([cwd / "data" / "sms_spam" / name for name in ("train.csv", "test.csv")],
                                         tokenizer)
    metrics = json.loads((cwd / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert calc_accuracy_loader(test_loader, model, "cpu") == metrics["test_accuracy"]
    assert not torch.equal(model.tok_emb.weight, fresh_tiny_model().tok_emb.weight)


def test_classify_prints_the_models_answer(main, tiny_run):
    cwd, _ = tiny_run
    checkpoint = cwd / "run" / "classifier.pt"
    model, info = load_classifier(checkpoint)
    for text in (SPAM_TEXT, "Hey, just wanted to check if we're still on for dinner tonight? Let me know!"):
        result = main("classify", "--checkpoint", str(checkpoint), text)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        expected = classify_review(text, model, tiktoken.get_encoding("gpt2"), "cpu", max_length=info["max_length"])
        assert expected in CLASS_NAMES and result.stdout == expected + "\n"


def test_lora_trains_only_the_adapters(lora_run):
    cwd, result = lora_run
    run = cwd / "run"
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["base"] == "tiny from scratch"  # LLMSCRATCH_SMOKE=1 without a model option
    assert metrics["lora"] == {"rank": 2, "alpha": 4.0, "scaling": "book"} and metrics["trainable_layers"] is None
    # rank x (in + out) per linear layer: per block 4 x (64 + 64) in attention and (64 + 256) + (256 + 64) in the
    # feed forward, two blocks, plus the head's (64 + 2); the head's own weights stay frozen, as in appendix E
    assert metrics["trainable_parameters"] == 2 * (2 * (4 * 128 + 2 * 320) + 66) == 4_740
    assert "LoRA rank 2, alpha 4, book scaling: 4,740 trainable parameters" in result.stderr
    model, _ = load_classifier(run / "classifier.pt")  # merged: a plain GPTModel
    fresh = fresh_tiny_model()
    assert torch.equal(model.tok_emb.weight, fresh.tok_emb.weight)  # frozen
    assert torch.equal(model.trf_blocks[0].norm1.scale, fresh.trf_blocks[0].norm1.scale)
    assert not torch.equal(model.trf_blocks[0].att.W_query.weight, fresh.trf_blocks[0].att.W_query.weight)


def test_classify_a_lora_classifier(main, lora_run):
    checkpoint = lora_run[0] / "run" / "classifier.pt"
    model, info = load_classifier(checkpoint)
    result = main("classify", "--checkpoint", str(checkpoint), SPAM_TEXT)
    assert result.returncode == 0, result.stderr
    expected = classify_review(SPAM_TEXT, model, tiktoken.get_encoding("gpt2"), "cpu", max_length=info["max_length"])
    assert result.stdout == expected + "\n"  # the merged model's own answer


def test_gpt2_base_trains_the_last_block_at_the_books_rate(main, tmp_path, monkeypatch):
    """The GPT-2 branch (the default) with a stand-in for the download: the tiny GPT as the "pretrained" model."""
    loads = []

    def load_stand_in(size, config):
        loads.append((size, config))
        return fresh_tiny_model()

    monkeypatch.setattr(cli_classifier, "pretrained_gpt2_config", lambda size: TINY_CONFIG)
    monkeypatch.setattr(cli_classifier, "load_pretrained_gpt2", load_stand_in)
    result = main("finetune-classifier", "--epochs", "1", "--out", "run")
    assert result.returncode == 0, result.stderr
    assert loads == [("124M", TINY_CONFIG)]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["base"], metrics["trainable_layers"], metrics["lr"]) == ("gpt2-124M", "last_block", 5e-5)
    assert metrics["trainable_parameters"] == 49_792 + 128 + 130  # last block, final norm, new head
    model, _ = load_classifier(tmp_path / "run" / "classifier.pt")
    fresh = fresh_tiny_model()
    assert torch.equal(model.tok_emb.weight, fresh.tok_emb.weight)
    assert torch.equal(model.trf_blocks[0].ff.layers[0].weight, fresh.trf_blocks[0].ff.layers[0].weight)
    assert not torch.equal(model.trf_blocks[-1].ff.layers[0].weight, fresh.trf_blocks[-1].ff.layers[0].weight)


@pytest.mark.slow
def test_whole_collection_one_epoch(main, tmp_path):
    """The real split (1,045 training texts, 130 steps) and the 850-message natural test set: one epoch of the
    tiny GPT from scratch already classifies most messages."""
    result = main("finetune-classifier", "--tiny", "--epochs", "1", "--out", "run", small=False)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["natural_test"]["num_examples"] == 850
    assert metrics["test_accuracy"] > 0.75 and metrics["natural_test"]["recall"] > 0.5, metrics


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--epochs", "1.5"], "invalid int value: '1.5'"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--lr", "0"], "--lr must be a finite number > 0 (a learning rate of 0 trains nothing), got 0.0"),
    (["--lr=-1e-3"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lora-rank", "0"], "--lora-rank must be at least 1, got 0"),
    (["--lora-rank", "8", "--lora-alpha", "0"], "--lora-alpha must be a finite number > 0, got 0.0"),
    (["--lora-rank", "8", "--lora-alpha", "-16"], "--lora-alpha must be a finite number > 0"),
    (["--lora-alpha", "16"], "--lora-alpha needs --lora-rank"),
    (["--lora-rank", "8", "--trainable-layers", "all"], "--lora-rank cannot go with --trainable-layers all"),
    (["--lora-rank", "8", "--trainable-layers", "last_block"], "LoRA freezes every weight"),
    (["--trainable-layers", "half"], "invalid choice: 'half'"),
    (["--seed", str(2**64)], "--seed must be between"),
    (["--gpt2", "2B"], "invalid choice: '2B'"),
    (["--gpt2", "124M", "--from-scratch"], "argument --from-scratch: not allowed with argument --gpt2"),
    (["--from-scratch", "--gpt2", "355M"], "argument --gpt2: not allowed with argument --from-scratch"),
    (["--gpt2", "124M", "--tiny"], "not allowed with argument --gpt2"),
    (["--device", "tpu"], "device='tpu' is not a device the course runs on"),
])
def test_bad_finetune_arguments(main, tmp_path, args, fragment):
    assert_one_line_error(main("finetune-classifier", "--out", "run", *args), fragment)
    assert list(tmp_path.iterdir()) == []  # checked before anything is read or written


def test_batch_larger_than_the_training_set(main, tmp_path):
    assert_one_line_error(main("finetune-classifier", "--tiny", "--batch-size", "85", "--out", "run"),
                          "--batch-size 85: the training set has 84 texts, fewer than one batch of 85")
    assert not (tmp_path / "run").exists()


def test_finished_classifier_is_not_overwritten(main, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "classifier.pt").write_bytes(b"a classifier trained for hours")
    before = files_of(tmp_path / "run")
    assert_one_line_error(main("finetune-classifier", "--tiny", "--out", "run"),
                          "run/classifier.pt exists: move it away or pick another --out")
    assert files_of(tmp_path / "run") == before and not (tmp_path / "data").exists()


def test_out_is_a_file(main, tmp_path):
    (tmp_path / "run").write_text("not a folder")
    assert_one_line_error(main("finetune-classifier", "--tiny", "--out", "run"), "--out run is a file, not a folder")


def test_gpt2_not_downloadable(main, tmp_path, monkeypatch):
    """The package's GPT2DownloadError, for real: offline, with an empty Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    result = main("finetune-classifier", "--gpt2", "124M", "--out", "run", env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(result, "error: GPT-2 124M (openai-community/gpt2/config.json) is not in the cache",
                          "offline mode is on")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_training_exits_130_and_unlocks(main, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_classifier, "train_classifier_resumable", interrupted)
    result = main("finetune-classifier", "--tiny", "--out", "run")
    assert result.returncode == 130 and result.stderr.endswith("interrupted: no model was saved\n")
    assert list((tmp_path / "run").iterdir()) == []  # no classifier, no lock left


def write_other_files(tmp_path: Path) -> None:
    """A pretraining checkpoint, a three-class classifier, a file that is no checkpoint, a folder."""
    torch.manual_seed(0)
    model = GPTModel(TINY_CONFIG)
    save_checkpoint(tmp_path / "checkpoint.pt", model, None, epoch=1, global_step=5, config=TINY_CONFIG)
    save_classifier(tmp_path / "three.pt", prepare_classifier(model, num_classes=3), TINY_CONFIG, max_length=8)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    (tmp_path / "folder.pt").mkdir()


@pytest.mark.parametrize("args, fragment", [
    (["--checkpoint", "missing.pt", "Hello"], "--checkpoint missing.pt: no such file"),
    (["--checkpoint", "folder.pt", "Hello"], "--checkpoint folder.pt: is a folder, not a file"),
    (["--checkpoint", "checkpoint.pt", "Hello"], "checkpoint.pt is a checkpoint but not a classifier saved by "
                                                 "save_classifier (kind None)"),
    (["--checkpoint", "notes.pt", "Hello"], "notes.pt is not a checkpoint"),
    (["--checkpoint", "three.pt", "Hello"], "three.pt is a classifier of 3 classes, not a spam classifier"),
    (["--checkpoint", "missing.pt", ""], "the text to classify is empty"),  # checked first
    (["--checkpoint", "three.pt", "  \n"], "the text to classify is empty"),
    (["Hello"], "the following arguments are required: --checkpoint"),
    (["--checkpoint", "three.pt"], "the following arguments are required: TEXT"),
])
def test_bad_classify_input(main, tmp_path, args, fragment):
    write_other_files(tmp_path)
    before = files_of(tmp_path)
    assert_one_line_error(main("classify", *args), fragment)
    assert files_of(tmp_path) == before


def test_help_lists_the_classifier_commands(main):
    result = main("--help")
    assert result.returncode == 0 and "finetune-classifier" in result.stdout and "classify" in result.stdout
