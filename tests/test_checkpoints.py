"""Checkpoints of ch05_pretraining (5.4): round trip, atomic writes, safe loading, exact resumption."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import DataLoader

from llmscratch.checkpoints import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from llmscratch.dataloader import GPTDatasetV1
from llmscratch.gpt import GPTModel
from llmscratch.pretraining import calc_loss_loader, train_model_resumable, train_model_simple
from llmscratch.resumable import ResumableRun
from tiny_training import TEXT, TINY_CONFIG, tiny_loaders

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_model(seed=123):
    torch.manual_seed(seed)
    return GPTModel(TINY_CONFIG)


def trained_pair():
    """A model and an AdamW optimizer with non-trivial state (two steps taken)."""
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.arange(12).view(2, 6)).sum().backward()
        optimizer.step()
    return model.eval(), optimizer


def temp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_round_trip_gives_identical_logits(tmp_path):
    model, optimizer = trained_pair()
    path = save_checkpoint(tmp_path / "ckpt.pth", model, optimizer, epoch=3, config=TINY_CONFIG,
                           train_losses=[9.5, 8.25], rng_state=get_rng_state())
    fresh = tiny_model(seed=999).eval()
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=5e-4)
    idx = torch.tensor([[1, 2, 3, 4], [50, 60, 70, 80]])
    assert not torch.equal(fresh(idx), model(idx))
    state = load_checkpoint(path, fresh, fresh_optimizer, config=TINY_CONFIG)
    with torch.no_grad():
        assert torch.equal(fresh(idx), model(idx))
    assert state["epoch"] == 3 and state["train_losses"] == [9.5, 8.25] and state["config"] == TINY_CONFIG
    assert fresh_optimizer.param_groups[0]["lr"] == 1e-3
    saved, loaded = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k]["exp_avg_sq"], loaded[k]["exp_avg_sq"]) for k in saved)
    assert temp_files(tmp_path) == []


def test_checkpoint_loads_with_weights_only(tmp_path):
    model, optimizer = trained_pair()
    path = save_checkpoint(tmp_path / "ckpt.pth", model, optimizer, rng_state=get_rng_state(), config=TINY_CONFIG)
    payload = torch.load(path, weights_only=True)  # nothing but tensors and plain values
    assert set(payload) == {"format", "version", "model_state_dict", "optimizer_state_dict", "training_state"}
    # what weights_only could not load is refused before anything is written
    with pytest.raises(ValueError, match=r"training_state\['extra'\]\[1\] is a builtins.set"):
        save_checkpoint(tmp_path / "bad.pth", model, extra=[1, {2}])
    with pytest.raises(ValueError, match="numpy"):
        import numpy as np

        save_checkpoint(tmp_path / "bad.pth", model, best=np.float64(1.5))
    assert not (tmp_path / "bad.pth").exists() and temp_files(tmp_path) == []


class Payload:  # a pickled object of a class: torch.load(weights_only=True) refuses it
    pass


def test_load_errors(tmp_path):
    model = tiny_model()
    with pytest.raises(FileNotFoundError, match="checkpoint_path="):
        load_checkpoint(tmp_path / "missing.pth", model)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "notes.txt", model)
    torch.save({"anything": Payload()}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match="not loaded for safety") as info:
        load_checkpoint(tmp_path / "pickle.pth", model)
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)  # never that advice
    torch.save(model.state_dict(), tmp_path / "bare.pth")  # the book's torch.save(model.state_dict(), ...)
    with pytest.raises(ValueError, match="bare state_dict"):
        load_checkpoint(tmp_path / "bare.pth", model)
    torch.save({"epoch": 1}, tmp_path / "dict.pth")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "dict.pth", model)
    save_checkpoint(tmp_path / "no_opt.pth", model)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "no_opt.pth", model, torch.optim.AdamW(model.parameters()))


def test_config_mismatch_names_the_keys(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "ckpt.pth", model, config=TINY_CONFIG)
    other = {**TINY_CONFIG, "emb_dim": 32, "n_layers": 3}
    with pytest.raises(ValueError, match=r"config mismatch .* in emb_dim, n_layers \(emb_dim: checkpoint 64, given 32"):
        load_checkpoint(path, GPTModel(other), config=other)
    # without a config to compare, a model of another shape still gets a clear error
    with pytest.raises(ValueError, match="architecture does not match"):
        load_checkpoint(path, GPTModel(other))


@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch, interruption):
    model, optimizer = trained_pair()
    path = save_checkpoint(tmp_path / "ckpt.pth", model, optimizer, epoch=1)
    old_bytes = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # write part of a file, then fail
        raise interruption

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(type(interruption)):
        save_checkpoint(path, model, optimizer, epoch=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == old_bytes  # the old checkpoint is intact...
    assert temp_files(tmp_path) == []  # ...and no temporary file is left
    assert load_checkpoint(path, tiny_model())["epoch"] == 1


def test_rng_state_round_trip():
    state = get_rng_state()
    expected = (torch.rand(3), random.random())
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def run_training(tokenizer, num_epochs, **kwargs):
    torch.manual_seed(123)
    train, val = tiny_loaders(tokenizer)
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    losses = train_model_resumable(model, train, val, optimizer, "cpu", num_epochs, eval_freq=2, eval_iter=2,
                                   start_context="Every effort", tokenizer=tokenizer, progress=False, **kwargs)
    return model, losses


def test_resume_equals_uninterrupted_training(tmp_path, tokenizer, capsys):
    model_a, losses_a = run_training(tokenizer, 2)  # dropout 0.1 and a shuffled loader: the RNG matters
    printed_a = capsys.readouterr().out.splitlines()
    path = tmp_path / "run.pth"
    run_training(tokenizer, 1, checkpoint_path=path, config=TINY_CONFIG)
    capsys.readouterr()

    # A fresh start: other seed, fresh model and optimizer, other RNG state; then resume for epoch 2
    torch.manual_seed(999)
    train, val = tiny_loaders(tokenizer)
    model_b = tiny_model(seed=7)
    optimizer = torch.optim.AdamW(model_b.parameters(), lr=4e-4, weight_decay=0.1)
    torch.rand(10)
    losses_b = train_model_resumable(model_b, train, val, optimizer, "cpu", 2, eval_freq=2, eval_iter=2,
                                     start_context="Every effort", tokenizer=tokenizer, progress=False,
                                     checkpoint_path=path, resume=True, config=TINY_CONFIG)
    assert losses_b == losses_a  # train_losses, val_losses, track_tokens_seen: exactly equal
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert load_checkpoint(path, tiny_model())["epoch"] == 2
    printed_b = capsys.readouterr().out.splitlines()  # epoch 2 only, as run A printed it
    assert printed_b == printed_a[-len(printed_b):] and printed_b[0].startswith("Ep 2 ")


def test_resume_errors(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="resume=True needs checkpoint_path"):
        run_training(tokenizer, 1, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_training(tokenizer, 1, checkpoint_path=tmp_path / "none.pth", resume=True)


def test_training_learns_a_tiny_text(tokenizer, capsys):
    torch.manual_seed(123)
    train = DataLoader(GPTDatasetV1(TEXT, tokenizer, 16, 4), batch_size=4, shuffle=True, drop_last=True)
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.eval()
    with torch.no_grad():
        before = calc_loss_loader(train, model, "cpu")
    train_model_simple(model, train, train, optimizer, "cpu", num_epochs=3, eval_freq=100, eval_iter=1,
                       start_context="Every effort", tokenizer=tokenizer)
    model.eval()
    with torch.no_grad():
        after = calc_loss_loader(train, model, "cpu")
    assert before > 10.5  # about ln(50257) = 10.8 untrained
    assert after < 2.0, f"training loss {after:.3f} after 3 epochs (1.27 when written)"


def test_resumable_loop_is_the_books_loop(tokenizer, capsys):
    """Without a checkpoint, train_model_resumable prints, returns and trains exactly as train_model_simple."""
    results = []
    for train_fn, extra in ((train_model_simple, {}), (train_model_resumable, {"progress": False})):
        torch.manual_seed(123)
        train, val = tiny_loaders(tokenizer)
        model = tiny_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        losses = train_fn(model, train, val, optimizer, "cpu", 2, eval_freq=2, eval_iter=2,
                          start_context="Every effort", tokenizer=tokenizer, **extra)
        results.append((losses, capsys.readouterr().out, model.state_dict()))
    (losses_a, out_a, weights_a), (losses_b, out_b, weights_b) = results
    assert losses_a == losses_b and out_a == out_b and out_a.count("Ep ") >= 3
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_a_failing_sample_does_not_lose_the_epoch(tmp_path, tokenizer, monkeypatch):
    import llmscratch.pretraining as pretraining

    def broken_sample(*args):
        raise RuntimeError("the sample failed")

    monkeypatch.setattr(pretraining, "generate_and_print_sample", broken_sample)
    path = tmp_path / "run.pth"
    with pytest.raises(RuntimeError, match="the sample failed"):
        run_training(tokenizer, 1, checkpoint_path=path, config=TINY_CONFIG)
    assert load_checkpoint(path, tiny_model())["epoch"] == 1  # saved before the sample


def test_random_work_after_the_save_is_replayed_on_resume(tmp_path):
    """An ``after`` that draws random numbers (e.g. accuracy on a shuffled loader) is saved again."""
    def epochs(path, num_epochs, resume):
        model = tiny_model()
        optimizer = torch.optim.AdamW(model.parameters())
        run = ResumableRun(model, optimizer, path, resume=resume, progress=False)
        draws = []
        for _ in run.epochs(num_epochs):
            run.end_epoch(after=lambda: draws.append(torch.rand(1).item()))
        return draws, torch.rand(1).item()

    torch.manual_seed(1)
    all_draws, last = epochs(tmp_path / "a.pth", 3, resume=False)
    torch.manual_seed(1)
    epochs(tmp_path / "b.pth", 2, resume=False)
    torch.manual_seed(99)
    resumed_draws, resumed_last = epochs(tmp_path / "b.pth", 3, resume=True)
    assert resumed_draws == all_draws[2:] and resumed_last == last


def test_resuming_checks_the_saved_fields(tmp_path, tokenizer):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "bare.pth", model, optimizer, epoch=1)
    with pytest.raises(ValueError, match=r"lacks global_step, tokens_seen, rng_state: .* start a new run"):
        ResumableRun(model, optimizer, tmp_path / "bare.pth", resume=True)
    # a checkpoint of the first layout (the chapter-5 lists at the top level) still resumes
    save_checkpoint(tmp_path / "old.pth", model, optimizer, epoch=1, global_step=4, tokens_seen=64,
                    train_losses=[9.0], val_losses=[9.5], track_tokens_seen=[16], rng_state=get_rng_state())
    run = ResumableRun(model, optimizer, tmp_path / "old.pth", resume=True)
    assert run.state.epoch == 1 and run.state.history["val_losses"] == [9.5] and list(run.epochs(3)) == [1, 2]


@pytest.mark.parametrize("version, message", [(99, "newer than this llmscratch"), ("x", "no valid checkpoint version")])
def test_other_checkpoint_versions_are_clear_errors(tmp_path, version, message):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "ckpt.pth", model)
    payload = torch.load(path, weights_only=True)
    payload["version"] = version
    torch.save(payload, path)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path, model)
    del payload["version"], payload["training_state"]
    payload["version"] = 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match="lacks training_state"):
        load_checkpoint(path, model)
