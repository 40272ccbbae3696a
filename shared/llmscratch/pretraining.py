"""Pretraining on unlabeled text, chapter 5: losses, the training loop, samples and the loss plot.

Introduced in ch05_pretraining. The functions are the book's, with its names, signatures and printed output.
``train_model_simple`` has keyword-only extensions that keep the book's behaviour by default: a checkpoint
after every epoch and exact resumption from it (``llmscratch.checkpoints``), and a ``progress`` bar.
"""

from __future__ import annotations

import torch

from .gpt import generate_text_simple


def text_to_token_ids(text, tokenizer):
    """Token ids of ``text`` as a (1, num_tokens) tensor, with a batch dimension (ch05_pretraining, 5.1.1)."""
    encoded = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    encoded_tensor = torch.tensor(encoded).unsqueeze(0)  # add batch dimension: (1, num_tokens)
    return encoded_tensor


def token_ids_to_text(token_ids, tokenizer):
    """Text of a (1, num_tokens) or (num_tokens,) tensor of token ids (ch05_pretraining, 5.1.1)."""
    if token_ids.dim() == 2 and token_ids.shape[0] != 1:
        raise ValueError(
            f"token_ids holds a batch of {token_ids.shape[0]} sequences; decode them one at a time, "
            "e.g. token_ids_to_text(token_ids[i], tokenizer)"
        )
    flat = token_ids.squeeze(0)  # remove batch dimension: (num_tokens,)
    return tokenizer.decode(flat.tolist())


def calc_loss_batch(input_batch, target_batch, model, device):
    """Mean cross-entropy of the model's next-token predictions for one batch (ch05_pretraining, 5.1.3)."""
    if input_batch.shape != target_batch.shape:
        raise ValueError(
            f"input_batch {tuple(input_batch.shape)} and target_batch {tuple(target_batch.shape)} must have the "
            "same (batch_size, num_tokens) shape: targets are the inputs shifted by one token"
        )
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (b, num_tokens, vocab_size)
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), target_batch.flatten()  # (b * num_tokens, vocab_size) vs (b * num_tokens,)
    )
    return loss


def calc_loss_loader(data_loader, model, device, num_batches=None):
    """Average ``calc_loss_batch`` over the first ``num_batches`` batches (all by default) (ch05_pretraining, 5.1.3).

    As in the book, an empty loader gives ``nan`` (e.g. a validation text shorter than one window).
    """
    total_loss = 0.
    if len(data_loader) == 0:
        return float("nan")
    elif num_batches is None:
        num_batches = len(data_loader)
    else:
        if num_batches < 1:
            raise ValueError(f"num_batches must be None (all batches) or >= 1, got {num_batches}")
        # Reduce the number of batches to the number in the loader if num_batches exceeds it
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
                       eval_freq, eval_iter, start_context, tokenizer, *,
                       checkpoint_path=None, resume=False, config=None, progress=False):
    """The book's training loop: returns train_losses, val_losses, track_tokens_seen (ch05_pretraining, 5.2).

    Every ``eval_freq`` optimizer steps it evaluates on ``eval_iter`` batches of each loader and prints one
    line, ``Ep 1 (Step 000000): Train loss 9.817, Val loss 9.924``; after every epoch it prints a sample.

    Extensions (keyword-only; the defaults are the book's loop):

    - ``checkpoint_path``: after every epoch, save model, optimizer and training state there
      (``llmscratch.checkpoints.save_checkpoint``, atomic), with ``config`` (the model's config dict) if given.
    - ``resume=True``: first load that checkpoint into ``model`` and ``optimizer`` (checking ``config``) and go
      on from the epoch after the saved one up to ``num_epochs``; the returned lists include the saved history.
      The result is the same as training in one go, loss for loss on the CPU, because the checkpoint also holds
      the random number generators' states at the epoch boundary (torch's CPU and CUDA generators, Python's
      ``random``), which are restored before the next epoch: the ``DataLoader``'s shuffle order (drawn from
      torch's global generator when an epoch starts) and the dropout masks come out as they would have. For
      this, build the loaders the same way (same text and settings; a loader given its own ``generator=``
      is not covered) and use a fresh model and optimizer of the same kind and settings. Checkpoints are
      taken at epoch boundaries only: an interrupted epoch is run again from its start.
    - ``progress=True``: a tqdm bar over the batches of each epoch.
    """
    from .checkpoints import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state

    _check_training_args(train_loader, num_epochs, eval_freq, eval_iter)
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path, the checkpoint to resume from")
    # Initialize lists to track losses and tokens seen
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step, start_epoch = 0, -1, 0

    if resume:
        state = load_checkpoint(checkpoint_path, model, optimizer, map_location=device, config=config)
        start_epoch, global_step, tokens_seen = state["epoch"], state["global_step"], state["tokens_seen"]
        train_losses, val_losses = list(state["train_losses"]), list(state["val_losses"])
        track_tokens_seen = list(state["track_tokens_seen"])
        set_rng_state(state["rng_state"])

    # Main training loop
    for epoch in range(start_epoch, num_epochs):
        model.train()  # Set model to training mode
        batches = train_loader
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(train_loader, desc=f"Época {epoch + 1}", leave=False)

        for input_batch, target_batch in batches:
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

        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path, model, optimizer,
                epoch=epoch + 1, global_step=global_step, tokens_seen=tokens_seen,
                train_losses=train_losses, val_losses=val_losses, track_tokens_seen=track_tokens_seen,
                rng_state=get_rng_state(), config=config,
            )

    return train_losses, val_losses, track_tokens_seen


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

