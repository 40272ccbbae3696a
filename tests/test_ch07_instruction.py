"""Chapter 7: the instruction data (the book's entries, split and batches), the prompt styles, the collate functions
and their targets, masking the prompt, Alpaca 52k's structure check, the model names, chapter 5's loss on the
batches and the response."""

from __future__ import annotations

import functools
import json
import os
import socket

import pytest
import torch

from llmscratch.data import DATA_FILES, DataChecksumError, DataFile, fetch
from llmscratch.gpt import GPT2_CONFIGS, GPT_CONFIG_TINY, GPTModel
from llmscratch.gpt2_weights import pretrained_gpt2_config
from llmscratch.instruction import (
    PROMPT_STYLES, InstructionDataset, custom_collate_draft_1, custom_collate_draft_2, custom_collate_fn,
    extract_response, format_input, format_input_phi,
)
from llmscratch.instruction_data import (
    ALPACA_ENTRIES, GPT2_MODEL_NAMES, InstructionDatasetWithMasking, create_instruction_loaders,
    custom_collate_with_masking_fn, load_alpaca_data, load_instruction_data, model_size_of, sft_model_filename,
    split_instruction_data,
)
from llmscratch.pretraining import calc_loss_batch

pytestmark = pytest.mark.usefixtures("one_thread")

PAD = 50256
BOOK_BATCH = ([0, 1, 2, 3, 4], [5, 6], [7, 8, 9])
# The book's loop `for inputs, targets in train_loader: print(inputs.shape, targets.shape)` (7.4): 116 batches of 8.
BOOK_TRAIN_LENGTHS = [
    61, 76, 73, 68, 65, 72, 80, 67, 62, 75, 62, 68, 67, 77, 69, 79, 71, 66, 83, 68, 80, 71, 69, 65, 68, 60, 59, 69,
    63, 65, 76, 66, 71, 91, 65, 64, 67, 66, 64, 65, 75, 89, 59, 88, 83, 83, 70, 65, 74, 76, 67, 75, 83, 69, 67, 60,
    60, 66, 80, 71, 61, 58, 71, 67, 68, 63, 87, 68, 64, 68, 71, 68, 71, 61, 65, 67, 65, 64, 60, 72, 64, 70, 57, 72,
    64, 68, 62, 74, 80, 68, 70, 91, 61, 66, 80, 81, 74, 82, 63, 83, 68, 67, 77, 91, 64, 61, 75, 64, 66, 78, 66, 64,
    83, 66, 74, 69,
]
# print(inputs[0]) after that loop: "The baby is very cute." -> "The baby is as cute as a button." (60 tokens).
BOOK_LAST_ROW = [
    21106, 318, 281, 12064, 326, 8477, 257, 4876, 13, 19430, 257, 2882, 326, 20431, 32543, 262, 2581, 13, 198, 198,
    21017, 46486, 25, 198, 30003, 6525, 262, 6827, 1262, 257, 985, 576, 13, 198, 198, 21017, 23412, 25, 198, 464,
    5156, 318, 845, 13779, 13, 198, 198, 21017, 18261, 25, 198, 464, 5156, 318, 355, 13779, 355, 257, 4936, 13,
]
PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
SMALL_CONFIG = {**GPT_CONFIG_TINY, "emb_dim": 16, "n_heads": 2, "n_layers": 1}


@pytest.fixture(scope="module")
def data():
    return load_instruction_data()


@pytest.fixture(scope="module")
def splits(data):
    return split_instruction_data(data)


# --- 7.2 the data and the prompt ------------------------------------------------------------------------------


def test_instruction_data_as_in_the_book(data):
    assert len(data) == 1100
    assert data[50] == {"instruction": "Identify the correct spelling of the following word.", "input": "Ocassion",
                        "output": "The correct spelling is 'Occasion.'"}
    assert data[999] == {"instruction": "What is an antonym of 'complicated'?", "input": "",
                         "output": "An antonym of 'complicated' is 'simple'."}


