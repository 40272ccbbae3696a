"""Appendix A (PyTorch): the book's printed CPU numbers, compute_accuracy, and the DDP script with 2 processes."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from llmscratch.appendix_a import (
    BOOK_NUM_PARAMS, BOOK_NUM_PARAMS_2_2, BOOK_TRAIN_LOSSES, NeuralNetwork, ToyDataset, compute_accuracy, toy_data,
    toy_loaders, train_toy_model,
)
from llmscratch.ddp_script import _check_run, group_by_rank, launch, run_ddp_script
from llmscratch.ports import free_port

pytestmark = pytest.mark.usefixtures("one_thread")

# A.7: the book's printed logits of the trained model on X_train (CPU, seed 123).
BOOK_TRAIN_LOGITS = torch.tensor([
    [2.8569, -4.1618],
    [2.5382, -3.7548],
    [2.0944, -3.1820],
    [-1.4814, 1.4816],
    [-1.7176, 1.7342],
])


def num_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_toy_data_and_parameter_counts_are_the_books():
    X_train, y_train, X_test, y_test = toy_data()
    assert X_train.shape == (5, 2) and y_train.tolist() == [0, 0, 0, 1, 1]
    assert X_test.shape == (2, 2) and y_test.tolist() == [0, 1]
    assert len(ToyDataset(X_train, y_train)) == 5
    assert num_params(NeuralNetwork(50, 3)) == BOOK_NUM_PARAMS == 2213  # A.5
    assert num_params(NeuralNetwork(2, 2)) == BOOK_NUM_PARAMS_2_2 == 752  # exercise A.3


def test_seeded_forward_pass_is_the_books():
    torch.manual_seed(123)
    model = NeuralNetwork(50, 3)
    torch.manual_seed(123)
    X = torch.rand((1, 50))
    with torch.no_grad():
        out = model(X)
    torch.testing.assert_close(out, torch.tensor([[-0.1262, 0.1080, -0.1792]]), atol=1e-4, rtol=0)


def test_training_gives_the_books_losses_logits_and_accuracy():
    train_loader, test_loader = toy_loaders()
    model, losses = train_toy_model(train_loader, num_epochs=3)
    assert [round(loss, 2) for loss in losses] == BOOK_TRAIN_LOSSES
    with torch.no_grad():
        logits = model(toy_data()[0])
    torch.testing.assert_close(logits, BOOK_TRAIN_LOGITS, atol=1e-4, rtol=0)
    assert compute_accuracy(model, train_loader, device="cpu") == 1.0
    assert compute_accuracy(model, test_loader, device="cpu") == 1.0


class _AlwaysClass0(torch.nn.Module):
    def forward(self, x):
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], dim=1)  # (batch, 2): class 0 wins


def test_compute_accuracy_counts_every_example_of_every_batch():
    X_train, y_train, _, _ = toy_data()
    loader = DataLoader(ToyDataset(X_train, y_train), batch_size=2)  # batches of 2, 2 and 1
    assert compute_accuracy(_AlwaysClass0(), loader, device="cpu") == pytest.approx(3 / 5)  # three labels are 0


def test_two_ranks_of_two_see_the_batch_of_four_of_one_process():
    """Why the 2-process run equals one process with batches of 4: the sampler's shards, taken together."""
    dataset = ToyDataset(*toy_data()[:2])
    for epoch in range(3):
        shards = []
        for rank in range(2):
            sampler = DistributedSampler(dataset, num_replicas=2, rank=rank)
            sampler.set_epoch(epoch)
            shards.append(list(sampler)[:2])  # drop_last: each rank's one batch of 2
        whole = DistributedSampler(dataset, num_replicas=1, rank=0)
        whole.set_epoch(epoch)
        assert sorted(shards[0] + shards[1]) == sorted(list(whole)[:4])
        assert not set(shards[0]) & set(shards[1]), "the ranks' batches do not overlap"


def test_group_by_rank_and_run_checks():
    log = "header\n[CPU1] b\n[CPU0] a\n[CPU1] d\n[CPU0] c"
    assert group_by_rank(log).splitlines() == ["header", "[CPU0] a", "[CPU0] c", "[CPU1] b", "[CPU1] d"]
    with pytest.raises(ValueError, match="batch_size from 1 to 3"):
        _check_run(world_size=2, batch_size=4, num_epochs=3)
    with pytest.raises(ValueError, match="at least 1 process"):
        _check_run(world_size=0, batch_size=2, num_epochs=3)


@pytest.mark.slow  # three Python processes start: 10-30 s on 2 busy cores
def test_ddp_script_with_two_gloo_processes_equals_one_process(tmp_path, monkeypatch, capsys):
    two = run_ddp_script(world_size=2, batch_size=2, save_to=tmp_path / "two.pth")  # mp.spawn, 2 processes
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    launch(1, batch_size=4, save_to=tmp_path / "one.pth")  # one process: this one, nothing spawned
    one = capsys.readouterr().out
    for rank in (0, 1):
        for metric in ("Training", "Test"):
            assert re.search(rf"^\[[CG]PU{rank}\] {metric} accuracy 1\.0$", two, re.M), two
    assert re.search(r"^\[[CG]PU0\] Test accuracy 1\.0$", one, re.M), one
    assert two.count("Epoch: ") == 6 and one.count("Epoch: ") == 3  # 3 epochs, one batch per rank and epoch
    weights_two = torch.load(tmp_path / "two.pth", weights_only=True)
    weights_one = torch.load(tmp_path / "one.pth", weights_only=True)
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name].cpu(), tensor.cpu(), atol=1e-5, rtol=0)  # GPU: other rounding
