"""DPO beyond the book's listings: the preference data through the registry, the loaders, the frozen reference
model, a resumable training loop with a progress bar, and the loss and reward-margin curves.

Introduced in ch07_finetune_instructions/dpo_preference_tuning, for the notebook and the command line
(``python -m llmscratch finetune-preferences``, :mod:`llmscratch.cli_preferences`). The book's code (the data set,
the collate function, the loss, the training loop) lives in :mod:`llmscratch.dpo`. The whole preparation is::

    data = load_preference_data()                                    # 1,100 entries
    train_data, val_data, test_data = split_instruction_data(data)   # 935, 55, 110: the book's 85/10/5
    torch.manual_seed(123)
    train_loader, val_loader, test_loader = create_preference_loaders(
        train_data, val_data, test_data, tokenizer, device=device)   # 116, 7 and 14 batches of (up to) 8
    reference_model = frozen_reference(policy_model)                 # a frozen copy of the starting model

The responses before and after come from ``llmscratch.instruction_run.instruction_responses`` (the book's greedy
loop, batched with the KV cache): a preference-tuned model is an instruction model with the Alpaca prompt.
"""

from __future__ import annotations

import copy
from functools import partial

import torch
from torch.utils.data import DataLoader

from .data import get_data, read_json_records
from .dpo import PREFERENCE_KEYS, PreferenceDataset, compute_dpo_loss_batch, custom_collate_fn, evaluate_dpo_loss_loader
from .dpo import _check_dpo_training_args
from .gpt2_tokenizer import allowing_endoftext
from .pretraining import generate_and_print_sample
from .resumable import ResumableRun

PREFERENCE_DATA = "instruction-data-with-preference"  # the registry's name (llmscratch.data.DATA_FILES)
BOOK_DPO = {"beta": 0.1, "lr": 5e-6, "weight_decay": 0.01, "epochs": 1, "batch_size": 8, "eval_freq": 5,
            "eval_iter": 5, "seed": 123}  # the book's settings (section 5)
TRACKED = ("train_losses", "train_chosen_rewards", "train_rejected_rewards", "val_losses", "val_chosen_rewards",
           "val_rejected_rewards", "tokens_seen")  # the keys of train_model_dpo_simple's ``tracking``

__all__ = ["BOOK_DPO", "PREFERENCE_DATA", "TRACKED", "create_preference_loaders", "frozen_reference",
           "load_preference_data", "plot_dpo_curves", "reward_margins", "train_model_dpo_resumable"]


def load_preference_data(path=None):
    """The book's preference data, a list of 1,100 dicts ``{"instruction", "input", "output", "chosen",
    "rejected"}`` (ch07_finetune_instructions/dpo_preference_tuning, 2.1).

    ``path`` defaults to the registry's file (``get_data("instruction-data-with-preference")``, checked against
    its sha256, from the offline mirror when there is one); any file is checked to be a JSON list of entries with
    exactly those five text fields (ValueError otherwise).
    """
    path = get_data(PREFERENCE_DATA) if path is None else path
    return read_json_records(path, PREFERENCE_KEYS)


