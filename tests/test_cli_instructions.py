"""The command line's instruction model (ch07_finetune_instructions): ``finetune-instructions``, ``evaluate`` and
``chat``.

``cli.main([...])`` runs in this process, on the CPU, on one thread. The training runs finetune the tiny GPT for one
epoch on a few short entries (the first 10 of the instruction data: 8 training entries in batches of 2, or 10
synthetic ones) and answer the test entries with a few tokens; ``chat`` also runs once as a reader runs it, in a
fresh process with its stdin piped (marked slow: a fresh process imports torch). ``evaluate`` scores against the fake judge of test_judge on 127.0.0.1, or falls back to ROUGE-L where no
judge answers. Bad input: one line, exit code 2, nothing written.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import test_judge
import torch
from test_cli import assert_one_line_error, files_of, run_cli
from test_cli_classifier import call_main, write_other_files
from test_judge import ENTRIES, SERVER_ERROR, closed_port_url

from llmscratch import cli_instruction_finetune, cli_instructions, instruction_run
from llmscratch.gpt import GPTModel
from llmscratch.instruction import INSTRUCTION_KEYS
from llmscratch.instruction_data import load_instruction_data
from llmscratch.instruction_run import TINY_INSTRUCTION_CONFIG, instruction_responses, load_instruction_model
from llmscratch.judge import rouge_l_scores
from llmscratch.lora import LinearWithLoRA
from llmscratch.settings import get_settings

pytestmark = pytest.mark.usefixtures("one_thread")
judge = test_judge.judge  # the fixture of the fake judge on 127.0.0.1

OUTPUTS = ["instruction-data-with-response.json", "instruction_model.pt", "loss.png"]
QUICK = ["--epochs", "1", "--max-new-tokens", "5", "--out", "run"]  # one epoch, five tokens per response
# What the tiny GPT trains: embeddings 50,257 x 64 + 1,024 x 64, two blocks of 49,792, final norm 128, head 50,257 x 64
TINY_PARAMETERS = 3_216_448 + 65_536 + 2 * 49_792 + 128 + 3_216_448


def synthetic_entries(count: int) -> list[dict]:
    return [{"instruction": f"Repeat the number {i}.", "input": "" if i % 2 else f"{i}", "output": f"{i}"}
            for i in range(count)]


def finetuned(tmp_path_factory, *args: str) -> tuple[Path, object]:
    """One ``finetune-instructions ... --out run`` in a fresh folder holding mine.json (12 synthetic entries), on
    one thread; (cwd, result)."""
    cwd = tmp_path_factory.mktemp("instructions")
    (cwd / "mine.json").write_text(json.dumps(synthetic_entries(12)), encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            result = call_main(monkeypatch, cwd, "finetune-instructions", *args, small=False)
    finally:
        torch.set_num_threads(threads)
        get_settings.cache_clear()
    assert result.returncode == 0, result.stderr
    return cwd, result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The book's data (from the registry), its first 10 entries: 8 training, 1 validation, 1 test."""
    return finetuned(tmp_path_factory, "--tiny", "--limit", "10", "--batch-size", "2", *QUICK)


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory):
    """Exercise 7.1's prompt, 7.2's masking and LoRA, on a data file: 10 training, 1 validation, 1 test entry."""
    return finetuned(tmp_path_factory, "--tiny", "--data", "mine.json", "--batch-size", "4", "--prompt-style", "phi3",
                     "--mask-instructions", "--lora-rank", "2", "--lora-alpha", "4", *QUICK)


@pytest.fixture
def main(tmp_path, monkeypatch, one_thread):
    """``main("chat", ...)``: ``call_main`` in ``tmp_path``."""
    yield lambda *args, **kwargs: call_main(monkeypatch, tmp_path, *args, small=False, **kwargs)
    get_settings.cache_clear()  # the next reader sees the restored environment


def fresh_tiny_model() -> GPTModel:
    torch.manual_seed(123)  # --seed's default: the weights the run started from
    return GPTModel(TINY_INSTRUCTION_CONFIG)


