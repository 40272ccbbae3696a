"""Issue 20, the command line's inputs: a plain GPTModel state dict for ``generate``, UTF-8 files with a byte order
mark, the command line's advice (its flags, not the Python API's keywords), and the bounds and the divergence guard
of every command that has them. Each test failed on the package before the fix.
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from test_cli import assert_one_line_error
from test_cli_classifier import call_main
from test_cli_instructions import synthetic_entries

import llmscratch
from llmscratch import GPT_CONFIG_TINY, GPTModel
from llmscratch.cli_checks import FLAG_ADVICE, flag_advice
from llmscratch.settings import get_settings

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {**GPT_CONFIG_TINY, "context_length": 32}  # the course's tiny GPT: known heads
ODD = {**TINY, "emb_dim": 48, "n_heads": 6}  # a width no known config has: the heads must be given
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def main(tmp_path, monkeypatch):
    yield lambda *args, **kwargs: call_main(monkeypatch, tmp_path, *args, **kwargs)
    get_settings.cache_clear()


def state_dict_file(folder, cfg, name):
    torch.manual_seed(123)
    model = GPTModel(cfg).eval()
    torch.save(model.state_dict(), folder / name)
    return model


def greedy_text(model, prompt="Every effort moves you", n=4):
    from llmscratch import generate, text_to_token_ids, token_ids_to_text
    from llmscratch.gpt2_tokenizer import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    ids = generate(model, text_to_token_ids(prompt, tokenizer), n, model.pos_emb.num_embeddings)
    return token_ids_to_text(ids, tokenizer)


# --- item 3: generate takes a plain state dict of the package's GPT ---------------------------------------------


def test_generate_reads_a_plain_state_dict_of_the_tiny_gpt(main, tmp_path):
    model = state_dict_file(tmp_path, TINY, "tiny.pth")
    result = main("generate", "--checkpoint", "tiny.pth", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == greedy_text(model)


def test_generate_asks_for_the_heads_of_an_unknown_width_by_its_flag(main, tmp_path):
    model = state_dict_file(tmp_path, ODD, "odd.pth")
    assert_one_line_error(main("generate", "--checkpoint", "odd.pth", "--max-new-tokens", "4"),
                          "the tensors do not show the number of attention heads", "pass --n-heads N")
    assert "n_heads=" not in main("generate", "--checkpoint", "odd.pth").stderr
    result = main("generate", "--checkpoint", "odd.pth", "--n-heads", "6", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == greedy_text(model)
    assert_one_line_error(main("generate", "--checkpoint", "odd.pth", "--n-heads", "0"),
                          "--n-heads must be at least 1, got 0")
    assert_one_line_error(main("generate", "--gpt2", "124M", "--n-heads", "12"), "--n-heads is for a --checkpoint")


def test_the_python_api_keeps_its_advice_and_takes_n_heads(tmp_path):
    state_dict_file(tmp_path, ODD, "odd.pth")
    with pytest.raises(ValueError, match=r"pass n_heads=N \(a divisor of emb_dim\), or cfg=\.\.\."):
        llmscratch.load_pretrained_gpt2(tmp_path / "odd.pth")
    assert llmscratch.load_pretrained_gpt2(tmp_path / "odd.pth", n_heads=6).trf_blocks[0].att.num_heads == 6
    with pytest.raises(ValueError, match="n_heads=3, but the config of .* has n_heads=4"):
        llmscratch.load_pretrained_gpt2(tmp_path / "odd.pth", {**TINY, "emb_dim": 48}, n_heads=3)


# --- item 3: a UTF-8 file with a byte order mark ----------------------------------------------------------------


def test_pretrain_reads_a_text_with_a_byte_order_mark(tmp_path, monkeypatch):
    from llmscratch import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bom.txt").write_bytes(BOM + "Olá, mundo.".encode("utf-8"))
    text, label = cli._read_text("bom.txt")
    assert text == "Olá, mundo." and label == "bom.txt"


def test_finetune_instructions_reads_json_with_a_byte_order_mark(tmp_path):
    from llmscratch.cli_instruction_finetune import _read_data

    entries = synthetic_entries(3)
    (tmp_path / "bom.json").write_bytes(BOM + json.dumps(entries).encode("utf-8"))
    assert _read_data(str(tmp_path / "bom.json")) == entries


def test_evaluate_reads_responses_with_a_byte_order_mark(tmp_path):
    from llmscratch.cli_instructions import _read_responses

    entries = [{**entry, "model_response": "1"} for entry in synthetic_entries(2)]
    (tmp_path / "bom.json").write_bytes(BOM + json.dumps(entries).encode("utf-8"))
    assert _read_responses(tmp_path / "bom.json", "model_response") == entries


# --- item 5: the command line names its flags, the Python API keeps its advice ----------------------------------


def test_each_replaced_phrase_is_still_in_the_package():
    """FLAG_ADVICE's keys are exact phrases of the package's messages: a reworded message is caught here."""
    from llmscratch import checkpoints, gpt2_download, gpt2_weights, judge_http

    sources = "".join(inspect.getsource(module) for module in (checkpoints, gpt2_download, gpt2_weights, judge_http))
    for phrase in FLAG_ADVICE:
        assert phrase in sources.replace('"\n            "', "").replace('"\n                    "', ""), phrase


def test_the_judges_url_advice_names_the_flag():
    from llmscratch.judge_http import _unreachable

    message = _unreachable("http://127.0.0.1:9/api/chat", "llama3", "connection refused")
    assert "pass url= of" in message  # the Python API's advice
    cli = flag_advice(message, "evaluate")
    assert "--judge-url" in cli and "url=" not in cli


def test_gpt2_download_advice_names_the_flag(main, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    generate = main("generate", "--gpt2", "124M", env=env)
    assert_one_line_error(generate, "(HF_HUB_OFFLINE=1)", "pass its path: --checkpoint path/to/model.safetensors")
    finetune = main("finetune-classifier", "--gpt2", "124M", "--epochs", "1", env=env)
    assert_one_line_error(finetune, "python -m llmscratch download --gpt2 SIZE")
    for result in (generate, finetune):
        assert "load_pretrained_gpt2(" not in result.stderr and "local_files_only" not in result.stderr


@pytest.mark.parametrize("command, fragment", [
    (["classify", "Hi", "--checkpoint", "tiny.pth"], "classify takes the classifier.pt of finetune-classifier"),
    (["chat", "--checkpoint", "tiny.pth"], "chat takes the model of finetune-instructions"),
])
def test_a_plain_state_dict_for_a_command_of_its_own_files(main, tmp_path, command, fragment):
    state_dict_file(tmp_path, TINY, "tiny.pth")
    result = main(*command)
    assert_one_line_error(result, fragment, "generate --checkpoint" if command[0] == "chat" else "")
    assert "load_state_dict" not in result.stderr


def test_pretrain_resume_of_a_plain_state_dict_names_the_command(main, tmp_path):
    (tmp_path / "run").mkdir()
    state_dict_file(tmp_path / "run", TINY, "checkpoint.pt")
    (tmp_path / "text.txt").write_text("Every effort moves you. " * 200, encoding="utf-8")
    result = main("pretrain", "--resume", "--tiny", "--data", "text.txt", "--out", "run")
    assert_one_line_error(result, "--resume continues a checkpoint.pt of pretrain")
    assert "load_state_dict" not in result.stderr


# --- item 6: the bounds and the divergence guard of every command that has them ---------------------------------


@pytest.mark.parametrize("command", [["generate", "--checkpoint", "tiny.pth"], ["chat", "--checkpoint", "tiny.pth"]])
def test_max_new_tokens_bound_of_generate_and_chat(main, tmp_path, command):
    state_dict_file(tmp_path, TINY, "tiny.pth")
    assert_one_line_error(main(*command, "--max-new-tokens", "99999999999"), "--max-new-tokens must be at most 100000")


def test_a_diverging_loss_stops_finetune_instructions_at_its_first_step(main, tmp_path, monkeypatch):
    from llmscratch import cli_instruction_finetune

    def poisoned(model, *args, **kwargs):  # an infinite head: the loss of the first step is NaN
        torch.nn.init.constant_(model.out_head.weight, float("inf"))
        return train(model, *args, **kwargs)

    train = cli_instruction_finetune._train
    monkeypatch.setattr(cli_instruction_finetune, "_train", poisoned)
    (tmp_path / "mine.json").write_text(json.dumps(synthetic_entries(12)), encoding="utf-8")
    result = main("finetune-instructions", "--tiny", "--data", "mine.json", "--batch-size", "4", "--epochs", "1",
                  "--max-new-tokens", "2", "--out", "run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].split("\r")[-1].strip() == (
        "error: training diverged at step 0: the loss is not a finite number (NaN or infinity); lower --lr (or "
        "--lora-alpha) and run again")
    assert not (tmp_path / "run" / "instruction_model.pt").exists()
