"""Pretraining on unlabeled text, chapter 5: losses, the training loop, samples and the loss plot.

Introduced in ch05_pretraining. The functions with the book's names are the book's listings (a call to a
checking helper at the top is the only addition). Beyond the book, beside them:

- ``create_train_val_loaders``: the 90/10 train/validation loaders of 5.1.3, used by the notebooks, the
  command line, the benchmarks and the tests;
- ``train_model_resumable``: ``train_model_simple``'s loop with atomic per-epoch checkpoints, exact resumption
  and a progress bar (``llmscratch.resumable.ResumableRun``).
"""

from __future__ import annotations

import torch

from .dataloader import create_dataloader_v1
from .gpt import generate_text_simple
from .resumable import ResumableRun


def _check_decodable(token_ids, tokenizer):
    if token_ids.dim() == 2 and token_ids.shape[0] != 1:
        raise ValueError(
            f"token_ids holds a batch of {token_ids.shape[0]} sequences; decode them one at a time, "
            "e.g. token_ids_to_text(token_ids[i], tokenizer)"
        )
    n_vocab = getattr(tokenizer, "n_vocab", None)  # tiktoken's encodings
    if n_vocab is None or token_ids.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(token_ids))
    if low < 0 or high >= n_vocab:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is not in the tokenizer's vocabulary (0 to {n_vocab - 1}): the ids come "
                         "from another tokenizer or a model with a larger vocab_size")


def text_to_token_ids(text, tokenizer):
    """Token ids of ``text`` as a (1, num_tokens) tensor, with a batch dimension (ch05_pretraining, 5.1.1)."""
    encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    encoded_tensor = torch.tensor(encoded).unsqueeze(0)  # add batch dimension: (1, num_tokens)
    return encoded_tensor


def token_ids_to_text(token_ids, tokenizer):
    """Text of a (1, num_tokens) or (num_tokens,) tensor of token ids (ch05_pretraining, 5.1.1)."""
    _check_decodable(token_ids, tokenizer)  # beyond the book: one sequence, ids the tokenizer knows
    flat = token_ids.squeeze(0)  # remove batch dimension: (num_tokens,)
    return tokenizer.decode(flat.tolist())


def _check_batch_shapes(input_batch, target_batch):
    if input_batch.shape != target_batch.shape:
        raise ValueError(
            f"input_batch {tuple(input_batch.shape)} and target_batch {tuple(target_batch.shape)} must have the "
            "same (batch_size, num_tokens) shape: targets are the inputs shifted by one token"
        )


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross-entropy of the model's next-token predictions for one batch (ch05_pretraining, 5.1.3)."""
    _check_batch_shapes(input_batch, target_batch)  # beyond the book: a clear error for mismatched batches
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (b, num_tokens, vocab_size)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())
    return loss


def _check_num_batches(num_batches):
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches must be None (all batches) or >= 1, got {num_batches}")


def calc_loss_loader(data_loader, model, device, num_batches=None):
    """Average ``calc_loss_batch`` over the first ``num_batches`` batches (all by default) (ch05_pretraining, 5.1.3).

    As in the book, an empty loader gives ``nan`` (e.g. a validation text shorter than one window).
    """
    _check_num_batches(num_batches)  # beyond the book: num_batches=0 would divide by zero
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
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            total_loss += loss.item()
        else:
            break
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """Training and validation loss over ``eval_iter`` batches each, in eval mode (ch05_pretraining, 5.2)."""
    model.eval()
    with torch.no_grad():
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context):
    """Print 50 greedy tokens after ``start_context`` on one line, to watch training (ch05_pretraining, 5.2)."""
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)  # (1, num_tokens)
    with torch.no_grad():
        token_ids = generate_text_simple(
            model=model, idx=encoded,
            max_new_tokens=50, context_size=context_size
        )
    decoded_text = token_ids_to_text(token_ids, tokenizer)
    print(decoded_text.replace("\n", " "))  # Compact print format
    model.train()


def _check_training_args(train_loader, num_epochs, eval_freq, eval_iter):
    if num_epochs < 0:
        raise ValueError(f"num_epochs must be >= 0, got {num_epochs}")
    if eval_freq < 1:
        raise ValueError(f"eval_freq must be >= 1 (evaluate every eval_freq steps), got {eval_freq}")
    if eval_iter is not None and eval_iter < 1:
        raise ValueError(f"eval_iter must be >= 1 (batches per evaluation), got {eval_iter}")
    if len(train_loader) == 0:
        raise ValueError(
            "train_loader has no batches: the text is shorter than one batch of windows "
            "(use a smaller batch_size or max_length, or drop_last=False)"
        )


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                       eval_freq, eval_iter, start_context, tokenizer):
    """The book's training loop; returns train_losses, val_losses, track_tokens_seen (ch05_pretraining, 5.2).

    Every ``eval_freq`` steps it prints ``Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933`` (losses on
    ``eval_iter`` batches of each loader) and after every epoch a sample. ``train_model_resumable`` is the same
    loop with checkpoints and a progress bar.
    """
    _check_training_args(train_loader, num_epochs, eval_freq, eval_iter)  # beyond the book: clear errors
    # Initialize lists to track losses and tokens seen
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1

    # Main training loop
    for epoch in range(num_epochs):
        model.train()  # Set model to training mode

        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # Reset loss gradients from previous batch iteration
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()  # Calculate loss gradients
            optimizer.step()  # Update model weights using loss gradients
            tokens_seen += input_batch.numel()
            global_step += 1

            # Optional evaluation step
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch+1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")

        # Print a sample text after each epoch
        generate_and_print_sample(
            model, tokenizer, device, start_context
        )

    return train_losses, val_losses, track_tokens_seen


