"""DPO (the book's bonus notebook of chapter 7): the book's printed values, the loss on fixed log-probabilities, and a
tiny model whose reward margin grows only with the right sign and a frozen reference."""

from __future__ import annotations

import contextlib
import io
import json
import math
from functools import partial

import pytest
import tiktoken
import torch
from torch.utils.data import DataLoader

from llmscratch.dpo import (
    PreferenceDataset, compute_dpo_loss, compute_dpo_loss_batch, compute_logprobs, custom_collate_fn,
    decode_tokens_from_batch, evaluate_dpo_loss_loader, train_model_dpo_simple,
)
from llmscratch.dpo_run import (
    create_preference_loaders, frozen_reference, load_preference_data, plot_dpo_curves, reward_margins,
    train_model_dpo_resumable,
)
from llmscratch.gpt import GPTModel
from llmscratch.instruction_data import split_instruction_data


@pytest.fixture(scope="module")
def data():
    return load_preference_data()


@pytest.fixture(scope="module")
def tokenizer():
    return tiktoken.get_encoding("gpt2")


# --- the book's values (dpo-from-scratch.ipynb, sections 2.1 to 2.4) ----------------------------------------------


def test_the_book_split_and_entries(data):
    train_data, val_data, test_data = split_instruction_data(data)
    assert (len(data), len(train_data), len(val_data), len(test_data)) == (1100, 935, 55, 110)
    assert data[50]["rejected"] == "The correct spelling is obviously 'Occasion.'"
    assert data[999]["chosen"] == "A suitable antonym for 'complicated' would be 'simple'."
    assert val_data[0]["instruction"] == "Convert the active sentence to passive: 'The chef cooks the meal every day.'"
    assert test_data[2]["instruction"] == "Name the author of 'Pride and Prejudice'."


BOOK_PROMPT_0 = [21106, 318, 281, 12064, 326, 8477, 257, 4876, 13, 19430, 257, 2882, 326, 20431, 32543, 262, 2581, 13,
                 198, 198, 21017, 46486, 25, 198, 36, 2100, 4985, 262, 1708, 9546, 416, 25449, 340, 656, 262, 24993,
                 1813, 13, 198, 198, 21017, 23412, 25, 198, 19503, 521, 14610, 1545]
BOOK_CHOSEN_0_TAIL = [198, 198, 21017, 18261, 25, 198, 464, 24993, 286, 262, 1813, 9546, 366, 19503, 521, 1, 318,
                      11491, 11, 262, 3376, 24993, 318, 366, 6726, 1911] + [50256] * 7
BOOK_CHOSEN_1 = [21106, 318, 281, 12064, 326, 8477, 257, 4876, 13, 19430, 257, 2882, 326, 20431, 32543, 262, 2581, 13,
                 198, 198, 21017, 46486, 25, 198, 18378, 262, 1708, 6827, 329, 23491, 13, 198, 198, 21017, 23412, 25,
                 198, 1544, 467, 284, 262, 3952, 790, 1110, 13, 198, 198, 21017, 18261, 25, 198, 1544, 2925, 284, 262,
                 3952, 790, 1110, 13] + [50256] * 22


def test_collate_gives_the_book_batch_of_its_first_two_entries(data, tokenizer):
    loader = DataLoader(PreferenceDataset(data[:2], tokenizer), batch_size=2, shuffle=False,
                        collate_fn=partial(custom_collate_fn, device="cpu", mask_prompt_tokens=True,
                                           allowed_max_length=1024))
    batch = next(iter(loader))
    assert list(batch) == ["prompt", "chosen", "rejected", "rejected_mask", "chosen_mask"]
    assert batch["prompt"][0].tolist() == BOOK_PROMPT_0 and len(batch["prompt"][1]) == 45
    assert batch["chosen"].shape == batch["rejected"].shape == batch["chosen_mask"].shape == (2, 81)
    assert batch["chosen"][0].tolist() == BOOK_PROMPT_0 + BOOK_CHOSEN_0_TAIL
    assert batch["chosen"][1].tolist() == BOOK_CHOSEN_1
    assert batch["chosen_mask"][0].tolist() == [False] * 50 + [True] * 24 + [False] * 7  # the book's printed mask
    assert batch["rejected_mask"][0].tolist() == [False] * 50 + [True] * 30 + [False]
    response = decode_tokens_from_batch(batch["chosen"][0][batch["chosen_mask"][0]], tokenizer)
    assert response == '### Response:\nThe spelling of the given phrase "freind" is incorrect, the correct spelling is "friend".'
    rejected = decode_tokens_from_batch(batch["rejected"][0], tokenizer)
    assert rejected.endswith('flat out wrong, get it together, the correct spelling is "friend".<|endoftext|>')


