"""Preference tuning with DPO (Direct Preference Optimization): the book's bonus notebook of chapter 7.

Introduced in ch07_finetune_instructions/dpo_preference_tuning (the book repository's
``ch07/04_preference-tuning-with-dpo/dpo-from-scratch.ipynb``). The functions and classes with the book's names are
its listings, in its order, with at most a call to a checking helper at the top:

- section 2.3, the data: ``PreferenceDataset``, the DPO ``custom_collate_fn`` and ``decode_tokens_from_batch`` live in
  :mod:`llmscratch.dpo_data` and are re-exported here (``from llmscratch.dpo import custom_collate_fn`` gives the DPO
  one; chapter 7's homonym stays in ``llmscratch.instruction``);
- section 4: ``compute_dpo_loss`` (``-logsigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r)))`` averaged over the batch,
  with the chosen and rejected rewards), ``compute_logprobs`` (the mean log-probability of the selected tokens),
  ``compute_dpo_loss_batch``, ``compute_dpo_loss_loader`` and ``evaluate_dpo_loss_loader``;
- section 5: ``train_model_dpo_simple``.

One difference from the book: its ``train_model_dpo_simple`` prints the sample after each epoch with the
notebook's global ``model`` (the same object as its ``policy_model``); here it uses ``policy_model``, so the
function works outside that notebook. What goes beyond the book (the data through the registry, the loaders,
the frozen reference model, a resumable training loop with a progress bar, the curves, the responses) lives in
:mod:`llmscratch.dpo_run`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dpo_data import PREFERENCE_KEYS, PreferenceDataset, custom_collate_fn, decode_tokens_from_batch  # noqa: F401
from .pretraining import generate_and_print_sample

__all__ = [
    "PREFERENCE_KEYS", "PreferenceDataset", "compute_dpo_loss", "compute_dpo_loss_batch", "compute_dpo_loss_loader",
    "compute_logprobs", "custom_collate_fn", "decode_tokens_from_batch", "evaluate_dpo_loss_loader",
    "train_model_dpo_simple",
]


# --- the DPO loss (section 4) --------------------------------------------------------------------------------


def compute_dpo_loss(
      model_chosen_logprobs,
      model_rejected_logprobs,
      reference_chosen_logprobs,
      reference_rejected_logprobs,
      beta=0.1,
    ):
    """Compute the DPO loss for a batch of policy and reference model log probabilities.

    Args:
        policy_chosen_logprobs: Log probabilities of the policy model for the chosen responses. Shape: (batch_size,)
        policy_rejected_logprobs: Log probabilities of the policy model for the rejected responses. Shape: (batch_size,)
        reference_chosen_logprobs: Log probabilities of the reference model for the chosen responses. Shape: (batch_size,)
        reference_rejected_logprobs: Log probabilities of the reference model for the rejected responses. Shape: (batch_size,)
        beta: Temperature parameter for the DPO loss; typically something in the range of 0.1 to 0.5. We ignore the reference model as beta -> 0.

    Returns:
        A tuple of three tensors: (loss, chosen_rewards, rejected_rewards).

    The book's docstring (ch07_finetune_instructions/dpo_preference_tuning, 4); the argument names are
    ``model_...`` for the policy, as in the book's signature.
    """

    model_logratios = model_chosen_logprobs - model_rejected_logprobs  # (batch,)
    reference_logratios = reference_chosen_logprobs - reference_rejected_logprobs  # (batch,)
    logits = model_logratios - reference_logratios  # (batch,)

    # DPO (Eq. 7 of https://arxiv.org/pdf/2305.18290.pdf)
    losses = -F.logsigmoid(beta * logits)

    # Optional values to track progress during training
    chosen_rewards = (model_chosen_logprobs - reference_chosen_logprobs).detach()
    rejected_rewards = (model_rejected_logprobs - reference_rejected_logprobs).detach()

    # .mean() to average over the samples in the batch
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


def compute_logprobs(logits, labels, selection_mask=None):
    """
    Compute log probabilities.

    Args:
      logits: Tensor of shape (batch_size, num_tokens, vocab_size)
      labels: Tensor of shape (batch_size, num_tokens)
      selection_mask: Tensor for shape (batch_size, num_tokens)

    Returns:
      mean_log_prob: Mean log probability excluding padding tokens.

    The book's docstring (ch07_finetune_instructions/dpo_preference_tuning, 4): the log-probability of each
    next token, averaged over the tokens the mask selects (the response), one value per sequence.
    """

    # Labels are the inputs shifted by one
    labels = labels[:, 1:].clone()  # (batch, num_tokens - 1)

    # Truncate logits to match the labels num_tokens
    logits = logits[:, :-1, :]  # (batch, num_tokens - 1, vocab)

    log_probs = F.log_softmax(logits, dim=-1)

    # Gather the log probabilities for the actual labels
    selected_log_probs = torch.gather(
        input=log_probs,
        dim=-1,
        index=labels.unsqueeze(-1)
    ).squeeze(-1)  # (batch, num_tokens - 1)

    if selection_mask is not None:
        mask = selection_mask[:, 1:].clone()

        # Apply the mask to filter out padding tokens
        selected_log_probs = selected_log_probs * mask

        # Calculate the average log probability excluding padding tokens
        # This averages over the tokens, so the shape is (batch_size, num_tokens)
        avg_log_prob = selected_log_probs.sum(-1) / mask.sum(-1)

        return avg_log_prob

    else:
        return selected_log_probs.mean(-1)


def compute_dpo_loss_batch(batch, policy_model, reference_model, beta):
    """Compute the DPO loss on an input batch (ch07_finetune_instructions/dpo_preference_tuning, 4): the four
    log-probabilities (policy and reference, chosen and rejected) and ``compute_dpo_loss``."""

    # where policy_model(batch["chosen"]) are the logits
    policy_chosen_log_probas = compute_logprobs(
        logits=policy_model(batch["chosen"]),
        labels=batch["chosen"],
        selection_mask=batch["chosen_mask"]
    )
    policy_rejected_log_probas = compute_logprobs(
        logits=policy_model(batch["rejected"]),
        labels=batch["rejected"],
        selection_mask=batch["rejected_mask"]
    )
    ref_chosen_log_probas = compute_logprobs(
        logits=reference_model(batch["chosen"]),
        labels=batch["chosen"],
        selection_mask=batch["chosen_mask"]
    )
    ref_rejected_log_probas = compute_logprobs(
        logits=reference_model(batch["rejected"]),
        labels=batch["rejected"],
        selection_mask=batch["rejected_mask"]
    )
    loss, chosen_rewards, rejected_rewards = compute_dpo_loss(
        model_chosen_logprobs=policy_chosen_log_probas,
        model_rejected_logprobs=policy_rejected_log_probas,
        reference_chosen_logprobs=ref_chosen_log_probas,
        reference_rejected_logprobs=ref_rejected_log_probas,
        beta=beta
    )
    return loss, chosen_rewards, rejected_rewards


def compute_dpo_loss_loader(data_loader, policy_model, reference_model, beta, num_batches=None):
    """Apply compute_dpo_loss_batch to a whole data loader (ch07_finetune_instructions/dpo_preference_tuning, 4):
    the mean loss, chosen reward and rejected reward over the first ``num_batches`` batches."""

    total_loss, total_chosen_rewards, total_rejected_rewards = 0., 0., 0.
    if len(data_loader) == 0:
        return float("nan")

    elif num_batches is None:
        num_batches = len(data_loader)
    else:
        # Reduce the number of batches to match the total number of batches in the data loader
        # if num_batches exceeds the number of batches in the data loader
        num_batches = min(num_batches, len(data_loader))
    for i, batch in enumerate(data_loader):
        if i < num_batches:
            loss, chosen_rewards, rejected_rewards = compute_dpo_loss_batch(
                batch=batch,
                policy_model=policy_model,
                reference_model=reference_model,
                beta=beta
            )
            total_loss += loss.item()
            total_chosen_rewards += chosen_rewards.item()
            total_rejected_rewards += rejected_rewards.item()

        else:
            break

    # calculate average
    total_loss /= num_batches
    total_chosen_rewards /= num_batches
    total_rejected_rewards /= num_batches
    return total_loss, total_chosen_rewards, total_rejected_rewards


def evaluate_dpo_loss_loader(policy_model, reference_model, train_loader, val_loader, beta, eval_iter):
    """Compute the DPO loss for the training and validation dataset (ch07_finetune_instructions/
    dpo_preference_tuning, 4): a dict of the losses and rewards on ``eval_iter`` batches of each."""

    policy_model.eval()
    with torch.no_grad():
        train_loss, train_chosen_rewards, train_rejected_rewards = compute_dpo_loss_loader(
            data_loader=train_loader,
            policy_model=policy_model,
            reference_model=reference_model,
            beta=beta,
            num_batches=eval_iter
        )

        val_loss, val_chosen_rewards, val_rejected_rewards = compute_dpo_loss_loader(
            data_loader=val_loader,
            policy_model=policy_model,
            reference_model=reference_model,
            beta=beta,
            num_batches=eval_iter
        )

    res = {
        "train_loss": train_loss,
        "train_chosen_reward": train_chosen_rewards,
        "train_rejected_reward": train_rejected_rewards,
        "val_loss": val_loss,
        "val_chosen_reward": val_chosen_rewards,
        "val_rejected_reward": val_rejected_rewards
    }

    policy_model.train()
    return res


# --- training (section 5) ------------------------------------------------------------------------------------


def _check_dpo_training_args(train_loader, num_epochs, eval_freq, eval_iter):
    if len(train_loader) == 0:
        raise ValueError("train_loader has no batches: use more training entries or a smaller batch_size")
    for name, value in (("num_epochs", num_epochs), ("eval_freq", eval_freq), ("eval_iter", eval_iter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")


def train_model_dpo_simple(
    policy_model, reference_model, train_loader, val_loader,
    optimizer, num_epochs, beta,
    eval_freq, eval_iter, start_context, tokenizer
):
    """The book's DPO training loop (ch07_finetune_instructions/dpo_preference_tuning, 5): chapter 5's loop with
    ``compute_dpo_loss_batch`` as the loss, tracking losses, rewards and tokens seen every ``eval_freq`` steps
    and printing ``Ep 1 (Step 000005): Train loss ..., Val loss ..., Train reward margins ..., Val reward
    margins ...``. Returns the dict ``tracking``. Differs from the book in one name: the sample after each
    epoch comes from ``policy_model`` (the book passes its notebook's global ``model``, the same object)."""
    _check_dpo_training_args(train_loader, num_epochs, eval_freq, eval_iter)  # beyond the book: clear errors

    # Initialize lists to track losses and tokens seen
    tracking = {
        "train_losses": [],
        "train_chosen_rewards": [],
        "train_rejected_rewards": [],
        "val_losses": [],
        "val_chosen_rewards": [],
        "val_rejected_rewards": [],
        "tokens_seen": []
    }
    tokens_seen, global_step = 0, -1

    # Main training loop
    for epoch in range(num_epochs):
        policy_model.train()  # Set model to training mode

        for batch_idx, batch in enumerate(train_loader):

            optimizer.zero_grad()  # Reset loss gradients from previous batch iteration

            loss, chosen_rewards, rejected_rewards = compute_dpo_loss_batch(
                batch=batch,
                policy_model=policy_model,
                reference_model=reference_model,
                beta=beta
            )

            loss.backward()  # Calculate loss gradients
            optimizer.step()  # Update model weights using loss gradients

            tokens_seen += batch["chosen"].numel()
            global_step += 1

            # Optional evaluation step
            if global_step % eval_freq == 0:
                res = evaluate_dpo_loss_loader(
                    policy_model=policy_model,
                    reference_model=reference_model,
                    train_loader=train_loader,
                    val_loader=val_loader,
                    beta=beta,
                    eval_iter=eval_iter
                )
                tracking["train_losses"].append(res["train_loss"])
                tracking["train_chosen_rewards"].append(res["train_chosen_reward"])
                tracking["train_rejected_rewards"].append(res["train_rejected_reward"])
                tracking["val_losses"].append(res["val_loss"])
                tracking["val_chosen_rewards"].append(res["val_chosen_reward"])
                tracking["val_rejected_rewards"].append(res["val_rejected_reward"])
                tracking["tokens_seen"].append(tokens_seen)
                train_reward_margin = res["train_chosen_reward"] - res["train_rejected_reward"]
                val_reward_margin = res["val_chosen_reward"] - res["val_rejected_reward"]

                print(
                    f"Ep {epoch+1} (Step {global_step:06d}): "
                    f"Train loss {res['train_loss']:.3f}, Val loss {res['val_loss']:.3f}, "
                    f"Train reward margins {train_reward_margin:.3f}, "
                    f"Val reward margins {val_reward_margin:.3f}"
                )

        # Print a sample text after each epoch
        generate_and_print_sample(
            model=policy_model,
            tokenizer=tokenizer,
            device=loss.device,
            start_context=start_context
        )

    return tracking