def book_data(cwd: Path) -> list[dict]:
    return load_instruction_data(cwd / "data" / "instruction-data.json")


# --- finetune-instructions --------------------------------------------------------------------------------------


def test_finetune_writes_model_responses_and_plot(tiny_run):
    cwd, result = tiny_run
    run = cwd / "run"
    assert sorted(p.name for p in run.iterdir()) == OUTPUTS  # no lock, no temporary file
    assert (run / "loss.png").stat().st_size > 1000
    responses = json.loads((run / "instruction-data-with-response.json").read_text(encoding="utf-8"))
    assert [{key: entry[key] for key in INSTRUCTION_KEYS} for entry in responses] == book_data(cwd)[8:9]
    assert all(list(entry) == [*INSTRUCTION_KEYS, "model_response"] for entry in responses)
    assert all(isinstance(entry["model_response"], str) for entry in responses)
    assert (f"finetuning tiny from scratch to follow instructions (all weights: {TINY_PARAMETERS:,} trainable "
            "parameters) on 8 entries, 1 epoch, lr 0.001, batch size 2, prompt style alpaca") in result.stderr
    assert "Ep 1 (Step 000000): Train loss " in result.stderr and "Ep 1 (Step" not in result.stdout
    assert "Below is an instruction" in result.stderr  # the sample after the epoch starts with the book's prompt
    assert "model: run/instruction_model.pt\n" in result.stdout and "loss plot: run/loss.png\n" in result.stdout


def test_saved_model_says_it_is_not_gpt2_and_gives_the_responses(tiny_run, tokenizer):
    cwd, _ = tiny_run
    model, info = load_instruction_model(cwd / "run" / "instruction_model.pt")
    assert info["gpt2_weights"] is False and "NOT GPT-2" in info["description"]
    assert {key: info[key] for key in ("base", "config", "prompt_style", "mask_instructions", "lora", "data",
                                       "limit", "entries", "epochs", "lr", "batch_size", "seed")} == {
        "base": "tiny from scratch", "config": TINY_INSTRUCTION_CONFIG, "prompt_style": "alpaca",
        "mask_instructions": False, "lora": None, "data": "instruction-data", "limit": 10,
        "entries": {"train": 8, "val": 1, "test": 1}, "epochs": 1, "lr": 1e-3, "batch_size": 2, "seed": 123}
    responses = json.loads((cwd / "run" / "instruction-data-with-response.json").read_text(encoding="utf-8"))
    again = instruction_responses(model, tokenizer, responses, max_new_tokens=5, progress=False)
    assert again == [entry["model_response"] for entry in responses]  # the saved model is the one that answered
    assert not torch.equal(model.tok_emb.weight, fresh_tiny_model().tok_emb.weight)  # trained


def test_phi3_prompt_masking_and_lora(variant_run, tokenizer):
    cwd, result = variant_run
    run = cwd / "run"
    # rank x (in + out) per linear layer: per block 4 x (64 + 64) in attention and (64 + 256) + (256 + 64) in the
    # feed forward, two blocks, plus the output head's (64 + 50,257)
    assert "LoRA rank 2, alpha 4, book scaling: 105,250 trainable parameters) on 10 entries" in result.stderr
    assert "prompt style phi3, prompt tokens masked" in result.stderr and "<|user|>" in result.stderr
    model, info = load_instruction_model(run / "instruction_model.pt")
    assert (info["prompt_style"], info["mask_instructions"], info["lora"]) == ("phi3", True, {"rank": 2, "alpha": 4.0, "scaling": "book"})
    assert info["data"] == str((cwd / "mine.json").resolve()) and info["entries"] == {"train": 10, "val": 1, "test": 1}
    assert not any(isinstance(module, LinearWithLoRA) for module in model.modules())  # merged: a plain GPTModel
    fresh = fresh_tiny_model()
    assert torch.equal(model.tok_emb.weight, fresh.tok_emb.weight)  # frozen
    assert not torch.equal(model.trf_blocks[0].att.W_query.weight, fresh.trf_blocks[0].att.W_query.weight)
    responses = json.loads((run / "instruction-data-with-response.json").read_text(encoding="utf-8"))
    assert [{key: entry[key] for key in INSTRUCTION_KEYS} for entry in responses] == synthetic_entries(12)[10:11]
    assert responses[0]["model_response"] == instruction_responses(model, tokenizer, responses, prompt_style="phi3",
                                                                   max_new_tokens=5, progress=False)[0]


