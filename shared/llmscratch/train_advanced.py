"""A better training loop, the book's appendix D: learning-rate warmup, cosine decay, gradient clipping.

Introduced in ch05_pretraining (appendix D, D.1-D.4). ``train_model`` is ``train_model_simple`` plus three
changes that make pretraining more stable:

- linear warmup: the learning rate rises from ``initial_lr`` to the optimizer's (peak) rate over
  ``warmup_steps`` steps, so the first, large and noisy gradients don't push the weights too far;
- cosine decay: after warmup it falls along half a cosine from the peak to ``min_lr`` at the last step;
- gradient clipping: from the end of warmup on, gradients are rescaled to an L2 norm of at most 1.0.
"""

from __future__ import annotations

import math

import torch

from .pretraining import calc_loss_batch, evaluate_model, generate_and_print_sample


def learning_rate_at(global_step, warmup_steps, total_training_steps, peak_lr, initial_lr=3e-05, min_lr=1e-6):
    """The learning rate of step ``global_step`` (0-based) under warmup + cosine decay (ch05_pretraining, D.2)."""
    if global_step < warmup_steps:
        # Linear warmup
        lr_increment = (peak_lr - initial_lr) / warmup_steps
        return initial_lr + global_step * lr_increment
    # Cosine annealing after warmup
    progress = (global_step - warmup_steps) / (total_training_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def train_model(model, train_loader, val_loader, optimizer, device,
                n_epochs, eval_freq, eval_iter, start_context, tokenizer,
                warmup_steps, initial_lr=3e-05, min_lr=1e-6, *, max_norm=1.0):
    """Appendix D's loop; returns train_losses, val_losses, track_tokens_seen, track_lrs (ch05_pretraining, D.4).

    The peak learning rate is the optimizer's (``optimizer.param_groups[0]["lr"]`` when called); every step
    sets the rate of all parameter groups and records it in ``track_lrs`` (one entry per step). Clipping to
    ``max_norm`` starts at step ``warmup_steps``, the first step after warmup (the book's first printing used
    ``global_step > warmup_steps``, which skipped that one step; its code repository fixed it to ``>=``).
    Prints one line per evaluation, ``Ep 1 (Step 000000): Train loss ..., Val loss ...``, and a sample after
    every epoch, like ``train_model_simple``.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if n_epochs < 0 or eval_freq < 1:
        raise ValueError(f"n_epochs must be >= 0 and eval_freq >= 1, got n_epochs={n_epochs}, eval_freq={eval_freq}")
    if len(train_loader) == 0:
        raise ValueError("train_loader has no batches: use a longer text, a smaller batch_size or drop_last=False")

    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1

    # Retrieve the maximum learning rate from the optimizer
    peak_lr = optimizer.param_groups[0]["lr"]

    # Calculate the total number of iterations in the training process
    total_training_steps = len(train_loader) * n_epochs

    for epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1

            # Adjust the learning rate based on the current phase (warmup or cosine annealing)
            lr = learning_rate_at(global_step, warmup_steps, total_training_steps, peak_lr, initial_lr, min_lr)

            # Apply the calculated learning rate to the optimizer
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            track_lrs.append(lr)  # Store the current learning rate

            # Calculate and backpropagate the loss
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()

            # Apply gradient clipping after the warmup phase to avoid exploding gradients
            if global_step >= warmup_steps:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)

            optimizer.step()
            tokens_seen += input_batch.numel()

            # Periodically evaluate the model on the training and validation sets
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(
                    model, train_loader, val_loader,
                    device, eval_iter
                )
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch+1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")

        # Generate and print a sample from the model to monitor progress
        generate_and_print_sample(
            model, tokenizer, device, start_context
        )

    return train_losses, val_losses, track_tokens_seen, track_lrs


def plot_learning_rate(track_lrs):
    """The learning rate of every training step, as recorded by ``train_model`` (ch05_pretraining, D.2).

    Returns the figure (5 x 3 in), already closed so a notebook shows it once, where it is the cell's value.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(track_lrs)), track_lrs)
    ax.set_xlabel("Passos")
    ax.set_ylabel("Taxa de aprendizado")
    ax.set_title("Aquecimento linear e decaimento cosseno", fontsize="medium")
    fig.tight_layout()
    plt.close(fig)
    return fig