def test_format_input_prints_the_books_prompts(data):
    assert format_input(data[50]) + f"\n\n### Response:\n{data[50]['output']}" == (
        f"{PREAMBLE}\n\n### Instruction:\nIdentify the correct spelling of the following word.\n\n"
        "### Input:\nOcassion\n\n### Response:\nThe correct spelling is 'Occasion.'")
    assert format_input(data[999]) == f"{PREAMBLE}\n\n### Instruction:\nWhat is an antonym of 'complicated'?"


def test_split_is_the_books(data, splits):
    train_data, val_data, test_data = splits
    assert (len(train_data), len(val_data), len(test_data)) == (935, 55, 110)
    assert train_data == data[:935] and test_data == data[935:1045] and val_data == data[1045:]  # test: middle
    assert format_input(val_data[0]).endswith("Convert the active sentence to passive: 'The chef cooks the meal "
                                              "every day.'")  # the book's start_context in 7.5 and 7.6


# --- 7.3 batches ----------------------------------------------------------------------------------------------


def test_instruction_dataset_pretokenizes_prompt_and_response(splits, tokenizer):
    train_data = splits[0]
    dataset = InstructionDataset(train_data, tokenizer)
    assert len(dataset) == 935
    for i in (0, 500, 934):
        text = format_input(train_data[i]) + f"\n\n### Response:\n{train_data[i]['output']}"
        assert dataset[i] == tokenizer.encode(text)
    assert tokenizer.encode("<|endoftext|>", allowed_special={"<|endoftext|>"}) == [PAD]


def test_collate_drafts_and_final_targets_are_the_books():
    assert custom_collate_draft_1(BOOK_BATCH).tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD],
                                                           [7, 8, 9, PAD, PAD]]
    inputs, targets = custom_collate_draft_2(BOOK_BATCH)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert targets.tolist() == [[1, 2, 3, 4, PAD], [6, PAD, PAD, PAD, PAD], [8, 9, PAD, PAD, PAD]]
    inputs, targets = custom_collate_fn(BOOK_BATCH)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, PAD, PAD, PAD], [7, 8, 9, PAD, PAD]]
    assert targets.tolist() == [[1, 2, 3, 4, PAD], [6, PAD, -100, -100, -100], [8, 9, PAD, -100, -100]]
    assert inputs.dtype == targets.dtype == torch.long
    inputs, targets = custom_collate_fn(BOOK_BATCH, allowed_max_length=3)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, PAD], [7, 8, 9]] and targets.tolist() == [
        [1, 2, 3], [6, PAD, -100], [8, 9, PAD]]
    assert BOOK_BATCH[1] == [5, 6]  # the items are not modified


def test_cross_entropy_ignores_minus_100_as_in_the_book():
    logits_1 = torch.tensor([[-1.0, 1.0], [-0.5, 1.5]])
    loss_1 = torch.nn.functional.cross_entropy(logits_1, torch.tensor([0, 1]))
    logits_2 = torch.tensor([[-1.0, 1.0], [-0.5, 1.5], [-0.5, 1.5]])
    loss_2 = torch.nn.functional.cross_entropy(logits_2, torch.tensor([0, 1, 1]))
    loss_3 = torch.nn.functional.cross_entropy(logits_2, torch.tensor([0, 1, -100]))
    assert [round(loss.item(), 4) for loss in (loss_1, loss_2, loss_3)] == [1.1269, 0.7936, 1.1269]
    assert loss_1 == loss_3


# --- 7.4 loaders ----------------------------------------------------------------------------------------------


def test_loaders_give_the_books_batches(splits, tokenizer):
    torch.manual_seed(123)
    train_loader, val_loader, test_loader = create_instruction_loaders(*splits, tokenizer)
    batches = list(train_loader)
    assert [tuple(inputs.shape) for inputs, _ in batches] == [(8, n) for n in BOOK_TRAIN_LENGTHS]
    assert all(inputs.shape == targets.shape for inputs, targets in batches)
    inputs, targets = batches[-1]
    assert inputs[0].tolist() == BOOK_LAST_ROW + [PAD] * 9
    assert targets[0].tolist() == BOOK_LAST_ROW[1:] + [PAD] + [-100] * 9
    assert (len(val_loader), len(test_loader)) == (7, 14)
    assert [len(x) for x, _ in val_loader][-1] == 7 and sum(len(x) for x, _ in test_loader) == 110  # all kept


