"""The spam classifier beyond the book's listings: turning a GPT into a classifier, judging it as a filter,
training it resumably, saving and loading it.

Introduced in ch06_finetune_classification (6.5 to 6.8). The book does these steps inline in its notebook;
here each is one function, with the exercises' variants as options:

- ``prepare_classifier``: the book's freeze, new ``out_head`` and unfreezing of the last transformer block and
  the final norm (6.5); ``trainable_layers="all"`` trains the whole model (exercise 6.2), ``"none"`` only the
  new head;
- ``classification_metrics`` and ``plot_confusion_matrix``: precision, recall and F1 of the spam class and the
  confusion matrix, which say more than the accuracy when spam is rare, as in a real inbox;
- ``train_classifier_resumable``: ``train_classifier_simple``'s loop with atomic per-epoch checkpoints and a
  progress bar (``llmscratch.resumable.ResumableRun``), for the command line;
- ``save_classifier`` / ``load_classifier``: one file with the weights and what using them needs (the model's
  config, the padded length, the token position).
"""

from __future__ import annotations

import torch

from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .checkpoints import describe_kind, load_checkpoint, read_training_state, save_checkpoint
from .classification import (
    TOKEN_POSITIONS, _check_classifier_training, _check_token_position, calc_accuracy_loader, calc_loss_batch,
    evaluate_model,
)
from .gpt import GPTModel
from .resumable import ResumableRun

TRAINABLE_LAYERS = ("last_block", "all", "none")
CLASSIFIER_KIND = "classifier"  # training_state["kind"] of a file written by save_classifier


def prepare_classifier(model, num_classes=2, trainable_layers="last_block"):
    """Turn a ``GPTModel`` into a classifier, in place, and return it (ch06_finetune_classification, 6.5).

    As the book: freeze every parameter, replace ``out_head`` by a new ``Linear(emb_dim, num_classes)`` (on the
    model's device; seed first, ``torch.manual_seed(123)``, for the book's head), then make the last
    transformer block and the final norm trainable again (``trainable_layers="last_block"``). ``"all"`` trains
    every parameter (exercise 6.2), ``"none"`` only the new head.
    """
    if trainable_layers not in TRAINABLE_LAYERS:
        raise ValueError(f"trainable_layers must be one of {TRAINABLE_LAYERS}, got {trainable_layers!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    for param in model.parameters():
        param.requires_grad = trainable_layers == "all"
    old_head = model.out_head
    model.out_head = torch.nn.Linear(in_features=old_head.in_features, out_features=num_classes,
                                     device=old_head.weight.device, dtype=old_head.weight.dtype)
    if trainable_layers == "last_block":
        for param in model.trf_blocks[-1].parameters():
            param.requires_grad = True
        for param in model.final_norm.parameters():
            param.requires_grad = True
    return model


def count_trainable_parameters(model):
    """Number of parameters that training updates (``requires_grad``) (ch06_finetune_classification, 6.5)."""
    return sum(param.numel() for param in model.parameters() if param.requires_grad)


# --- judging the classifier as a spam filter ---------------------------------------------------------------------


def predict_loader(data_loader, model, device, *, token_position="last"):
    """``(labels, predictions)``: two 1-D tensors over every example of ``data_loader``, in eval mode
    (ch06_finetune_classification, beyond the book)."""
    _check_token_position(token_position)
    model.eval()
    labels, predictions = [], []
    with torch.no_grad():
        for input_batch, target_batch in data_loader:
            logits = model(input_batch.to(device))[:, TOKEN_POSITIONS[token_position], :]
            predictions.append(torch.argmax(logits, dim=-1).cpu())
            labels.append(target_batch.cpu())
    if not labels:
        raise ValueError("data_loader has no batches: nothing to predict")
    return torch.cat(labels), torch.cat(predictions)


def confusion_matrix(labels, predictions, num_classes=2):
    """Counts as a (num_classes, num_classes) tensor: row = true class, column = predicted class, so for spam
    (class 1) ``[[true negatives, false positives], [false negatives, true positives]]``
    (ch06_finetune_classification, beyond the book)."""
    labels, predictions = torch.as_tensor(labels).long(), torch.as_tensor(predictions).long()
    if labels.shape != predictions.shape or labels.dim() != 1:
        raise ValueError(f"labels {tuple(labels.shape)} and predictions {tuple(predictions.shape)} must be two "
                         "1-D sequences of the same length")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.numel() and not 0 <= int(values.min()) <= int(values.max()) < num_classes:
            raise ValueError(f"{name} must be class ids from 0 to {num_classes - 1}")
    return torch.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).view(num_classes, -1)


def precision_recall_f1(matrix, positive_class=1):
    """Precision, recall and F1 of ``positive_class`` from a confusion matrix (ch06_finetune_classification,
    beyond the book).

    Precision: of the messages flagged as spam, the share that is spam (how often the filter is right when it
    hides a message). Recall: of the spam messages, the share flagged (how much spam gets through: 1 - recall).
    F1: their harmonic mean. A ratio whose denominator is 0 (nothing flagged, no spam) counts as 0.0.
    """
    matrix = torch.as_tensor(matrix)
    true_positives = int(matrix[positive_class, positive_class])
    flagged, actual = int(matrix[:, positive_class].sum()), int(matrix[positive_class].sum())
    precision = true_positives / flagged if flagged else 0.0
    recall = true_positives / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def classification_metrics(data_loader, model, device, *, positive_class=1, token_position="last"):
    """Accuracy, and precision, recall and F1 of ``positive_class`` (spam), with the confusion matrix as a list
    of lists, over every example of ``data_loader`` (ch06_finetune_classification, beyond the book)."""
    labels, predictions = predict_loader(data_loader, model, device, token_position=token_position)
    num_classes = max(2, positive_class + 1, int(labels.max()) + 1, int(predictions.max()) + 1)
    matrix = confusion_matrix(labels, predictions, num_classes)
    return {"accuracy": float((labels == predictions).float().mean()),
            **precision_recall_f1(matrix, positive_class),
            "confusion_matrix": matrix.tolist(), "num_examples": len(labels)}