def test_collate_without_prompt_masking_and_truncated():
    item = {"prompt": [1, 2], "chosen": [1, 2, 3, 4, 5], "rejected": [1, 2, 6]}
    batch = custom_collate_fn([item], pad_token_id=0, mask_prompt_tokens=False, allowed_max_length=4)
    assert batch["chosen"].tolist() == [[1, 2, 3, 4]] and batch["rejected"].tolist() == [[1, 2, 6, 0]]
    assert batch["rejected_mask"].tolist() == [[True, True, True, False]]
    with pytest.raises(ValueError, match="PreferenceDataset"):
        custom_collate_fn([[1, 2, 3]])


def test_the_book_loaders_give_its_batch_shapes(data, tokenizer):
    torch.manual_seed(123)
    train_loader, val_loader, test_loader = create_preference_loaders(*split_instruction_data(data), tokenizer)
    shapes = [tuple(batch["chosen"].shape) for batch in train_loader][:5]
    assert shapes == [(8, 77), (8, 81), (8, 94), (8, 75), (8, 75)]  # the book's first five lines
    assert (len(train_loader), len(val_loader), len(test_loader)) == (116, 7, 14)


# --- the loss on fixed numbers ------------------------------------------------------------------------------------


def test_compute_dpo_loss_on_fixed_log_probabilities():
    # pair 1: the policy moved +0.5 on chosen and -0.5 on rejected (margin 1); pair 2: it did not move (margin 0)
    loss, chosen, rejected = compute_dpo_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-2.5, -1.5]),
                                              torch.tensor([-1.5, -2.0]), torch.tensor([-2.0, -1.5]), beta=0.1)
    expected = (math.log(1 + math.exp(-0.1)) + math.log(2)) / 2  # -log(sigmoid(0.1 * 1)) and -log(sigmoid(0))
    assert loss.item() == pytest.approx(expected, abs=1e-7) and expected == pytest.approx(0.66877, abs=1e-5)
    assert (chosen.item(), rejected.item()) == (0.25, -0.25)
    loss_05, _, _ = compute_dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.5]), torch.tensor([-1.5]),
                                     torch.tensor([-2.0]), beta=0.5)
    assert loss_05.item() == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-7)  # beta scales the margin


def test_compute_logprobs_averages_the_selected_next_tokens():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))  # (1, 3, 3)
    labels = torch.tensor([[0, 1, 2]])  # next tokens: 1 (p 0.25), then 2 (p 0.1)
    assert compute_logprobs(logits, labels).item() == pytest.approx((math.log(0.25) + math.log(0.1)) / 2)
    mask = torch.tensor([[False, False, True]])  # only the last next token
    assert compute_logprobs(logits, labels, mask).item() == pytest.approx(math.log(0.1))


# --- a tiny model trained with DPO --------------------------------------------------------------------------------

TINY = {"vocab_size": 32, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
        "qkv_bias": False}


def preference_batches():
    """Two batches of prompt + two "newlines" (30) + response: chosen ends 4 5 6, rejected 7 8 9."""
    items = [{"prompt": [1 + i, 2, 3], "chosen": [1 + i, 2, 3, 30, 30, 4, 5, 6],
              "rejected": [1 + i, 2, 3, 30, 30, 7, 8, 9]} for i in range(8)]
    return DataLoader(items, batch_size=4, shuffle=False, collate_fn=partial(custom_collate_fn, pad_token_id=0))


class CharTokenizer:
    def encode(self, text, allowed_special=None):
        return [1, 2, 3]

    def decode(self, ids):
        return " ".join(map(str, ids))