# --- exercises 7.1 and 7.2 -----------------------------------------------------------------------------------


def test_phi3_prompt_style(data, tokenizer):
    """Exercise 7.1: ``<|user|>`` is ordinary text for GPT-2's tokenizer, five tokens."""
    assert tokenizer.encode("<|user|>") == [27, 91, 7220, 91, 29]
    assert format_input_phi(data[50]) == "<|user|>\nIdentify the correct spelling of the following word.\nOcassion"
    assert format_input_phi(data[999]) == "<|user|>\nWhat is an antonym of 'complicated'?"
    dataset = InstructionDataset(data[50:51], tokenizer, prompt_style="phi3")
    assert dataset[0] == tokenizer.encode(format_input_phi(data[50]) + "\n<|assistant|>:\nThe correct spelling is "
                                          "'Occasion.'")
    assert PROMPT_STYLES["phi3"].response_header == "<|assistant|>:"


def test_prompt_tokens_are_a_prefix_of_every_full_text(data, tokenizer):
    """What exercise 7.2's masking relies on: the prompt's tokens begin the whole text's, in both styles."""
    for style in PROMPT_STYLES:
        dataset = InstructionDatasetWithMasking(data, tokenizer, prompt_style=style)
        for entry, (length, ids) in zip(data, (dataset[i] for i in range(len(dataset)))):
            assert ids[:length] == tokenizer.encode(PROMPT_STYLES[style].format_input(entry))


@pytest.mark.parametrize("style", sorted(PROMPT_STYLES))
def test_masking_sets_minus_100_exactly_over_the_prompt(data, tokenizer, style):
    """Exercise 7.2: a target is -100 exactly where its token is instruction or input, or padding after the
    first <|endoftext|>; the response (with its header) and that first <|endoftext|> are kept."""
    entries = [data[50], data[999], data[3]]
    dataset = InstructionDatasetWithMasking(entries, tokenizer, prompt_style=style)
    inputs, targets = custom_collate_with_masking_fn([dataset[i] for i in range(3)])
    _, plain_targets = custom_collate_fn([dataset[i][1] for i in range(3)])
    for row, (length, ids) in enumerate(dataset[i] for i in range(3)):
        masked = (targets[row] == -100).nonzero().flatten().tolist()
        assert masked == list(range(length - 1)) + list(range(len(ids), inputs.shape[1]))
        assert targets[row, length - 1:].tolist() == plain_targets[row, length - 1:].tolist()
        assert targets[row, length - 1:len(ids)].tolist() == ids[length:] + [PAD]  # response, then <|endoftext|>
    assert dataset.instruction_lengths[1] < dataset.instruction_lengths[0]  # data[999] has no input


def test_loader_options_mask_and_phi3(splits, tokenizer):
    train_data, val_data, test_data = (part[:16] for part in splits)
    torch.manual_seed(123)
    loaders = create_instruction_loaders(train_data, val_data, test_data, tokenizer, mask_instructions=True,
                                         prompt_style="phi3", allowed_max_length=40)
    inputs, targets = next(iter(loaders[1]))
    prompt = tokenizer.encode(format_input_phi(val_data[0]))
    assert inputs.shape == (8, 40) and inputs[0, :len(prompt)].tolist() == prompt
    assert targets[0, :len(prompt) - 1].eq(-100).all() and targets[0, len(prompt) - 1] != -100


# --- exercise 7.3: Alpaca 52k --------------------------------------------------------------------------------


SAMPLE = [{"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat well."},
          {"instruction": "Translate to French.", "input": "Hello", "output": "Bonjour"},
          {"instruction": "Add the numbers.", "input": "2, 3", "output": "5"}]


