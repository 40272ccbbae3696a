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

from .pretraining import _check_training_args, calc_loss_batch, evaluate_model, generate_and_print_sample


def learning_rate_at(global_step, warmup_steps, total_training_steps, peak_lr, initial_lr=3e-05, min_lr=1e-6):
    """The learning rate of step ``global_step`` (0-based) under warmup + cosine decay (ch05_pretraining, D.2).

    The schedule ``train_model`` applies, as one function for plotting it (a test checks they agree).
    """
    if global_step < warmup_steps:
        # Linear warmup
        lr_increment = (peak_lr - initial_lr) / warmup_steps
        return initial_lr + global_step * lr_increment
    # Cosine annealing after warmup
    progress = (global_step - warmup_steps) / (total_training_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def find_highest_gradient(model):
    """The largest gradient value over all parameters, or None before ``backward`` (ch05_pretraining, D.3)."""
    max_grad = None
    for param in model.parameters():
        if param.grad is not None:
            grad_values = param.grad.data.flatten()
            max_grad_param = grad_values.max()
            if max_grad is None or max_grad_param > max_grad:
                max_grad = max_grad_param
    return max_grad


def _check_schedule_args(train_loader, n_epochs, eval_freq, eval_iter, warmup_steps):
    _check_training_args(train_loader, n_epochs, eval_freq, eval_iter)  # the checks of train_model_simple
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1 (the warmup divides by it), got {warmup_steps}")
    if warmup_steps >= len(train_loader) * n_epochs > 0:
        raise ValueError(f"warmup_steps={warmup_steps} leaves no step for the cosine decay: the run has "
                         f"{len(train_loader) * n_epochs} steps; the book warms up over about 20% of them")


def train_model(model, train_loader, val_loader, optimizer, device,
                n_epochs, eval_freq, eval_iter, start_context, tokenizer,
                warmup_steps, initial_lr=3e-05, min_lr=1e-6):
    """Appendix D's loop; returns train_losses, val_losses, track_tokens_seen, track_lrs (ch05_pretraining, D.4).

    The peak learning rate is the optimizer's (``optimizer.param_groups[0]["lr"]`` when called); every step sets
    the rate of all parameter groups (the schedule of ``learning_rate_at``) and records it in ``track_lrs``.
    Clipping starts at step ``warmup_steps`` (``>=``, as the book's code repository fixed its first printing).
    """
    _check_schedule_args(train_loader, n_epochs, eval_freq, eval_iter, warmup_steps)  # beyond the book: clear errors

    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1

    # Retrieve the maximum learning rate from the optimizer
    peak_lr = optimizer.param_groups[0]["lr"]

    # Calculate the total number of iterations in the training process
    total_training_steps = len(train_loader) * n_epochs

    # Calculate the learning rate increment during the warmup phase
    lr_increment = (peak_lr - initial_lr) / warmup_steps

    for epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1

            # Adjust the learning rate based on the current phase (warmup or cosine annealing)
            if global_step < warmup_steps:
                # Linear warmup
                lr = initial_lr + global_step * lr_increment
            else:
                # Cosine annealing after warmup
                progress = ((global_step - warmup_steps) /
                            (total_training_steps - warmup_steps))
                lr = min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

            # Apply the calculated learning rate to the optimizer
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            track_lrs.append(lr)  # Store the current learning rate

            # Calculate and backpropagate the loss
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()

            # Apply gradient clipping after the warmup phase to avoid exploding gradients
            if global_step >= warmup_steps:  # the book's first printing had >, which skipped one step
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)

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
                # Print the current losses
                print(f"Ep {epoch+1} (Iter {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, "
                      f"Val loss {val_loss:.3f}"
                )

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