def test_gpt2_base_at_the_books_rate_with_the_head_untied(main, tmp_path, monkeypatch):
    """The GPT-2 branch (the default) with a stand-in for the download: the tiny GPT, its head tied to the
    embedding as load_pretrained_gpt2 ties them; finetuning trains the two apart, as the book's copy does."""
    loads = []

    def load_stand_in(size, config):
        loads.append((size, config))
        model = fresh_tiny_model()
        model.out_head.weight = model.tok_emb.weight
        return model.eval()

    monkeypatch.setattr(instruction_run, "pretrained_gpt2_config", lambda size: TINY_INSTRUCTION_CONFIG)
    monkeypatch.setattr(instruction_run, "load_pretrained_gpt2", load_stand_in)
    (tmp_path / "mine.json").write_text(json.dumps(synthetic_entries(10)), encoding="utf-8")
    result = main("finetune-instructions", "--data", "mine.json", "--batch-size", "2", "--epochs", "1",
                  "--max-new-tokens", "2", "--out", "run")
    assert result.returncode == 0, result.stderr
    assert loads == [("355M", TINY_INSTRUCTION_CONFIG)]
    model, info = load_instruction_model(tmp_path / "run" / "instruction_model.pt")
    assert (info["base"], info["gpt2_weights"], info["lr"]) == ("gpt2-355M", True, 5e-5)
    assert "NOT GPT-2" not in info["description"] and "OpenAI's GPT-2 355M" in info["description"]
    assert not torch.equal(model.out_head.weight, model.tok_emb.weight)


# --- evaluate ---------------------------------------------------------------------------------------------------


def write_responses(folder: Path, entries=ENTRIES, name="responses.json") -> Path:
    (folder / name).write_text(json.dumps(entries), encoding="utf-8")
    return folder / name


def test_evaluate_with_the_judge_and_resume(main, tmp_path, judge):
    write_responses(tmp_path)
    judge.replies = ["90", "80", "70", "60", "50"]
    result = main("evaluate", "--responses", "responses.json", "--judge-url", judge.ollama)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Number of scores: 5 of 5",
                                          f"Average score: 70.00 (LLM judge llama3 at {judge.ollama}, 0 to 100)",
                                          "scores: responses-scores.json"]
    assert [entry["model_response"] in prompt for entry, prompt in zip(ENTRIES, judge.prompts())] == [True] * 5
    asked = len(judge.prompts())
    again = main("evaluate", "--responses", "responses.json", "--judge-url", judge.ollama)
    assert again.stdout == result.stdout and len(judge.prompts()) == asked  # every score came from the file
    assert "5 came from the scores file" in again.stderr


def test_evaluate_goes_on_after_the_judge_fails(main, tmp_path, judge):
    write_responses(tmp_path)
    judge.replies = ["80", SERVER_ERROR]
    failed = main("evaluate", "--responses", "responses.json", "--judge-url", judge.ollama)
    line = failed.stderr.splitlines()[-1]  # after the progress bar, one line
    assert failed.returncode == 2 and line.startswith("error: The judge at ") and "Traceback" not in failed.stderr
    assert "answered HTTP 500" in line and "The scores so far are saved in responses-scores.json" in line
    result = main("evaluate", "--responses", "responses.json", "--judge-url", judge.ollama)  # then "50" each
    assert result.returncode == 0, result.stderr
    assert "Average score: 56.00 " in result.stdout and len(judge.prompts()) == 2 + 4