def write_json(path, records):
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_alpaca_structure_check(tmp_path):
    good = write_json(tmp_path / "good.json", SAMPLE)
    assert load_alpaca_data(good, expected_entries=3) == SAMPLE
    with pytest.raises(ValueError, match="holds 3 entries, expected 52,002"):
        load_alpaca_data(good)  # the real count is required by default
    missing = write_json(tmp_path / "missing.json", [SAMPLE[0], {"instruction": "x", "output": "y"}, SAMPLE[2]])
    with pytest.raises(ValueError, match=r"entry 1 of .* has the keys \['instruction', 'output'\], expected exactly"):
        load_alpaca_data(missing, expected_entries=3)
    extra = write_json(tmp_path / "extra.json", [{**SAMPLE[0], "text": "..."}])
    with pytest.raises(ValueError, match="entry 0 of"):
        load_alpaca_data(extra, expected_entries=1)
    (tmp_path / "bad.json").write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match="not a JSON file"):
        load_alpaca_data(tmp_path / "bad.json")
    assert ALPACA_ENTRIES == 52_002


def test_alpaca_registry_entry_verifies_by_structure(tmp_path):
    """No pinned sha256: the registry's own check installs a good file and keeps nothing of a bad one."""
    registered = DATA_FILES["alpaca-52k"]
    assert registered.sha256 is None and registered.filename == "alpaca_data.json"
    assert registered.url == "https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json"
    with pytest.raises(ValueError, match="expected 52,002"):
        registered.verify(write_json(tmp_path / "sample.json", SAMPLE))
    with pytest.raises(ValueError, match="sha256 or a verify function"):
        DataFile("x", "x.json", "http://127.0.0.1/x.json", None, "unchecked")

    with socket.socket() as sock:  # a port nobody listens on: the network is never used
        sock.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{sock.getsockname()[1]}/alpaca_data.json"
    small = DataFile("alpaca-small", "alpaca_data.json", closed_url, None, "three entries",
                     verify=functools.partial(registered.verify.func, **{**registered.verify.keywords,
                                                                          "expected_entries": 3}))
    (mirror := tmp_path / "mirror").mkdir()
    write_json(mirror / "alpaca_data.json", SAMPLE)
    path = fetch(small, tmp_path / "data", mirror, retries=0, progress=False)
    assert json.loads(path.read_text(encoding="utf-8")) == SAMPLE
    write_json(mirror / "alpaca_data.json", SAMPLE[:2])
    path.unlink()
    with pytest.raises(DataChecksumError, match="holds 2 entries, expected 3.*Nothing was kept"):
        fetch(small, tmp_path / "data", mirror, retries=0, progress=False)
    assert os.listdir(tmp_path / "data") == []


# --- 7.5 to 7.7: the model, chapter 5's loop, the response ----------------------------------------------------


def test_book_model_names_map_to_the_packages_configs():
    assert [model_size_of(name) for name in GPT2_MODEL_NAMES] == list(GPT2_CONFIGS)
    base_config = {"vocab_size": 50257, "context_length": 1024, "drop_rate": 0.0, "qkv_bias": True,
                   "emb_dim": 1024, "n_layers": 24, "n_heads": 16}  # the book's BASE_CONFIG for gpt2-medium
    assert pretrained_gpt2_config(model_size_of("gpt2-medium (355M)")) == base_config
    assert sft_model_filename("gpt2-medium (355M)") == "gpt2-medium355M-sft.pth"


def test_chapter5_loss_skips_the_ignored_targets(splits, tokenizer):
    """7.6 trains with chapter 5's code (``calc_loss_loader``, ``train_model_simple``): its loss leaves out the
    targets -100, so a batch's loss is the mean over the response tokens and the first <|endoftext|> only."""
    torch.manual_seed(123)
    train_loader, _, _ = create_instruction_loaders(splits[0][:8], splits[1][:4], splits[2][:4], tokenizer,
                                                    batch_size=4)
    torch.manual_seed(123)
    model = GPTModel(SMALL_CONFIG).eval()
    inputs, targets = next(iter(train_loader))
    kept = targets != -100
    assert not kept.all()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(inputs)[kept], targets[kept])
        torch.testing.assert_close(calc_loss_batch(inputs, targets, model, "cpu"), expected)


