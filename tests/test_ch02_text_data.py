"""Chapter 2 (text data): the book's values from REFERENCE_VALUES.md, exactly, plus the tokenizers' errors."""

from __future__ import annotations

import pytest
import tiktoken
import torch

from llmscratch import (
    GPTDatasetV1, SimpleTokenizerV1, SimpleTokenizerV2, build_vocab, create_dataloader_v1, get_data, split_text,
)
from llmscratch.tokenizers import SPECIAL_TOKENS


@pytest.fixture(scope="module")
def raw_text() -> str:
    return get_data("the-verdict").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def vocab(raw_text) -> dict[str, int]:
    return build_vocab(split_text(raw_text), SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def gpt2():
    return tiktoken.get_encoding("gpt2")


def test_the_verdict_split_and_vocab(raw_text, vocab):
    tokens = split_text(raw_text)
    assert len(raw_text) == 20_479
    assert len(tokens) == 4_690
    assert len(set(tokens)) == 1_130
    assert len(vocab) == 1_132
    assert (vocab["<|endoftext|>"], vocab["<|unk|>"]) == (1130, 1131)


def test_simple_tokenizer_v2_book_ids(vocab):
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = SimpleTokenizerV2(vocab).encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert SimpleTokenizerV2(vocab).decode(ids) == (
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>.")


def test_simple_tokenizer_v1_book_output(vocab):
    text = """"It's the last he painted, you know," Mrs. Gisburn said with pardonable pride."""
    tokenizer = SimpleTokenizerV1(vocab)
    ids = tokenizer.encode(text)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]
    # The book's decode joins with spaces, so the apostrophe and opening quote keep one (as printed in the book)
    assert tokenizer.decode(ids) == """" It' s the last he painted, you know," Mrs. Gisburn said with pardonable pride."""


def test_v1_unknown_word_names_it(vocab):
    with pytest.raises(KeyError, match="'Hello' is not in the vocabulary.*SimpleTokenizerV2"):
        SimpleTokenizerV1(vocab).encode("Hello, do you like tea?")


def test_v2_needs_unk_token():
    with pytest.raises(ValueError, match="<\\|unk\\|>"):
        SimpleTokenizerV2({"a": 0})


def test_tiktoken_book_ids(gpt2):
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terracesof someunknownPlace."
    assert gpt2.encode(text, allowed_special={"<|endoftext|>"}) == [
        15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 1659, 617, 34680,
        27271, 13]
    assert gpt2.encode("Akwirw ier") == [33901, 86, 343, 86, 220, 959]


def test_the_verdict_gpt2_tokens(raw_text, gpt2):
    assert len(gpt2.encode(raw_text)) == 5_145


def test_dataloader_first_batch(raw_text):
    loader = create_dataloader_v1(raw_text, batch_size=8, max_length=4, stride=4, shuffle=False)
    inputs, targets = next(iter(loader))
    assert inputs.tolist() == [[40, 367, 2885, 1464], [1807, 3619, 402, 271], [10899, 2138, 257, 7026],
                               [15632, 438, 2016, 257], [922, 5891, 1576, 438], [568, 340, 373, 645],
                               [1049, 5975, 284, 502], [284, 3285, 326, 11]]
    assert torch.equal(targets[:, :-1], inputs[:, 1:])  # targets are the inputs shifted by one token
    assert inputs.dtype == torch.long


def test_dataset_window_count(raw_text, gpt2):
    dataset = GPTDatasetV1(raw_text, gpt2, max_length=256, stride=128)
    assert len(dataset) == len(range(0, 5_145 - 256, 128))
    x, y = dataset[3]
    assert x.shape == y.shape == (256,)
    assert torch.equal(x[1:], y[:-1])


def test_dataset_rejects_short_text_and_bad_sizes(gpt2):
    with pytest.raises(ValueError, match="needs at least 9"):
        GPTDatasetV1("only a few words", gpt2, max_length=8, stride=8)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        GPTDatasetV1("only a few words here", gpt2, max_length=2, stride=0)


def test_embedding_row_three():
    torch.manual_seed(123)
    layer = torch.nn.Embedding(6, 3)
    assert torch.allclose(layer(torch.tensor([3])), torch.tensor([[-0.4015, 0.9666, -1.1481]]), atol=1e-4)