def train_tiny(steps=12, beta=0.1):
    torch.manual_seed(123)
    policy = GPTModel(TINY)
    reference = frozen_reference(policy)
    before = {name: value.clone() for name, value in reference.state_dict().items()}
    loader = preference_batches()
    with torch.no_grad():
        start = [compute_dpo_loss_batch(batch, policy, reference, beta) for batch in loader]
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2, weight_decay=0.01)
    with contextlib.redirect_stdout(io.StringIO()):
        tracking = train_model_dpo_simple(policy, reference, loader, loader, optimizer, steps // len(loader), beta,
                                          eval_freq=2, eval_iter=2, start_context="x", tokenizer=CharTokenizer())
    after = {name: value for name, value in reference.state_dict().items()}
    assert all(torch.equal(before[name], after[name]) for name in before), "the reference must not change"
    return policy, reference, loader, start, tracking


def test_dpo_raises_the_reward_margin_and_prefers_chosen():
    policy, reference, loader, start, tracking = train_tiny()
    assert [loss.item() for loss, _, _ in start] == [pytest.approx(math.log(2))] * 2  # policy == reference
    res = evaluate_dpo_loss_loader(policy, reference, loader, loader, beta=0.1, eval_iter=2)
    margin = res["train_chosen_reward"] - res["train_rejected_reward"]
    assert margin > 0.5, f"the reward margin did not grow: {margin}"
    assert res["train_loss"] < math.log(2) - 0.01
    train_margins, _ = reward_margins(tracking)
    assert train_margins[-1] > train_margins[0] + 0.3
    batch = next(iter(loader))  # the policy prefers chosen over rejected more than the reference does
    with torch.no_grad():
        def gap(model):
            return (compute_logprobs(model(batch["chosen"]), batch["chosen"], batch["chosen_mask"])
                    - compute_logprobs(model(batch["rejected"]), batch["rejected"], batch["rejected_mask"]))
        assert bool((gap(policy) > gap(reference) + 0.5).all())


def test_the_reference_is_frozen():
    model = GPTModel(TINY)
    reference = frozen_reference(model)
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the policy still trains


def test_resumable_loop_equals_the_book_loop_and_resumes(tmp_path):
    def run(train, **kwargs):
        torch.manual_seed(123)
        policy = GPTModel(TINY)
        reference = frozen_reference(policy)
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2, weight_decay=0.01)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            tracking = train(policy, reference, preference_batches(), preference_batches(), optimizer,
                             kwargs.pop("num_epochs", 2), 0.1, 1, 1, "x", CharTokenizer(), **kwargs)
        return tracking, out.getvalue()

    book, book_lines = run(train_model_dpo_simple)
    resumable, lines = run(train_model_dpo_resumable, progress=False)
    assert resumable == book and lines == book_lines
    path = tmp_path / "dpo.pt"
    run(train_model_dpo_resumable, num_epochs=1, checkpoint_path=path, progress=False)
    resumed, _ = run(train_model_dpo_resumable, num_epochs=2, checkpoint_path=path, resume=True, progress=False)
    assert resumed == book


def test_plot_and_data_errors(tmp_path):
    tracking = {"train_losses": [0.69, 0.6], "val_losses": [0.69, 0.65], "train_chosen_rewards": [0.0, 0.3],
                "train_rejected_rewards": [0.0, -0.2], "val_chosen_rewards": [0.0, 0.1],
                "val_rejected_rewards": [0.0, -0.1], "tokens_seen": [100, 200]}
    assert reward_margins(tracking) == ([0.0, 0.5], [0.0, 0.2])
    figure = plot_dpo_curves(tracking, 1)
    assert [ax.get_title() for ax in figure.axes[:2]] == ["Perda DPO", "Margem de recompensa"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}]), encoding="utf-8")
    with pytest.raises(ValueError, match="expected exactly"):
        load_preference_data(bad)
    with pytest.raises(ValueError, match="chosen"):
        PreferenceDataset([{"instruction": "a", "input": ""}], tiktoken.get_encoding("gpt2"))