def plot_confusion_matrix(matrix, class_names=("não spam", "spam"), title="Matriz de confusão"):
    """The confusion matrix as a 4 x 3.5 in heat map with the counts written in the cells, Portuguese labels;
    returns the figure, already closed (ch06_finetune_classification, beyond the book)."""
    import matplotlib.pyplot as plt

    matrix = torch.as_tensor(matrix)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(class_names):
        raise ValueError(f"matrix must be square with one row per class name ({len(class_names)}), "
                         f"got shape {tuple(matrix.shape)}")
    fig, ax = plt.subplots(figsize=(4, 3.5))
    image = ax.imshow(matrix.numpy(), cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("Classe prevista")
    ax.set_ylabel("Classe verdadeira")
    threshold = matrix.max().item() / 2
    for row in ticks:
        for col in ticks:
            count = int(matrix[row, col])
            ax.text(col, row, f"{count:,}".replace(",", "."), ha="center", va="center",
                    color="white" if count > threshold else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    plt.close(fig)
    return fig


# --- resumable training -------------------------------------------------------------------------------------------


def train_classifier_resumable(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq,
                               eval_iter, *, token_position="last", checkpoint_path=None, resume=False,
                               config=None, run_settings=None, progress=True):
    """``train_classifier_simple`` that saves itself after every epoch and can resume
    (ch06_finetune_classification, beyond the book).

    The same steps, printed lines and returned ``train_losses, val_losses, train_accs, val_accs,
    examples_seen`` as ``train_classifier_simple`` (a test checks it), plus a ``ResumableRun``: with
    ``checkpoint_path`` the model, the optimizer, the history and the random generators' states are saved
    atomically after every epoch's accuracies; ``resume=True`` goes on from there up to ``num_epochs``
    (``config`` must match the saved one; build the classifier with ``prepare_classifier`` before loading).
    """
    _check_classifier_training(train_loader, num_epochs, eval_freq, eval_iter, token_position)
    run = ResumableRun(model, optimizer, checkpoint_path, resume=resume, config=config, device=device,
                       run_settings=run_settings, progress=progress)
    state = run.state  # state.tokens_seen counts examples here
    for epoch in run.epochs(num_epochs):
        run.train_epoch(
            epoch, train_loader, eval_freq=eval_freq, count=lambda input_batch: input_batch.shape[0],
            batch_loss=lambda inputs, targets: calc_loss_batch(inputs, targets, model, device,
                                                               token_position=token_position),
            evaluate=lambda: evaluate_model(model, train_loader, val_loader, device, eval_iter,
                                            token_position=token_position))
        # the accuracies draw the training loader's shuffle: computed before the save, so a resumed run draws alike
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter,
                                              token_position=token_position)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter,
                                            token_position=token_position)
        print(f"Training accuracy: {train_accuracy*100:.2f}% | ", end="")
        print(f"Validation accuracy: {val_accuracy*100:.2f}%")
        state.log(train_accs=train_accuracy, val_accs=val_accuracy)
        run.end_epoch()
    history = state.history
    return (*(list(history.get(name, [])) for name in ("train_losses", "val_losses", "train_accs", "val_accs")),
            state.tokens_seen)


# --- saving and loading a classifier ------------------------------------------------------------------------------


def save_classifier(path, model, config, *, max_length, token_position="last", pad_token_id=GPT2_ENDOFTEXT_ID):
    """Save a classifier with what using it needs, atomically; returns the path (ch06_finetune_classification, 6.8).

    The book saves ``model.state_dict()``; this file (``llmscratch.checkpoints``' format, loaded with
    ``weights_only=True``) also holds ``config`` (the ``GPTModel`` config), the number of classes, the padded
    length ``max_length`` (``train_dataset.max_length``), the token position and the padding id.
    """
    _check_token_position(token_position)
    return save_checkpoint(path, model, None, kind=CLASSIFIER_KIND, config=dict(config),
                           num_classes=model.out_head.out_features, max_length=int(max_length),
                           token_position=token_position, pad_token_id=int(pad_token_id))


def load_classifier(path, device="cpu"):
    """``(model, info)`` from a file of ``save_classifier``: the classifier on ``device`` in eval mode, and a dict
    with ``config``, ``num_classes``, ``max_length``, ``token_position`` and ``pad_token_id``, e.g. for
    ``classify_review(text, model, tokenizer, device, max_length=info["max_length"])``
    (ch06_finetune_classification, 6.8)."""
    state = read_training_state(path)
    if state.get("kind") != CLASSIFIER_KIND:
        raise ValueError(f"{path} is a checkpoint but not a classifier saved by save_classifier "
                         f"(kind {state.get('kind')!r}): it is {describe_kind(state.get('kind'))}")
    model = prepare_classifier(GPTModel(state["config"]), state["num_classes"], trainable_layers="none")
    load_checkpoint(path, model, map_location="cpu", config=state["config"])
    info = {key: state[key] for key in ("config", "num_classes", "max_length", "token_position", "pad_token_id")}
    return model.to(device).eval(), info
