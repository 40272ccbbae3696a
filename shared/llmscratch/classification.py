"""Finetuning a GPT for classification, chapter 6: the spam data set, the last token's loss and accuracy, the
training loop, the plots and ``classify_review``.

Introduced in ch06_finetune_classification. The functions and the class with the book's names are the book's
listings with a call to a checking helper at the top, and two options the exercises need (below).
``plot_values`` differs more: Portuguese labels, a 5 x 3 in figure returned (closed) instead of shown and saved
as a PDF. The options:

- ``token_position="last"`` (keyword-only, the book's choice) or ``"first"``: which token's logits classify
  (exercise 6.3);
- ``SpamDataset(..., max_length=1024)``: pad every text to the full context (exercise 6.1).

Chapter 5 has functions of the same names (``calc_loss_batch``, ``calc_loss_loader``, ``evaluate_model``) that
work on next-token predictions; ``from llmscratch import calc_loss_batch`` gives chapter 5's, this module
chapter 6's. Beyond the book, beside this module: ``llmscratch.classification_data`` (the data through the
course's registry, the CSV files, the loaders, a test set with the natural share of spam) and
``llmscratch.classifier`` (turning a GPT into a classifier, precision/recall/F1, the confusion matrix, a
resumable training loop, saving and loading a classifier).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import Dataset

from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .gpt2_tokenizer import _check_endoftext
from .pretraining import _check_num_batches, _check_training_args

# Which token's logits classify a text: the last one sees the whole text (causal attention), the first one only
# itself (exercise 6.3).
TOKEN_POSITIONS = {"last": -1, "first": 0}


def _check_token_position(token_position):
    if token_position not in TOKEN_POSITIONS:
        raise ValueError(f"token_position must be one of {sorted(TOKEN_POSITIONS)}, got {token_position!r}")


# --- the data (6.2, 6.3) --------------------------------------------------------------------------------------


def _check_spam_frame(df):
    if not isinstance(df, pd.DataFrame) or "Label" not in df.columns:
        raise ValueError("df must be a pandas DataFrame with a 'Label' column, as read by "
                         "pd.read_csv(path, sep='\\t', header=None, names=['Label', 'Text'])")
    num_spam, num_ham = (int((df["Label"] == label).sum()) for label in ("spam", "ham"))
    if num_spam == 0 or num_ham < num_spam:
        raise ValueError(f"df has {num_spam} 'spam' and {num_ham} 'ham' rows: balancing needs at least one spam "
                         "row and at least as many ham rows, with the labels as text (before mapping them to 0/1)")


def create_balanced_dataset(df):
    """As many ham rows (a random sample, ``random_state=123``) as spam rows: 747 + 747
    (ch06_finetune_classification, 6.2)."""
    _check_spam_frame(df)  # beyond the book: a clear error for a frame that cannot be balanced

    # Count the instances of "spam"
    num_spam = df[df["Label"] == "spam"].shape[0]

    # Randomly sample "ham" instances to match the number of "spam" instances
    ham_subset = df[df["Label"] == "ham"].sample(num_spam, random_state=123)

    # Combine ham "subset" with "spam"
    balanced_df = pd.concat([ham_subset, df[df["Label"] == "spam"]])

    return balanced_df


def _check_split(df, train_frac, validation_frac):
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if not (0 < train_frac < 1 and 0 <= validation_frac < 1 and train_frac + validation_frac <= 1):
        raise ValueError(f"train_frac ({train_frac}) and validation_frac ({validation_frac}) must be fractions "
                         "with train_frac > 0 and a sum of at most 1 (the rest is the test set), e.g. 0.7 and 0.1")


def random_split(df, train_frac, validation_frac):
    """Shuffle (``random_state=123``) and cut into train, validation and test frames
    (ch06_finetune_classification, 6.2).

    With 0.7 and 0.1 the balanced 1,494 rows give 1,045, 149 and 300.
    """
    _check_split(df, train_frac, validation_frac)  # beyond the book: fractions that make sense
    # Shuffle the entire DataFrame
    df = df.sample(frac=1, random_state=123).reset_index(drop=True)

    # Calculate split indices
    train_end = int(len(df) * train_frac)
    validation_end = train_end + int(len(df) * validation_frac)

    # Split the DataFrame
    train_df = df[:train_end]
    validation_df = df[train_end:validation_end]
    test_df = df[validation_end:]

    return train_df, validation_df, test_df


def _check_dataset_args(max_length, pad_token_id):
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be None (the longest text) or a positive number of tokens, "
                         f"got {max_length!r}")
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or pad_token_id < 0:
        raise ValueError(f"pad_token_id must be a token id (>= 0), got {pad_token_id!r}")


class SpamDataset(Dataset):
    """Texts of a CSV file (columns ``Label``, 0 or 1, and ``Text``) as token ids, truncated to ``max_length``
    and padded with ``pad_token_id`` (``<|endoftext|>``); ``max_length=None`` pads to the longest text
    (ch06_finetune_classification, 6.3). Items are ``(token_ids, label)`` tensors."""

    def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id=GPT2_ENDOFTEXT_ID):
        _check_dataset_args(max_length, pad_token_id)  # beyond the book: clear errors for bad sizes
        self.data = pd.read_csv(csv_file)

        # Pre-tokenize texts
        self.encoded_texts = [
            tokenizer.encode(text) for text in self.data["Text"]
        ]

        if max_length is None:
            self.max_length = self._longest_encoded_length()
        else:
            self.max_length = max_length
            # Truncate sequences if they are longer than max_length
            self.encoded_texts = [
                encoded_text[:self.max_length]
                for encoded_text in self.encoded_texts
            ]

        # Pad sequences to the longest sequence
        self.encoded_texts = [
            encoded_text + [pad_token_id] * (self.max_length - len(encoded_text))
            for encoded_text in self.encoded_texts
        ]

    def __getitem__(self, index):
        encoded = self.encoded_texts[index]
        label = self.data.iloc[index]["Label"]
        return (
            torch.tensor(encoded, dtype=torch.long),
            torch.tensor(label, dtype=torch.long)
        )

    def __len__(self):
        return len(self.data)

    def _longest_encoded_length(self):
        max_length = 0
        for encoded_text in self.encoded_texts:
            encoded_length = len(encoded_text)
            if encoded_length > max_length:
                max_length = encoded_length
        return max_length
        # Note: A more pythonic version to implement this method
        # is the following, which is also used in the next chapter:
        # return max(len(encoded_text) for encoded_text in self.encoded_texts)


# --- accuracy and loss on the last token (6.6) -------------------------------------------------------------------


def _check_accuracy_args(data_loader, num_batches, token_position):
    _check_num_batches(num_batches)
    _check_token_position(token_position)
    if len(data_loader) == 0:
        raise ValueError("data_loader has no batches, so there is no accuracy to compute (a data set smaller than "
                         "one batch with drop_last=True?)")


def calc_accuracy_loader(data_loader, model, device, num_batches=None, *, token_position="last"):
    """Share of correct predictions over the first ``num_batches`` batches (all by default), in eval mode
    (ch06_finetune_classification, 6.6)."""
    _check_accuracy_args(data_loader, num_batches, token_position)  # beyond the book: clear errors
    model.eval()
    correct_predictions, num_examples = 0, 0

    if num_batches is None:
        num_batches = len(data_loader)
    else:
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            input_batch, target_batch = input_batch.to(device), target_batch.to(device)

            with torch.no_grad():
                logits = model(input_batch)[:, TOKEN_POSITIONS[token_position], :]  # Logits of last output token
            predicted_labels = torch.argmax(logits, dim=-1)

            num_examples += predicted_labels.shape[0]
            correct_predictions += (predicted_labels == target_batch).sum().item()
        else:
            break
    return correct_predictions / num_examples


def _check_class_batch(input_batch, target_batch, token_position):
    _check_token_position(token_position)
    if input_batch.dim() != 2 or target_batch.dim() != 1 or input_batch.shape[0] != target_batch.shape[0]:
        raise ValueError(
            f"input_batch {tuple(input_batch.shape)} must be (batch_size, num_tokens) and target_batch "
            f"{tuple(target_batch.shape)} (batch_size,): one class label per text, as SpamDataset gives "
            "(chapter 5's next-token targets belong to llmscratch.pretraining.calc_loss_batch)"
        )


def calc_loss_batch(input_batch, target_batch, model, device, *, token_position="last"):
    """Cross-entropy of the last token's class logits for one batch (ch06_finetune_classification, 6.6)."""
    _check_class_batch(input_batch, target_batch, token_position)  # beyond the book: shapes that fit
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)[:, TOKEN_POSITIONS[token_position], :]  # Logits of last output token
    loss = torch.nn.functional.cross_entropy(logits, target_batch)
    return loss


