"""The web app without a browser (issue 24): the token stream equals ``generate``, the handlers yield partial
answers and refuse bad input in Portuguese, every file's label says what made it, and ``python -m llmscratch app``
stops with one line before the server starts (missing file, wrong kind, busy port)."""

from __future__ import annotations

import socket

import pytest
import torch

from llmscratch import cli, ports
from llmscratch.app_models import (MAX_MESSAGE_CHARS, NOT_GPT2, RANDOM_TINY_LABEL, AppInputError, chat_reply,
                                   check_message, classify_message, generate_text, load_served, served_chat,
                                   served_classifier, served_generator, spam_probability, stream_tokens)
from llmscratch.checkpoints import save_checkpoint
from llmscratch.classification import classify_review
from llmscratch.classifier import prepare_classifier, save_classifier
from llmscratch.decoding import generate
from llmscratch.gpt import GPT_CONFIG_TINY, GPTModel
from llmscratch.gpt2_tokenizer import gpt2_tokenizer
from llmscratch.instruction_run import instruction_responses, save_instruction_model

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = {**GPT_CONFIG_TINY, "context_length": 64, "drop_rate": 0.0}
BOOK_MESSAGES = ("You are a winner you have been specially selected to receive $1000 cash or a $2000 award.",
                 "Hey, just wanted to check if we're still on for dinner tonight? Let me know!")


def tiny_gpt(seed=123, config=CONFIG):
    torch.manual_seed(seed)
    return GPTModel(config).eval()


def tiny_classifier(seed=123):
    torch.manual_seed(seed)
    return prepare_classifier(GPTModel(CONFIG), trainable_layers="none").eval()


# --- the token stream ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, 20), (1.5, None)])
def test_stream_gives_generates_tokens(tokenizer, temperature, top_k):
    model = tiny_gpt()
    idx = torch.tensor([tokenizer.encode("Every effort moves you")])
    torch.manual_seed(7)
    expected = generate(model, idx, 30, 64, temperature=temperature, top_k=top_k, use_cache=True)[0, 4:].tolist()
    generator = torch.Generator().manual_seed(7)  # the same draws as the global generator seeded alike
    assert list(stream_tokens(model, idx, 30, temperature, top_k, generator=generator)) == expected


def test_stream_stops_at_eos_without_yielding_it(tokenizer):
    model = tiny_gpt()
    idx = torch.tensor([tokenizer.encode("Every effort moves you")])
    tokens = list(stream_tokens(model, idx, 10))
    eos = tokens[3]  # pretend the fourth greedy token ends the text
    assert list(stream_tokens(model, idx, 10, eos_id=eos)) == tokens[:3]


def test_generate_text_yields_partial_text_before_the_end():
    served = served_generator(tiny_gpt(), RANDOM_TINY_LABEL)
    parts = list(generate_text(served, "Every effort moves you", max_new_tokens=12))
    assert parts[0] == "Every effort moves you" and len(parts) == 13  # the prompt, then one yield per token
    assert all(later.startswith(earlier) for earlier, later in zip(parts, parts[1:]))
    assert len(parts[1]) < len(parts[-1])


def test_two_requests_at_once_do_not_mix():
    """Each request has its own KV cache: two streams advanced in turns give what each gives alone."""
    served = served_generator(tiny_gpt(), RANDOM_TINY_LABEL)
    alone = [list(generate_text(served, prompt, max_new_tokens=8)) for prompt in ("Hello", "The cat sat")]
    first, second = generate_text(served, "Hello", max_new_tokens=8), generate_text(served, "The cat sat", 8)
    together = [[], []]
    for a, b in zip(first, second):
        together[0].append(a)
        together[1].append(b)
    assert together == alone


def test_chat_reply_is_the_command_lines_answer():
    """The last partial reply is what ``chat`` (``instruction_responses``) answers: the same prompt, greedy."""
    model = tiny_gpt(config={**CONFIG, "context_length": 128})
    served = served_chat(model, RANDOM_TINY_LABEL)
    parts = list(chat_reply(served, "Name a color.", max_new_tokens=16))
    [expected] = instruction_responses(model, gpt2_tokenizer(), [{"instruction": "Name a color.", "input": ""}],
                                       max_new_tokens=16, batch_size=1, progress=False)
    assert parts and parts[-1] == expected


# --- bad input: a message for the page -------------------------------------------------------------------------


@pytest.mark.parametrize("text, fragment", [("", "vazia"), ("   \n", "vazia"), (None, "vazia"),
                                            ("x" * 100_000, "100.000 caracteres"),
                                            ("x" * (MAX_MESSAGE_CHARS + 1), "até 4.000")])
def test_bad_messages_get_a_portuguese_message(text, fragment):
    with pytest.raises(AppInputError, match=fragment):
        check_message(text)
    served = served_generator(tiny_gpt(), RANDOM_TINY_LABEL)
    with pytest.raises(AppInputError, match=fragment):
        next(generate_text(served, text))  # before anything is yielded
    with pytest.raises(AppInputError, match=fragment):
        next(chat_reply(served_chat(served.model, RANDOM_TINY_LABEL), text))
    with pytest.raises(AppInputError, match=fragment):
        classify_message(served_classifier(tiny_classifier(), RANDOM_TINY_LABEL, max_length=16), text)


