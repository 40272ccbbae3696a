"""ch05_pretraining: the book's values (REFERENCE_VALUES.md) and the training loops, on the CPU."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.utils.data import DataLoader

from llmscratch.data import get_data
from llmscratch.dataloader import GPTDatasetV1, create_dataloader_v1
from llmscratch.decoding import TEMPERATURE_DEMO_LOGITS, TEMPERATURE_DEMO_VOCAB, print_sampled_tokens
from llmscratch.gpt import GPT_CONFIG_124M, GPTModel, generate_text_simple
from llmscratch.pretraining import (
    calc_loss_batch, calc_loss_loader, evaluate_model, plot_losses, text_to_token_ids, token_ids_to_text,
    train_model_simple,
)
from llmscratch.train_advanced import learning_rate_at, plot_learning_rate, train_model
from tiny_training import TEXT, TINY_CONFIG, tiny_loaders

CH05_CONFIG = {**GPT_CONFIG_124M, "context_length": 256}  # the book shortens the context in chapter 5
EVAL_LINE = re.compile(r"^Ep \d+ \((?:Step|Iter) \d{6}\): Train loss \d+\.\d{3}, Val loss \d+\.\d{3}$")

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def book_model():
    """The untrained GPT-2 small of chapter 5 (context 256), seeded as the book does."""
    torch.manual_seed(123)
    model = GPTModel(CH05_CONFIG)
    model.eval()  # Disable dropout during inference
    return model


@pytest.fixture(scope="module")
def verdict_loaders():
    text_data = get_data("the-verdict").read_text(encoding="utf-8")
    split_idx = int(0.90 * len(text_data))
    torch.manual_seed(123)
    train_loader = create_dataloader_v1(text_data[:split_idx], batch_size=2, max_length=256, stride=256,
                                        drop_last=True, shuffle=True, num_workers=0)
    val_loader = create_dataloader_v1(text_data[split_idx:], batch_size=2, max_length=256, stride=256,
                                      drop_last=False, shuffle=False, num_workers=0)
    return train_loader, val_loader


def test_text_token_round_trip(tokenizer):
    ids = text_to_token_ids("Every effort moves you", tokenizer)
    assert ids.tolist() == [[6109, 3626, 6100, 345]]
    assert token_ids_to_text(ids, tokenizer) == "Every effort moves you"
    with pytest.raises(ValueError, match="one at a time"):
        token_ids_to_text(torch.zeros(2, 3, dtype=torch.long), tokenizer)


def test_book_loss_and_perplexity(book_model):
    inputs = torch.tensor([[16833, 3626, 6100], [40, 1107, 588]])  # "every effort moves", "I really like"
    targets = torch.tensor([[3626, 6100, 345], [1107, 588, 11311]])  # " effort moves you", " really like chocolate"
    with torch.no_grad():
        loss = calc_loss_batch(inputs, targets, book_model, "cpu")
    assert f"{loss.item():.4f}" == "10.7940"
    assert torch.exp(loss).item() == pytest.approx(48_726, abs=1)


def test_book_untrained_generation(book_model, tokenizer):
    idx = text_to_token_ids("Every effort moves you", tokenizer)
    token_ids = generate_text_simple(book_model, idx, max_new_tokens=10, context_size=256)
    expected = "Every effort moves you rentingetic wasnم refres RexMeCHicular stren"  # the book's output
    assert token_ids_to_text(token_ids, tokenizer) == expected


def test_verdict_loaders_match_the_book(verdict_loaders):
    train_loader, val_loader = verdict_loaders
    assert len(train_loader) == 9 and len(val_loader) == 1
    assert sum(x.numel() for x, _ in train_loader) == 4_608
    assert sum(x.numel() for x, _ in val_loader) == 512


@pytest.mark.slow
def test_verdict_untrained_losses_match_the_book(book_model, verdict_loaders):
    train_loader, val_loader = verdict_loaders
    torch.manual_seed(123)  # For reproducibility due to the shuffling in the data loader
    with torch.no_grad():  # Disable gradient tracking for efficiency because we are not training, yet
        train_loss = calc_loss_loader(train_loader, book_model, "cpu")
        val_loss = calc_loss_loader(val_loader, book_model, "cpu")
    assert train_loss == pytest.approx(10.98758, abs=5e-6)
    assert val_loss == pytest.approx(10.98111, abs=5e-6)


def test_temperature_demo(capsys):
    inverse_vocab = {v: k for k, v in TEMPERATURE_DEMO_VOCAB.items()}
    logits = torch.tensor(TEMPERATURE_DEMO_LOGITS)
    probas = torch.softmax(logits, dim=0)
    assert inverse_vocab[torch.argmax(probas).item()] == "forward"
    top_logits, top_pos = torch.topk(logits, 3)
    assert top_logits.tolist() == pytest.approx([6.75, 6.28, 4.51]) and top_pos.tolist() == [3, 7, 0]
    counts = print_sampled_tokens(probas)  # the book's counts, seed 123, 1,000 draws
    assert counts.tolist() == [73, 0, 0, 582, 2, 0, 0, 343, 0]
    assert capsys.readouterr().out.splitlines()[3] == "582 x forward"


def test_calc_loss_loader_edge_cases(tokenizer):
    torch.manual_seed(0)
    model = GPTModel(TINY_CONFIG).eval()
    train, val = tiny_loaders(tokenizer)
    empty = DataLoader(GPTDatasetV1(TEXT[:200], tokenizer, 16, 16), batch_size=100, drop_last=True)
    assert len(empty) == 0 and math.isnan(calc_loss_loader(empty, model, "cpu"))  # the book returns nan
    with torch.no_grad():
        first = calc_loss_batch(*next(iter(val)), model, "cpu").item()
        assert calc_loss_loader(val, model, "cpu", num_batches=1) == pytest.approx(first)
        all_batches = calc_loss_loader(val, model, "cpu")
        assert calc_loss_loader(val, model, "cpu", num_batches=1000) == pytest.approx(all_batches)
    with pytest.raises(ValueError, match="num_batches"):
        calc_loss_loader(val, model, "cpu", num_batches=0)
    with pytest.raises(ValueError, match="same"):
        calc_loss_batch(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), model, "cpu")
    train_loss, val_loss = evaluate_model(model.train(), train, val, "cpu", eval_iter=2)
    assert model.training and train_loss > 0 and val_loss > 0


def test_train_model_simple_prints_one_line_per_evaluation(tokenizer, capsys):
    torch.manual_seed(123)
    train, val = tiny_loaders(tokenizer)
    model = GPTModel(TINY_CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    result = train_model_simple(model, train, val, optimizer, "cpu", num_epochs=2, eval_freq=3, eval_iter=1,
                                start_context="Every effort moves you", tokenizer=tokenizer)
    train_losses, val_losses, tokens_seen = result
    steps = 2 * len(train)
    assert len(train_losses) == len(val_losses) == len(tokens_seen) == math.ceil(steps / 3)
    assert tokens_seen[0] == 2 * 16 and tokens_seen[-1] == 32 * (3 * (len(tokens_seen) - 1) + 1)
    lines = capsys.readouterr().out.splitlines()
    eval_lines = [line for line in lines if line.startswith("Ep ")]
    assert len(eval_lines) == len(train_losses) and all(EVAL_LINE.match(line) for line in eval_lines)
    assert eval_lines[0].startswith("Ep 1 (Step 000000): Train loss ")
    samples = [line for line in lines if not line.startswith("Ep ")]
    assert len(samples) == 2 and all(s.startswith("Every effort moves you") for s in samples)  # one per epoch


def test_plot_losses_returns_a_small_closed_figure():
    import matplotlib.pyplot as plt

    fig = plot_losses(torch.linspace(0, 2, 4), [10, 20, 30, 40], [9.0, 7.0, 6.0, 5.5], [9.1, 7.5, 7.0, 6.9])
    assert tuple(fig.get_size_inches()) == (5, 3)
    ax1, ax2 = fig.axes  # the twin axis shows the tokens seen
    assert ax1.get_xlabel() == "Épocas" and ax2.get_xlabel() == "Tokens vistos" and ax1.get_title()
    assert not plt.fignum_exists(fig.number)
    with pytest.raises(ValueError, match="same length"):
        plot_losses([0, 1], [1, 2, 3], [1, 2], [1, 2])


def test_learning_rate_schedule():
    lrs = [learning_rate_at(s, 4, 20, peak_lr=1e-3, initial_lr=1e-5, min_lr=1e-6) for s in range(20)]
    assert lrs[0] == 1e-5 and lrs[4] == pytest.approx(1e-3)  # warmup ends at the peak
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:5]))  # rising during warmup...
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))  # ...falling after
    assert lrs[-1] > 1e-6 and learning_rate_at(20, 4, 20, 1e-3, 1e-5, 1e-6) == pytest.approx(1e-6)


def test_train_model_warmup_cosine_and_clipping(tokenizer, capsys, monkeypatch):
    torch.manual_seed(123)
    train, val = tiny_loaders(tokenizer)
    model = GPTModel(TINY_CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: clipped.append(max_norm)
                        or real_clip(params, max_norm))
    n_epochs, warmup = 2, 3
    train_losses, val_losses, tokens_seen, lrs = train_model(
        model, train, val, optimizer, "cpu", n_epochs=n_epochs, eval_freq=2, eval_iter=1,
        start_context="Every effort moves you", tokenizer=tokenizer, warmup_steps=warmup, initial_lr=1e-5,
        min_lr=1e-6)
    total = n_epochs * len(train)
    assert len(lrs) == total and lrs[0] == 1e-5 and max(lrs) == pytest.approx(1e-3)
    assert lrs == [learning_rate_at(s, warmup, total, 1e-3, 1e-5, 1e-6) for s in range(total)]
    assert clipped == [1.0] * (total - warmup)  # from the first step after warmup on
    assert len(train_losses) == len(val_losses) == len(tokens_seen) == math.ceil(total / 2)
    eval_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Ep ")]
    assert all(EVAL_LINE.match(line) for line in eval_lines) and len(eval_lines) == len(train_losses)
    fig = plot_learning_rate(lrs)
    assert tuple(fig.get_size_inches()) == (5, 3) and fig.axes[0].get_title()


def test_train_model_checks_its_schedule_before_training(tokenizer):
    train, val = tiny_loaders(tokenizer)
    model = GPTModel(TINY_CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = dict(n_epochs=1, eval_freq=2, eval_iter=1, start_context="Every", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="warmup_steps must be >= 1"):
        train_model(model, train, val, optimizer, "cpu", warmup_steps=0, **args)
    with pytest.raises(ValueError, match="leaves no step for the cosine decay"):
        train_model(model, train, val, optimizer, "cpu", warmup_steps=len(train), **args)
    with pytest.raises(ValueError, match="eval_iter must be >= 1"):
        train_model(model, train, val, optimizer, "cpu", warmup_steps=1, **{**args, "eval_iter": 0})