def test_evaluate_another_key_with_an_openai_compatible_judge(main, tmp_path, judge):
    entries = [{**{k: v for k, v in entry.items() if k != "model_response"}, "answer": entry["model_response"]}
               for entry in ENTRIES]
    write_responses(tmp_path, entries, "mine.json")
    judge.default = "100"
    result = main("evaluate", "--responses", "mine.json", "--key", "answer", "--judge-url", judge.openai,
                  "--judge-model", "qwen")
    assert result.returncode == 0, result.stderr
    assert f"Average score: 100.00 (LLM judge qwen at {judge.openai}" in result.stdout
    assert (tmp_path / "mine-scores.json").is_file() and judge.requests[-1]["body"]["model"] == "qwen"


def test_evaluate_without_a_judge_falls_back_to_rouge_l(main, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    write_responses(tmp_path)
    url = closed_port_url()
    result = main("evaluate", "--responses", "responses.json", "--judge-url", url)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0].startswith(f"No LLM judge answered at {url}")
    expected = rouge_l_scores(ENTRIES, "model_response")
    average = sum(expected) / len(expected)
    assert result.stdout.splitlines() == [
        "Number of scores: 5 of 5",
        f"Average ROUGE-L score: {average:.2f} (0 to 100, each response's overlap with the expected output: no LLM "
        "judge answered, so this is not the judge's score)",
        "scores: responses-rouge-l.json"]
    saved = json.loads((tmp_path / "responses-rouge-l.json").read_text(encoding="utf-8"))
    assert saved["scores"] == pytest.approx(expected) and saved["average"] == pytest.approx(average)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["responses-rouge-l.json", "responses.json"]


@pytest.mark.parametrize("content, args, fragment", [
    (None, [], "--responses responses.json: no such file"),
    ("not json", [], "--responses responses.json is not a JSON file"),
    ({"instruction": "a"}, [], "holds a JSON dict, not a list of entries with a response"),
    ([], [], "holds no entries, not a list of entries"),
    (["a response"], [], "entry 0 of responses.json is a JSON str, not an object"),
    ([{"instruction": "a", "input": "", "output": "b"}], [], "has no field 'model_response' (its fields: "
                                                             "input, instruction, output): pass --key"),
    (ENTRIES, ["--key", "answer"], "entry 0 of responses.json has no field 'answer'"),
    ([{"instruction": "a", "input": "", "model_response": "b"}], [], "entry 0 of responses.json has no output"),
    ([{"instruction": "a", "input": "", "output": "b", "model_response": None}], [], "'model_response' is not text"),
    (ENTRIES, ["--judge-url", "http://127.0.0.1:9/api/generate"], "--judge-url: url must end in /api/chat"),
    (ENTRIES, ["--judge-model", " "], "--judge-model is empty"),
])
def test_bad_evaluate_input(main, tmp_path, content, args, fragment):
    if content is not None:
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / "responses.json").write_text(text, encoding="utf-8")
    before = files_of(tmp_path)
    assert_one_line_error(main("evaluate", "--responses", "responses.json", *args), fragment)
    assert files_of(tmp_path) == before


# --- chat -------------------------------------------------------------------------------------------------------


def answers(checkpoint: Path, tokenizer, entries, max_new_tokens) -> str:
    """What chat prints for ``entries``: each response, one at a time, followed by an empty line."""
    model, info = load_instruction_model(checkpoint)
    return "".join(instruction_responses(model, tokenizer, [entry], prompt_style=info["prompt_style"],
                                         max_new_tokens=max_new_tokens, batch_size=1, progress=False)[0] + "\n\n"
                   for entry in entries)