def train_model_resumable(model, train_loader, val_loader, optimizer, device, num_epochs,
                          eval_freq, eval_iter, start_context, tokenizer, *,
                          checkpoint_path=None, resume=False, config=None, run_settings=None, progress=True):
    """``train_model_simple`` that saves itself after every epoch and can resume (ch05_pretraining, 5.4).

    The same steps, evaluations, printed lines and returned lists as ``train_model_simple`` (a test checks it),
    plus a ``ResumableRun``: with ``checkpoint_path`` the model, the optimizer, the losses and the random
    generators' states are saved atomically after every epoch, before the sample is printed; ``resume=True``
    goes on from that checkpoint up to ``num_epochs`` (``config``, the model's config dict, must match the
    saved one), and the returned lists include the saved history. ``progress``: a tqdm bar per epoch.
    """
    _check_training_args(train_loader, num_epochs, eval_freq, eval_iter)
    run = ResumableRun(model, optimizer, checkpoint_path, resume=resume, config=config, device=device,
                       run_settings=run_settings, progress=progress)
    for epoch in run.epochs(num_epochs):
        run.train_epoch(epoch, train_loader, eval_freq=eval_freq,
                        batch_loss=lambda inputs, targets: calc_loss_batch(inputs, targets, model, device),
                        evaluate=lambda: evaluate_model(model, train_loader, val_loader, device, eval_iter))
        run.end_epoch(after=lambda: generate_and_print_sample(model, tokenizer, device, start_context))
    history = run.state.history
    return (list(history.get("train_losses", [])), list(history.get("val_losses", [])),
            list(history.get("track_tokens_seen", [])))


def create_train_val_loaders(text, context_length, batch_size=2, train_ratio=0.90, num_workers=0):
    """The train and validation loaders of 5.1.3: the first ``train_ratio`` of the characters for training
    (shuffled, full batches only), the rest for validation, in non-overlapping windows of ``context_length``
    tokens (ch05_pretraining, 5.1.3).

    Seed first (``torch.manual_seed(123)``, as the book) for the book's shuffle order. Raises a ``ValueError``
    that says what to change when either part is shorter than one window, or the training part shorter than
    one batch.
    """
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be between 0 and 1, got {train_ratio}")
    split_idx = int(train_ratio * len(text))
    train_data, val_data = text[:split_idx], text[split_idx:]
    loaders = []
    for part, data, train in (("training", train_data, True), ("validation", val_data, False)):
        try:
            loaders.append(create_dataloader_v1(
                data, batch_size=batch_size, max_length=context_length, stride=context_length,
                drop_last=train, shuffle=train, num_workers=num_workers))
        except ValueError as error:
            raise ValueError(f"the {part} part of the text ({len(data):,} characters) is too short for windows "
                             f"of {context_length} tokens: use a longer text or a smaller context length "
                             f"({error})") from None
    if len(loaders[0]) == 0:
        windows = len(loaders[0].dataset)
        raise ValueError(f"the training part has {windows} window(s) of {context_length} tokens, fewer than one "
                         f"batch of {batch_size}: use a longer text, a smaller batch size or context length")
    return tuple(loaders)


def plot_losses(epochs_seen, tokens_seen, train_losses, val_losses):
    """Training and validation loss against epochs, with tokens seen on a second x axis (ch05_pretraining, 5.2).

    Returns the figure (5 x 3 in), already closed so a notebook shows it once, where it is the cell's value.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not len(epochs_seen) == len(tokens_seen) == len(train_losses) == len(val_losses):
        raise ValueError(
            "epochs_seen, tokens_seen, train_losses and val_losses must have the same length, got "
            f"{len(epochs_seen)}, {len(tokens_seen)}, {len(train_losses)}, {len(val_losses)}; "
            "e.g. epochs_seen = torch.linspace(0, num_epochs, len(train_losses))"
        )
    fig, ax1 = plt.subplots(figsize=(5, 3))

    # Plot training and validation loss against epochs
    ax1.plot(epochs_seen, train_losses, label="Perda de treino")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="Perda de validação")
    ax1.set_xlabel("Épocas")
    ax1.set_ylabel("Perda")
    ax1.legend(loc="upper right")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))  # only show integer labels on x-axis

    # Create a second x-axis for tokens seen
    ax2 = ax1.twiny()  # a second x-axis that shares the same y-axis
    ax2.plot(tokens_seen, train_losses, alpha=0)  # Invisible plot for aligning ticks
    ax2.set_xlabel("Tokens vistos")

    ax1.set_title("Perdas durante o pré-treinamento", fontsize="medium")
    fig.tight_layout()  # Adjust layout to make room
    plt.close(fig)
    return fig