@pytest.mark.parametrize("settings, fragment", [((0, 0.0, None), "tokens vai de 1"), ((10, -1.0, None), "temperatura"),
                                                ((10, 1.0, 60_000), "top-k vai de 1"), (("x", 1.0, 0), "números")])
def test_bad_controls_get_a_portuguese_message(settings, fragment):
    served = served_generator(tiny_gpt(), RANDOM_TINY_LABEL)
    with pytest.raises(AppInputError, match=fragment):
        next(generate_text(served, "Hello", *settings))


def test_a_long_prompt_keeps_its_last_tokens():
    served = served_generator(tiny_gpt(), RANDOM_TINY_LABEL)
    prompt = "word " * 500  # about 500 tokens, a context of 64
    parts = list(generate_text(served, prompt, max_new_tokens=3))
    assert len(parts) == 4 and parts[0] == prompt.strip()


def test_classifier_probabilities_agree_with_classify_review(tokenizer):
    model = tiny_classifier()
    served = served_classifier(model, RANDOM_TINY_LABEL, max_length=32)
    for text in BOOK_MESSAGES:
        answer, probabilities = classify_message(served, text)
        assert probabilities["spam"] == pytest.approx(spam_probability(served, text))
        assert sum(probabilities.values()) == pytest.approx(1.0)
        book = classify_review(text, model, tokenizer, "cpu", max_length=32)
        assert answer == {"spam": "spam", "not spam": "não spam"}[book]


def test_a_label_must_say_which_model():
    with pytest.raises(ValueError, match="label must say"):
        served_generator(tiny_gpt(), " ")


# --- files: which tab, and the label ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app_models")
    files = {"pretrain": save_checkpoint(folder / "checkpoint.pt", tiny_gpt(), None, config=CONFIG),
             "state_dict": folder / "weights.pth",
             "classifier": save_classifier(folder / "classifier.pt", tiny_classifier(), CONFIG, max_length=16),
             "instruction": save_instruction_model(folder / "sft.pth", tiny_gpt(config={**CONFIG, "context_length":
                                                   1024}), {**CONFIG, "context_length": 1024},
                                                   base="tiny from scratch"),
             "other_kind": save_checkpoint(folder / "other.pt", tiny_gpt(), None, kind="judge", config=CONFIG),
             "text": folder / "notes.txt"}
    torch.save(tiny_gpt().state_dict(), files["state_dict"])
    files["text"].write_text("not a model", encoding="utf-8")
    return files


@pytest.mark.parametrize("name, tab, words", [("pretrain", "generate", ["checkpoint de pré-treinamento", RANDOM_TINY_LABEL]),
                                              ("state_dict", "generate", ["pesos de weights.pth"]),
                                              ("classifier", "classify", ["classificador de spam", RANDOM_TINY_LABEL]),
                                              ("instruction", "chat", ["ajustado por instruções", NOT_GPT2])])
def test_each_file_serves_its_tab_with_an_honest_label(model_files, name, tab, words):
    found, served = load_served(model_files[name])
    assert found == tab
    for word in words:
        assert word in served.label
    assert "GPT-2" not in served.label.replace(NOT_GPT2, "")  # nothing random is called GPT-2


def test_a_file_of_no_use_is_one_error(model_files):
    with pytest.raises(ValueError, match="kind 'judge'"):
        load_served(model_files["other_kind"])
    with pytest.raises(ValueError, match="notes.txt"):
        load_served(model_files["text"])


# --- the command line: one line before the server starts --------------------------------------------------------


def run_app(capsys, *args):
    with pytest.raises(SystemExit) as stop:
        cli.main(["app", *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_cli_missing_file_and_no_model(capsys, tmp_path):
    assert "no such file" in run_app(capsys, "--checkpoint", str(tmp_path / "nothing.pt"))
    assert "give a model" in run_app(capsys)


def free_port():
    return str(ports.free_port())


def test_cli_wrong_kind_and_two_files_for_one_tab(capsys, model_files):
    assert "kind 'judge'" in run_app(capsys, "--checkpoint", str(model_files["other_kind"]), "--port", free_port())
    assert "port 0" in run_app(capsys, "--checkpoint", str(model_files["pretrain"]), "--port", "0")
    err = run_app(capsys, "--checkpoint", str(model_files["pretrain"]), "--checkpoint", str(model_files["state_dict"]),
                  "--port", free_port())
    assert "both for the tab Gerar texto" in err


def test_cli_busy_port(capsys, model_files):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        err = run_app(capsys, "--checkpoint", str(model_files["classifier"]), "--port", str(port))
    assert f"port {port} on 127.0.0.1 is busy" in err


def test_cli_help_lists_app(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "app" in capsys.readouterr().out


def test_build_app_has_three_tabs():
    from llmscratch.app import build_app

    demo = build_app({"generate": served_generator(tiny_gpt(), RANDOM_TINY_LABEL)})
    config = demo.get_config_file()
    labels = [c["props"].get("label") for c in config["components"] if c.get("type") == "tabitem"]
    assert labels == ["Gerar texto", "Classificar mensagem", "Conversar"]
    with pytest.raises(ValueError, match="ServedModel"):
        build_app({"chat": tiny_gpt()})