def _check_loss_loader_args(num_batches, token_position):
    _check_num_batches(num_batches)
    _check_token_position(token_position)


def calc_loss_loader(data_loader, model, device, num_batches=None, *, token_position="last"):
    """Average ``calc_loss_batch`` over the first ``num_batches`` batches (all by default); ``nan`` for an empty
    loader (ch06_finetune_classification, 6.6)."""
    _check_loss_loader_args(num_batches, token_position)  # beyond the book: num_batches=0 would divide by zero
    total_loss = 0.
    if len(data_loader) == 0:
        return float("nan")
    elif num_batches is None:
        num_batches = len(data_loader)
    else:
        # Reduce the number of batches to match the total number of batches in the data loader
        # if num_batches exceeds the number of batches in the data loader
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            loss = calc_loss_batch(input_batch, target_batch, model, device, token_position=token_position)
            total_loss += loss.item()
        else:
            break
    return total_loss / num_batches


# --- training (6.7) ------------------------------------------------------------------------------------------------


def evaluate_model(model, train_loader, val_loader, device, eval_iter, *, token_position="last"):
    """Training and validation loss over ``eval_iter`` batches each, in eval mode
    (ch06_finetune_classification, 6.7)."""
    _check_token_position(token_position)  # beyond the book: a clear error for a bad option
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter, token_position=token_position)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter, token_position=token_position)
    model.train()
    return train_loss, val_loss