@pytest.mark.slow
def test_chat_with_piped_stdin(tiny_run, tokenizer):
    cwd, _ = tiny_run
    checkpoint = cwd / "run" / "instruction_model.pt"
    result = run_cli("chat", "--checkpoint", str(checkpoint), "--max-new-tokens", "8", cwd=cwd,
                     input="Name a color.\n  Give a synonym for 'happy'.  \n\nNot read: the empty line ended it.\n")
    assert result.returncode == 0, result.stderr
    entries = [{"instruction": text, "input": ""} for text in ("Name a color.", "Give a synonym for 'happy'.")]
    assert result.stdout == answers(checkpoint, tokenizer, entries, 8)
    assert "finetuned from random weights: NOT GPT-2" in result.stderr and "prompt style alpaca" in result.stderr


def test_chat_with_input_until_quit(main, variant_run, tokenizer, monkeypatch):
    checkpoint = variant_run[0] / "run" / "instruction_model.pt"
    monkeypatch.setattr(sys, "stdin", io.StringIO("Rewrite the sentence.\nThe car is fast.\nQuit\nName a color.\n\n"))
    result = main("chat", "--checkpoint", str(checkpoint), "--with-input", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    entry = {"instruction": "Rewrite the sentence.", "input": "The car is fast."}
    assert result.stdout == answers(checkpoint, tokenizer, [entry], 4)  # in the phi3 style the model was trained in
    assert "prompt style phi3" in result.stderr


def test_chat_ends_at_the_end_of_input(main, tiny_run, tokenizer, monkeypatch):
    checkpoint = tiny_run[0] / "run" / "instruction_model.pt"
    monkeypatch.setattr(sys, "stdin", io.StringIO("Name a color."))  # no line break, then the end
    result = main("chat", "--checkpoint", str(checkpoint), "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == answers(checkpoint, tokenizer, [{"instruction": "Name a color.", "input": ""}], 3)


def test_chat_ctrl_c_exits_130(main, tiny_run, monkeypatch):
    class Interrupted(io.StringIO):
        def readline(self, *args):
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", Interrupted())
    result = main("chat", "--checkpoint", str(tiny_run[0] / "run" / "instruction_model.pt"))
    assert result.returncode == 130 and result.stderr.endswith("Instruction: interrupted\n") and result.stdout == ""


@pytest.fixture(scope="module")
def other_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("other-files")
    write_other_files(folder)
    return folder


@pytest.mark.parametrize("args, fragment", [
    (["--checkpoint", "missing.pt"], "missing.pt: no such file (give the instruction_model.pt"),
    (["--checkpoint", "folder.pt"], "folder.pt: is a folder, not a file"),
    (["--checkpoint", "three.pt"], "three.pt is a checkpoint but not an instruction model saved by "
                                   "save_instruction_model (kind 'classifier')"),
    (["--checkpoint", "checkpoint.pt"], "checkpoint.pt is a checkpoint but not an instruction model saved by "
                                        "save_instruction_model (kind None)"),
    (["--checkpoint", "notes.pt"], "notes.pt is not a checkpoint"),
    (["--checkpoint", "three.pt", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    ([], "the following arguments are required: --checkpoint"),
])
def test_bad_chat_input(main, other_files, args, fragment):
    """A pretraining checkpoint, a three-class classifier, a file that is no checkpoint, a folder, none."""
    before = files_of(other_files)
    args = [str(other_files / arg) if arg.endswith(".pt") else arg for arg in args]
    assert_one_line_error(main("chat", *args), fragment)
    assert files_of(other_files) == before


# --- bad finetune input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--epochs", "1.5"], "invalid int value: '1.5'"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--lr", "0"], "--lr must be a finite number > 0 (a learning rate of 0 trains nothing), got 0.0"),
    (["--lr=-5e-5"], "--lr must be a finite number > 0"),
    (["--lr", "inf"], "--lr must be a finite number > 0"),
    (["--lora-rank", "0"], "--lora-rank must be at least 1, got 0"),
    (["--lora-rank", "8", "--lora-alpha", "0"], "--lora-alpha must be a finite number > 0, got 0.0"),
    (["--lora-alpha", "16"], "--lora-alpha needs --lora-rank"),
    (["--limit", "0"], "--limit must be at least 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["--seed", str(2**64)], "--seed must be between"),
    (["--prompt-style", "chatml"], "invalid choice: 'chatml'"),
    (["--gpt2", "2B"], "invalid choice: '2B'"),
    (["--gpt2", "355M", "--tiny"], "argument --tiny: not allowed with argument --gpt2"),
    (["--tiny", "--from-scratch"], "argument --from-scratch: not allowed with argument --tiny"),
    (["--device", "tpu"], "device='tpu' is not a device the course runs on"),
    (["--data", "missing.json"], "--data missing.json: no such file (use instruction-data or alpaca-52k, or a path"),
])
def test_bad_finetune_arguments(main, tmp_path, args, fragment):
    assert_one_line_error(main("finetune-instructions", "--out", "run", *args), fragment)
    assert list(tmp_path.iterdir()) == []  # checked before anything is read or written


@pytest.mark.parametrize("content, fragment", [
    ("[{]", "--data: data.json is not a JSON file"),
    ({"instruction": "a", "input": "", "output": "b"}, "data.json holds a JSON dict, not a list of entries"),
    ([{"prompt": "a", "response": "b"}], "entry 0 of data.json has the keys ['prompt', 'response'], expected "
                                         "exactly ['input', 'instruction', 'output']"),
    ([{"instruction": "a", "input": "", "output": 3}], "entry 0 of data.json has a field that is not text"),
    (synthetic_entries(9), "the 85/10/5 split of the 9 entries of --data gives 7 training, 2 validation and 0 test "
                           "entries; training needs one batch of 8 (--batch-size) and the others one entry each"),
])
def test_bad_data_file(main, tmp_path, content, fragment):
    (tmp_path / "data.json").write_text(content if isinstance(content, str) else json.dumps(content),
                                        encoding="utf-8")
    assert_one_line_error(main("finetune-instructions", "--tiny", "--data", "data.json", "--out", "run"), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_limit_too_small_and_data_folder(main, tmp_path):
    assert_one_line_error(main("finetune-instructions", "--tiny", "--limit", "9", "--out", "run"),
                          "the 85/10/5 split of the first 9 entries of --data gives 7 training", "(a larger --limit)")
    (tmp_path / "folder.json").mkdir()
    assert_one_line_error(main("finetune-instructions", "--tiny", "--data", "folder.json", "--out", "run"),
                          "--data folder.json: is a folder, not a file")
    assert not (tmp_path / "run").exists()


def test_finished_model_is_not_overwritten_and_out_is_a_file(main, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "instruction_model.pt").write_bytes(b"a model finetuned for hours")
    before = files_of(tmp_path / "run")
    assert_one_line_error(main("finetune-instructions", "--tiny", "--out", "run"),
                          "run/instruction_model.pt exists: move it away or pick another --out")
    assert files_of(tmp_path / "run") == before
    (tmp_path / "file").write_text("not a folder")
    assert_one_line_error(main("finetune-instructions", "--tiny", "--out", "file"), "--out file is a file")


def test_gpt2_not_downloadable(main, tmp_path, monkeypatch):
    """The package's GPT2DownloadError, for real: offline, with an empty Hugging Face cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    result = main("finetune-instructions", "--gpt2", "124M", "--limit", "10", "--out", "run",
                  env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(result, "error: GPT-2 124M (openai-community/gpt2/config.json) is not in the cache")
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_training_exits_130_and_unlocks(main, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_instruction_finetune, "train_model_resumable", interrupted)
    result = main("finetune-instructions", "--tiny", "--limit", "10", "--out", "run")
    assert result.returncode == 130 and result.stderr.endswith("interrupted: no model was saved\n")
    assert list((tmp_path / "run").iterdir()) == []  # no model, no lock left


def test_help_says_what_limit_does(main):
    result = main("finetune-instructions", "--help")
    assert result.returncode == 0
    assert "use only the first N entries of the data, before the 85/10/5 split" in " ".join(result.stdout.split())
    listing = main("--help").stdout
    assert all(name in listing for name in ("finetune-instructions", "evaluate", "chat"))