def create_preference_loaders(train_data, val_data, test_data, tokenizer, *, batch_size=8, device="cpu",
                              allowed_max_length=1024, mask_prompt_tokens=True, num_workers=0):
    """The book's three loaders (ch07_finetune_instructions/dpo_preference_tuning, 2.4): ``PreferenceDataset`` over
    each split and ``partial(custom_collate_fn, device=device, mask_prompt_tokens=True, allowed_max_length=1024)``;
    the training loader shuffles and drops its last, smaller batch. Seed first (``torch.manual_seed(123)``, as the
    book) for the book's order. A tiktoken ``tokenizer`` encodes ``<|endoftext|>`` in an entry as the special token.
    Returns ``(train_loader, val_loader, test_loader)``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of entries, got {batch_size!r}")
    if len(train_data) < batch_size:
        raise ValueError(f"the training set has {len(train_data)} entries, fewer than one batch of {batch_size}")
    tokenizer = allowing_endoftext(tokenizer)
    customized_collate_fn = partial(custom_collate_fn, device=device, mask_prompt_tokens=mask_prompt_tokens,
                                    allowed_max_length=allowed_max_length)
    loaders = []
    for i, data in enumerate((train_data, val_data, test_data)):
        loaders.append(DataLoader(PreferenceDataset(data, tokenizer), batch_size=batch_size,
                                  collate_fn=customized_collate_fn, shuffle=i == 0, drop_last=i == 0,
                                  num_workers=num_workers))
    return tuple(loaders)


def frozen_reference(model):
    """A copy of ``model`` that DPO compares against: in eval mode, with every parameter frozen
    (``requires_grad=False``), so no optimizer step and no gradient can change it
    (ch07_finetune_instructions/dpo_preference_tuning, 3). The book loads the same weights twice."""
    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def train_model_dpo_resumable(policy_model, reference_model, train_loader, val_loader, optimizer, num_epochs, beta,
                              eval_freq, eval_iter, start_context, tokenizer, *, checkpoint_path=None, resume=False,
                              config=None, run_settings=None, progress=True, sample=True):
    """``train_model_dpo_simple`` that saves itself after every epoch and can resume
    (ch07_finetune_instructions/dpo_preference_tuning, 5; the loop of ``llmscratch.resumable.ResumableRun``).

    The same steps, evaluations, printed lines and returned ``tracking`` as the book's loop (a test checks it), plus
    a checkpoint of the policy, the optimizer, the tracked values and the random generators after every epoch
    (``checkpoint_path``); ``resume=True`` goes on from it up to ``num_epochs``. ``progress``: a tqdm bar per
    epoch; ``sample=False`` skips the sample printed after each epoch.
    """
    _check_dpo_training_args(train_loader, num_epochs, eval_freq, eval_iter)
    run = ResumableRun(policy_model, optimizer, checkpoint_path, resume=resume, config=config,
                       device=next(policy_model.parameters()).device, run_settings=run_settings, progress=progress)
    state = run.state
    for epoch in run.epochs(num_epochs):
        policy_model.train()
        for batch in run.batches(train_loader, epoch):
            optimizer.zero_grad()
            loss, _, _ = compute_dpo_loss_batch(batch, policy_model, reference_model, beta)
            loss.backward()
            optimizer.step()
            state.tokens_seen += batch["chosen"].numel()
            state.global_step += 1
            if state.global_step % eval_freq == 0:
                res = evaluate_dpo_loss_loader(policy_model, reference_model, train_loader, val_loader, beta,
                                               eval_iter)
                state.log(train_losses=res["train_loss"], train_chosen_rewards=res["train_chosen_reward"],
                          train_rejected_rewards=res["train_rejected_reward"], val_losses=res["val_loss"],
                          val_chosen_rewards=res["val_chosen_reward"],
                          val_rejected_rewards=res["val_rejected_reward"], tokens_seen=state.tokens_seen)
                train_margin = res["train_chosen_reward"] - res["train_rejected_reward"]
                val_margin = res["val_chosen_reward"] - res["val_rejected_reward"]
                print(f"Ep {epoch+1} (Step {state.global_step:06d}): "
                      f"Train loss {res['train_loss']:.3f}, Val loss {res['val_loss']:.3f}, "
                      f"Train reward margins {train_margin:.3f}, Val reward margins {val_margin:.3f}")
        device = next(policy_model.parameters()).device
        run.end_epoch(after=(lambda: generate_and_print_sample(policy_model, tokenizer, device, start_context))
                      if sample else None)
    return {key: list(state.history.get(key, [])) for key in TRACKED}


def reward_margins(tracking):
    """``(train_margins, val_margins)``: chosen minus rejected reward at each evaluation, as the book plots them
    (ch07_finetune_instructions/dpo_preference_tuning, 6)."""
    train = [c - r for c, r in zip(tracking["train_chosen_rewards"], tracking["train_rejected_rewards"])]
    val = [c - r for c, r in zip(tracking["val_chosen_rewards"], tracking["val_rejected_rewards"])]
    return train, val


def plot_dpo_curves(tracking, num_epochs, title_note=""):
    """The DPO loss and the reward margin (training and validation) against epochs, side by side, with tokens seen
    on a second x axis (ch07_finetune_instructions/dpo_preference_tuning, 6). ``title_note`` is added to both
    titles (e.g. which model made the curves). Returns the figure (10 x 3 in), already closed."""
    import matplotlib.pyplot as plt

    if not tracking["train_losses"]:
        raise ValueError("tracking holds no evaluation: train for at least eval_freq steps")
    epochs = torch.linspace(0, num_epochs, len(tracking["train_losses"]))
    train_margins, val_margins = reward_margins(tracking)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3))
    panels = ((axes[0], tracking["train_losses"], tracking["val_losses"], "Perda DPO", "perda"),
              (axes[1], train_margins, val_margins, "Margem de recompensa", "margem (escolhida − rejeitada)"))
    for ax, train, val, title, ylabel in panels:
        ax.plot(epochs, train, label="treino")
        ax.plot(epochs, val, linestyle="-.", label="validação")
        ax.set_xlabel("épocas")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}{title_note}", fontsize=10)
        ax.legend(loc="best")
        top = ax.twiny()  # tokens seen, on a second x axis
        top.plot(tracking["tokens_seen"], train, alpha=0)
        top.set_xlabel("tokens vistos")
    figure.tight_layout()
    plt.close(figure)
    return figure