def _check_classifier_training(train_loader, num_epochs, eval_freq, eval_iter, token_position):
    _check_training_args(train_loader, num_epochs, eval_freq, eval_iter)
    _check_token_position(token_position)


# Overall the same as `train_model_simple` in chapter 5
def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                            eval_freq, eval_iter, *, token_position="last"):
    """The book's finetuning loop; returns train_losses, val_losses, train_accs, val_accs, examples_seen
    (ch06_finetune_classification, 6.7).

    Every ``eval_freq`` steps it prints the losses on ``eval_iter`` batches of each loader, and after every
    epoch the accuracies on ``eval_iter`` batches. ``llmscratch.classifier.train_classifier_resumable`` is the
    same loop with checkpoints and a progress bar.
    """
    _check_classifier_training(train_loader, num_epochs, eval_freq, eval_iter, token_position)  # beyond the book
    # Initialize lists to track losses and examples seen
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1

    # Main training loop
    for epoch in range(num_epochs):
        model.train()  # Set model to training mode

        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # Reset loss gradients from previous batch iteration
            loss = calc_loss_batch(input_batch, target_batch, model, device, token_position=token_position)
            loss.backward()  # Calculate loss gradients
            optimizer.step()  # Update model weights using loss gradients
            examples_seen += input_batch.shape[0]  # New: track examples instead of tokens
            global_step += 1

            # Optional evaluation step
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter, token_position=token_position)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                print(f"Ep {epoch+1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")

        # Calculate accuracy after each epoch
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter,
                                              token_position=token_position)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter,
                                            token_position=token_position)
        print(f"Training accuracy: {train_accuracy*100:.2f}% | ", end="")
        print(f"Validation accuracy: {val_accuracy*100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)

    return train_losses, val_losses, train_accs, val_accs, examples_seen


PLOT_NAMES = {"loss": "perda", "accuracy": "acurácia"}  # the book's labels, as the plots show them


def _check_plot_values(epochs_seen, examples_seen, train_values, val_values):
    if not len(epochs_seen) == len(examples_seen) == len(train_values) == len(val_values):
        raise ValueError(
            "epochs_seen, examples_seen, train_values and val_values must have the same length, got "
            f"{len(epochs_seen)}, {len(examples_seen)}, {len(train_values)}, {len(val_values)}; "
            "e.g. epochs_seen = torch.linspace(0, num_epochs, len(train_values))"
        )


def plot_values(epochs_seen, examples_seen, train_values, val_values, label="loss"):
    """Training and validation values (``label`` "loss" or "accuracy") against epochs, with the examples seen on
    a second x axis (ch06_finetune_classification, 6.7).

    Returns the figure (5 x 3 in, Portuguese labels), already closed so a notebook shows it once, where it is the
    cell's value; the book saves it as ``{label}-plot.pdf`` instead (``fig.savefig(...)`` does that).
    """
    _check_plot_values(epochs_seen, examples_seen, train_values, val_values)  # beyond the book: same lengths
    import matplotlib.pyplot as plt

    name = PLOT_NAMES.get(label, label)
    fig, ax1 = plt.subplots(figsize=(5, 3))

    # Plot training and validation values against epochs
    ax1.plot(epochs_seen, train_values, label=f"{name.capitalize()} de treino")
    ax1.plot(epochs_seen, val_values, linestyle="-.", label=f"{name.capitalize()} de validação")
    ax1.set_xlabel("Épocas")
    ax1.set_ylabel(name.capitalize())
    ax1.legend()

    # Create a second x-axis for examples seen
    ax2 = ax1.twiny()  # a second x-axis that shares the same y-axis
    ax2.plot(examples_seen, train_values, alpha=0)  # Invisible plot for aligning ticks
    ax2.set_xlabel("Exemplos vistos")

    ax1.set_title(f"{name.capitalize()} durante o ajuste fino", fontsize="medium")
    fig.tight_layout()  # Adjust layout to make room
    plt.close(fig)
    return fig


# --- using the classifier (6.8) ------------------------------------------------------------------------------------


def _check_review_args(model, max_length, token_position, text=None, tokenizer=None):
    _check_token_position(token_position)
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ValueError(f"text must be a non-empty message to classify, got {text!r}")
    _check_endoftext(text, tokenizer)
    head = getattr(model, "out_head", None)
    while hasattr(head, "linear"):  # appendix E's LinearWithLoRA wraps the head's linear layer
        head = head.linear
    num_classes = getattr(head, "out_features", None)
    if num_classes != 2:
        raise ValueError(f"the model's out_head has {num_classes} outputs, not the 2 classes of a spam classifier: "
                         "turn it into one first (llmscratch.classifier.prepare_classifier) and finetune it")
    supported = model.pos_emb.weight.shape[0]
    if max_length is None:
        raise ValueError("give max_length, the length the classifier was trained with (train_dataset.max_length), "
                         f"or model.pos_emb.weight.shape[0] ({supported}) for the model's whole context")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= supported:
        raise ValueError(f"max_length must be between 1 and the model's context length ({supported}), "
                         f"got {max_length!r}")


def classify_review(text, model, tokenizer, device, max_length=None, pad_token_id=GPT2_ENDOFTEXT_ID, *,
                    token_position="last"):
    """"spam" or "not spam" for one text: truncated to ``max_length`` tokens (and to the model's context), padded,
    classified by the last token's logits (ch06_finetune_classification, 6.8).

    With the book's later fix: the supported context is ``model.pos_emb.weight.shape[0]`` (the book first read
    ``shape[1]``, the embedding size). ``max_length`` is required (a ``ValueError`` says what to pass), as the
    book's later version asserts. Beyond the book, ``ValueError``s for an empty text and for a model whose head
    is not a two-class classifier. A text holding ``<|endoftext|>`` needs a tokenizer that allows it
    (``llmscratch.gpt2_tokenizer.gpt2_tokenizer()``, as the command line uses); tiktoken's own refuses it.
    """
    _check_review_args(model, max_length, token_position, text, tokenizer)  # beyond the book: ValueErrors
    model.eval()

    # Prepare inputs to the model
    input_ids = tokenizer.encode(text)
    supported_context_length = model.pos_emb.weight.shape[0]

    # Truncate sequences if they too long
    input_ids = input_ids[:min(max_length, supported_context_length)]

    # Pad sequences to the longest sequence
    input_ids += [pad_token_id] * (max_length - len(input_ids))
    input_tensor = torch.tensor(input_ids, device=device).unsqueeze(0)  # add batch dimension

    # Model inference
    with torch.no_grad():
        logits = model(input_tensor)[:, TOKEN_POSITIONS[token_position], :]  # Logits of the last output token
    predicted_label = torch.argmax(logits, dim=-1).item()

    # Return the classified result
    return "spam" if predicted_label == 1 else "not spam"