def test_extract_response_as_in_the_book(data):
    input_text = format_input(data[999])
    generated = input_text + "\n\n### Response:\nAn antonym of 'complicated' is 'simple'.\n"
    assert extract_response(generated, input_text) == "An antonym of 'complicated' is 'simple'."
    phi = format_input_phi(data[999])
    assert extract_response(phi + "\n<|assistant|>:\n Simple. ", phi, prompt_style="phi3") == "Simple."


# --- clear errors -----------------------------------------------------------------------------------------------


def test_bad_input_raises_clear_value_errors(data, splits, tokenizer):
    with pytest.raises(ValueError, match="'instruction' and 'input'"):
        format_input({"instruction": "Say hi."})
    with pytest.raises(ValueError, match="'instruction' and 'input'"):
        format_input_phi("Say hi.")
    with pytest.raises(ValueError, match="prompt_style"):
        InstructionDataset(data[:2], tokenizer, prompt_style="chatml")
    with pytest.raises(ValueError, match="entry 1 of data"):
        InstructionDataset([data[0], {"instruction": "x", "input": ""}], tokenizer)
    with pytest.raises(ValueError, match="list of entries"):
        InstructionDataset(data[0], tokenizer)
    with pytest.raises(ValueError, match="empty"):
        custom_collate_fn([])
    with pytest.raises(ValueError, match="lists of token ids"):
        custom_collate_draft_1([torch.tensor([1, 2])])
    with pytest.raises(ValueError, match="InstructionDatasetWithMasking"):
        custom_collate_with_masking_fn([[1, 2]])  # a plain list: the masking data set gives pairs
    with pytest.raises(ValueError, match="InstructionDataset gives"):
        custom_collate_fn([(3, [1, 2])])  # pairs: the masking data set's items
    with pytest.raises(ValueError, match="allowed_max_length"):
        custom_collate_fn(BOOK_BATCH, allowed_max_length=0)
    with pytest.raises(ValueError, match="fractions"):
        split_instruction_data(data, 0.9, 0.2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        create_instruction_loaders(data[:4], data[4:6], data[6:8], tokenizer)
    with pytest.raises(ValueError, match="allowed_max_length"):
        create_instruction_loaders(*splits, tokenizer, allowed_max_length=-1)
    with pytest.raises(ValueError, match="choose_model"):
        model_size_of("gpt2 (124M)")
    with pytest.raises(ValueError, match="start with input_text"):
        extract_response("Something else", format_input(data[0]))


# --- issue 20: <|endoftext|> in an entry, entries that are not text --------------------------------------------


def test_endoftext_in_an_entry_is_the_special_token(tokenizer):
    from llmscratch.gpt2_tokenizer import gpt2_tokenizer
    from llmscratch.instruction import InstructionDataset, format_input
    from llmscratch.instruction_data import create_instruction_loaders

    entries = [{"instruction": "What ends a text in GPT-2?", "input": "", "output": "The token <|endoftext|>."}] * 3
    full = format_input(entries[0]) + "\n\n### Response:\n" + entries[0]["output"]
    expected = tokenizer.encode(full, allowed_special={"<|endoftext|>"})
    assert InstructionDataset(entries, gpt2_tokenizer())[0] == expected
    train_loader, _, _ = create_instruction_loaders(entries, entries[:1], entries[:1], tokenizer, batch_size=2)
    assert train_loader.dataset[0] == expected  # the package's loaders accept tiktoken's own tokenizer too
    with pytest.raises(ValueError, match=r"pass llmscratch.gpt2_tokenizer.gpt2_tokenizer\(\)"):
        InstructionDataset(entries, tokenizer)


def test_instruction_dataset_refuses_fields_that_are_not_text(tokenizer):
    from llmscratch.instruction import InstructionDataset

    entry = {"instruction": "Name a color.", "input": None, "output": "Blue."}
    with pytest.raises(ValueError, match="entry 0 of data: 'input' is None, not a text"):
        InstructionDataset([entry], tokenizer)
