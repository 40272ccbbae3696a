"""PyTorch in one appendix: the book's appendix A code (a small network, a toy data set, the training loop).

Introduced in ch01_intro, appendix A (``ch01_intro/appendix_a_pytorch.ipynb``), read before chapter 2:

- ``NeuralNetwork`` (A.5): a multilayer perceptron with two hidden layers of 30 and 20 units;
- ``ToyDataset`` (A.6): a ``Dataset`` over feature and label tensors;
- ``compute_accuracy`` (A.7, with the ``device`` argument of A.9.2): the fraction of correct predictions.

Beyond the book, for the notebook's comparisons, the tests and the DDP script (``llmscratch.ddp_script``):

- ``toy_data``: the book's five training and two test points (A.6);
- ``toy_loaders``: A.6's data loaders (batches of 2, shuffled training set without its last, incomplete batch);
- ``train_toy_model``: A.7's training loop as one call, returning the model and the loss of every batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

# The book's printed results on the CPU (seed 123), checked by tests/test_appendix_a.py.
BOOK_NUM_PARAMS = 2213  # NeuralNetwork(50, 3), A.5
BOOK_NUM_PARAMS_2_2 = 752  # NeuralNetwork(2, 2), exercise A.3
BOOK_TRAIN_LOSSES = [0.75, 0.65, 0.44, 0.13, 0.03, 0.00]  # A.7: 3 epochs x 2 batches, printed with 2 decimals


class NeuralNetwork(torch.nn.Module):
    """The book's multilayer perceptron (introduced in ch01_intro, appendix A, A.5): 2 hidden layers, ReLU."""

    def __init__(self, num_inputs, num_outputs):
        super().__init__()

        self.layers = torch.nn.Sequential(

            # 1st hidden layer
            torch.nn.Linear(num_inputs, 30),
            torch.nn.ReLU(),

            # 2nd hidden layer
            torch.nn.Linear(30, 20),
            torch.nn.ReLU(),

            # output layer
            torch.nn.Linear(20, num_outputs),
        )

    def forward(self, x):
        logits = self.layers(x)  # (batch, num_inputs) -> (batch, num_outputs)
        return logits


class ToyDataset(Dataset):
    """The book's data set of (features, label) pairs (introduced in ch01_intro, appendix A, A.6)."""

    def __init__(self, X, y):
        self.features = X
        self.labels = y

    def __getitem__(self, index):
        one_x = self.features[index]
        one_y = self.labels[index]
        return one_x, one_y

    def __len__(self):
        return self.labels.shape[0]


def compute_accuracy(model, dataloader, device):
    """The fraction of correct predictions (introduced in ch01_intro, appendix A, A.7; ``device`` from A.9.2)."""

    model = model.eval()
    correct = 0.0
    total_examples = 0

    for idx, (features, labels) in enumerate(dataloader):

        features, labels = features.to(device), labels.to(device) # New

        with torch.no_grad():
            logits = model(features)

        predictions = torch.argmax(logits, dim=1)
        compare = labels == predictions
        correct += torch.sum(compare)
        total_examples += len(compare)

    return (correct / total_examples).item()


def toy_data():
    """The book's toy data (A.6): ``X_train`` (5, 2), ``y_train`` (5,), ``X_test`` (2, 2), ``y_test`` (2,)."""
    X_train = torch.tensor([
        [-1.2, 3.1],
        [-0.9, 2.9],
        [-0.5, 2.6],
        [2.3, -1.1],
        [2.7, -1.5]
    ])
    y_train = torch.tensor([0, 0, 0, 1, 1])
    X_test = torch.tensor([
        [-0.8, 2.8],
        [2.6, -1.6],
    ])
    y_test = torch.tensor([0, 1])
    return X_train, y_train, X_test, y_test


def toy_loaders(batch_size=2, seed=123):
    """A.6's loaders: the training set shuffled, in batches of ``batch_size``, its last incomplete batch dropped
    (``drop_last=True``); the test set in order. ``seed`` seeds the global generator first, as the book does."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of examples per batch, got {batch_size}")
    X_train, y_train, X_test, y_test = toy_data()
    torch.manual_seed(seed)
    train_loader = DataLoader(ToyDataset(X_train, y_train), batch_size=batch_size, shuffle=True, num_workers=0,
                              drop_last=True)
    test_loader = DataLoader(ToyDataset(X_test, y_test), batch_size=batch_size, shuffle=False, num_workers=0)
    return train_loader, test_loader


def train_toy_model(train_loader, num_epochs=3, lr=0.5, seed=123, device="cpu"):
    """A.7's training loop in one call: seed, ``NeuralNetwork(2, 2)``, SGD, ``num_epochs`` epochs.

    Returns ``(model, losses)``, the loss of every batch in order (what the book prints, unrounded). With the
    book's loaders and settings on the CPU, the rounded losses are ``BOOK_TRAIN_LOSSES``.
    """
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1, got {num_epochs}")
    if len(train_loader) == 0:
        raise ValueError("train_loader yields no batch: use a batch_size no larger than the training set")
    torch.manual_seed(seed)
    model = NeuralNetwork(num_inputs=2, num_outputs=2).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(num_epochs):
        model.train()
        for features, labels in train_loader:
            features, labels = features.to(device), labels.to(device)
            logits = model(features)  # (batch, 2)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    return model, losses
