"""The command line's preference tuning: ``python -m llmscratch finetune-preferences --checkpoint MODEL``.

Introduced in ch07_finetune_instructions/dpo_preference_tuning (the book's DPO notebook, end to end). It starts from
an instruction model (``finetune-instructions``'s ``instruction_model.pt``, or the file the chapter 7 notebook
saves), splits the preference data 85/10/5 as the book does, trains the policy against a frozen copy of the starting
model (the reference) with the book's settings (one epoch, AdamW lr 5e-6 and weight decay 0.01, beta 0.1, batches of
8, evaluation every 5 steps on 5 batches; lr 1e-4 for a model that started from random weights), with a checkpoint
after every epoch (``--resume`` goes on from it: ``llmscratch.dpo_run.train_model_dpo_resumable``), then answers the
test entries with the reference and with the policy (greedy, batched with the KV cache). It writes, each file
atomically, the policy (an instruction model: ``chat`` and ``load_instruction_model`` read it), the test entries
with ``reference_response`` and ``policy_response`` and the plot of the loss and reward-margin curves.

As in the rest of the command line (:mod:`llmscratch.cli`): arguments are checked before any work (a missing file, a
checkpoint of another kind, bad numbers, an output folder that holds a run), bad input is one ``error: ...`` line
with exit code 2, the output folder is locked while the run writes to it, progress goes to stderr and results to
stdout.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import torch

from .checkpoints import describe_kind, read_training_state
from .cli_checks import MAX_EPOCHS, MAX_LR, MAX_NEW_TOKENS, UsageError, check_count, check_real, check_seed
from .cli_finetune import (RunFiles, claim_when_ready, interrupted_message, merge_run_settings, note_resumed,
                           start_run, stop_at_non_finite_loss)
from .dpo_run import (BOOK_DPO, PREFERENCE_DATA, create_preference_loaders, frozen_reference, load_preference_data,
                      plot_dpo_curves, reward_margins, train_model_dpo_resumable)
from .files import save_png, write_json
from .gpt2_tokenizer import gpt2_tokenizer
from .instruction_data import split_instruction_data
from .instruction_run import (INSTRUCTION_MODEL_KIND, instruction_responses, load_instruction_model,
                              save_instruction_model)
from .prompt_formats import format_input

MODEL, RESPONSES, PLOT = "preference_model.pt", "preference-data-with-response.json", "dpo_curves.png"
CHECKPOINT = "preference_checkpoint.pt"  # the last finished epoch, while training
FILES = RunFiles("finetune-preferences", MODEL, CHECKPOINT, (RESPONSES, PLOT)).register()
LR = {"gpt2": BOOK_DPO["lr"], "scratch": 1e-4}  # the book's for GPT-2; random weights barely move at 5e-6
MAX_BETA = 100.0  # the book: 0.1 to 0.5
MAX_NEW_TOKENS_DEFAULT = 256  # the book's
RESPONSE_KEYS = ("reference_response", "policy_response")  # the book prints both (section 6)
INTERRUPTED = {"finetune-preferences": interrupted_message(FILES)}


def add_preference_commands(commands, device_help: str) -> None:
    """Add ``finetune-preferences`` to the subparsers ``commands`` of the course's parser (introduced in
    ch07_finetune_instructions/dpo_preference_tuning)."""
    parser = commands.add_parser(
        "finetune-preferences", help="preference-tune an instruction model with DPO (the book's bonus of chapter 7)",
        description="The book's DPO notebook end to end: start from an instruction model (the instruction_model.pt "
                    "of finetune-instructions, or the chapter 7 notebook's file), split the preference data 85/10/5 "
                    "as the book does and train the policy against a frozen copy of the starting model with the "
                    "book's settings (1 epoch, lr 5e-6, beta 0.1, batches of 8), then answer the test entries with "
                    f"both models. Writes OUT/{MODEL} (the policy, an instruction model: chat reads it), "
                    f"OUT/{RESPONSES} (the test entries with {' and '.join(RESPONSE_KEYS)}) and OUT/{PLOT}; while "
                    f"it trains, OUT/{CHECKPOINT} holds the last finished epoch (--resume goes on from it).")
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="MODEL",
                        help="the instruction model to start from (e.g. runs/instructions/instruction_model.pt)")
    parser.add_argument("--epochs", type=int, help=f"train until this many epochs are done (default: "
                        f"{BOOK_DPO['epochs']}, the book's: DPO is prone to collapse)")
    parser.add_argument("--lr", type=float, help="AdamW learning rate (default: 5e-6, the book's; 1e-4 for a model "
                        "that started from random weights)")
    parser.add_argument("--beta", type=float, help=f"how far the policy may move from the reference (default: "
                        f"{BOOK_DPO['beta']}, the book's; it suggests 0.1 to 0.5)")
    parser.add_argument("--batch-size", type=int, help=f"default: {BOOK_DPO['batch_size']}, the book's")
    parser.add_argument("--seed", type=int, help=f"default: {BOOK_DPO['seed']}, the book's")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N entries of the data, before the "
                        "85/10/5 split, for quick runs (e.g. 40: 34 training, 2 validation and 4 test entries)")
    parser.add_argument("--max-new-tokens", type=int, help="longest response to each test entry, in tokens "
                        f"(default: {MAX_NEW_TOKENS_DEFAULT}, the book's)")
    parser.add_argument("--device", help=device_help)
    parser.add_argument("--out", type=Path, default=Path("runs/preferences"),
                        help="output folder (default: runs/preferences)")
    parser.add_argument("--resume", action="store_true", help="go on with the run in OUT: continue its training "
                        "from the last finished epoch, or write the outputs it has not written yet")


# --- checks ----------------------------------------------------------------------------------------------------


def check_preference_args(args) -> None:
    """The numbers of ``finetune-preferences``, checked before any work."""
    check_count("epochs", args.epochs, MAX_EPOCHS)
    check_count("batch_size", args.batch_size)
    check_real("lr", args.lr, zero_ok=False, why=" (a learning rate of 0 trains nothing)", maximum=MAX_LR)
    check_real("beta", args.beta, zero_ok=False, why=" (the book: 0.1; 0 ignores the preferences)",
               maximum=MAX_BETA)
    check_seed(args.seed)
    check_count("limit", args.limit)
    check_count("max_new_tokens", args.max_new_tokens, MAX_NEW_TOKENS)


def check_start_model(path: Path) -> dict:
    """The training state of ``--checkpoint``, after checking that it is an instruction model with the Alpaca
    prompt (the preference data's); reads no weights."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--checkpoint {path}: {what} (give the instruction_model.pt of finetune-instructions)")
    try:
        state = read_training_state(path)
    except ValueError as error:  # not a checkpoint of the package (a bare state_dict, another file)
        raise UsageError(f"--checkpoint {path}: {error}") from None
    if state.get("kind") != INSTRUCTION_MODEL_KIND:
        raise UsageError(f"--checkpoint {path} is {describe_kind(state.get('kind'))}, not an instruction model: DPO "
                         "starts from a model of finetune-instructions (or the chapter 7 notebook's)")
    if state.get("prompt_style") != "alpaca":
        raise UsageError(f"--checkpoint {path} uses the prompt style {state.get('prompt_style')!r}; the preference "
                         "data is in the book's Alpaca prompt: finetune an instruction model without --prompt-style")
    return state


def _settings_of(start: dict):
    def settings(args, stage: str, saved: dict) -> dict:
        given = {"checkpoint": str(args.checkpoint.expanduser().resolve()),
                 **{name: getattr(args, name) for name in ("limit", "epochs", "lr", "beta", "batch_size", "seed",
                                                            "max_new_tokens")}}
        defaults = {"limit": None, "max_new_tokens": MAX_NEW_TOKENS_DEFAULT,
                    **{name: BOOK_DPO[name] for name in ("epochs", "beta", "batch_size", "seed")}}
        merged = merge_run_settings(given, saved, defaults, args.out, stage)
        merged["lr"] = merged["lr"] or LR["gpt2" if start.get("gpt2_weights") else "scratch"]
        return merged
    return settings


def _split(settings: dict) -> tuple[list[dict], list[dict], list[dict]]:
    try:
        data = load_preference_data()
    except ValueError as error:
        raise UsageError(f"the preference data ({PREFERENCE_DATA}): {error}") from None
    used = data if settings["limit"] is None else data[:settings["limit"]]
    train_data, val_data, test_data = split_instruction_data(used)
    if len(train_data) < settings["batch_size"] or not val_data or not test_data:
        raise UsageError(f"the 85/10/5 split of {len(used)} entries gives {len(train_data)} training, {len(val_data)} "
                         f"validation and {len(test_data)} test entries; training needs one batch of "
                         f"{settings['batch_size']} (--batch-size) and the others one entry each: use a larger --limit")
    return train_data, val_data, test_data


# --- the run ---------------------------------------------------------------------------------------------------


def finetune_preferences(args) -> None:
    """``python -m llmscratch finetune-preferences``: the book's DPO notebook end to end (introduced in
    ch07_finetune_instructions/dpo_preference_tuning)."""
    check_preference_args(args)  # numbers first: nothing is read or written before they are fine
    start = check_start_model(args.checkpoint)
    started = start_run(args, FILES, _settings_of(start))
    if started is None:
        return
    device, stage, saved, settings = started
    out = args.out
    with contextlib.ExitStack() as stack:
        claim_now = claim_when_ready(stack, args, FILES)
        train_data, val_data, test_data = _split(settings)
        try:
            start_model, info = load_instruction_model(args.checkpoint, device)
        except ValueError as error:
            raise UsageError(f"--checkpoint {args.checkpoint}: {error}") from None
        reference_model = frozen_reference(start_model)  # the starting weights, frozen; the policy trains a copy
        tokenizer = gpt2_tokenizer()
        torch.manual_seed(settings["seed"])  # the book seeds before building the loaders
        train_loader, val_loader, _ = create_preference_loaders(
            train_data, val_data, test_data, tokenizer, batch_size=settings["batch_size"], device=device,
            allowed_max_length=info["config"]["context_length"])
        print(f"preference tuning (DPO) of {args.checkpoint} ({info['description']}) on {len(train_data)} entries, "
              f"{settings['epochs']} epoch{'s' * (settings['epochs'] != 1)}, lr {settings['lr']:g}, beta "
              f"{settings['beta']:g}, batch size {settings['batch_size']}, device {device}", file=sys.stderr)
        claim_now()
        note_resumed(out, stage, saved, settings)
        seconds = None
        if stage == "train":
            policy_model, seconds = _train(start_model, reference_model, info, settings, (train_loader, val_loader),
                                           tokenizer, out, resume=bool(saved),
                                           entries=(train_data, val_data, test_data))
        else:
            policy_model, _ = load_instruction_model(out / MODEL, device)
        tracking = read_training_state(out / CHECKPOINT)["history"]
        save_png(plot_dpo_curves(tracking, settings["epochs"]), out / PLOT)
        print(f"generating the responses of the reference and the policy to the {len(test_data)} test entries",
              file=sys.stderr)
        answers = [instruction_responses(model, tokenizer, test_data, max_new_tokens=settings["max_new_tokens"])
                   for model in (reference_model, policy_model.eval())]
        write_json(out / RESPONSES, [{**entry, RESPONSE_KEYS[0]: before, RESPONSE_KEYS[1]: after}
                                      for entry, before, after in zip(test_data, *answers)])
        (out / CHECKPOINT).unlink(missing_ok=True)  # every output is written: the run is complete

    train_margins, val_margins = reward_margins(tracking)
    print(f"final train loss {tracking['train_losses'][-1]:.3f}, val loss {tracking['val_losses'][-1]:.3f}; "
          f"reward margins: train {train_margins[-1]:.3f}, val {val_margins[-1]:.3f}")
    print(f"model: {out / MODEL}")
    print(f"test responses: {out / RESPONSES} ({len(test_data)} entries, before and after)")
    print(f"curves: {out / PLOT}")
    if seconds is not None:
        print(f"training took {seconds:.1f} s")


def _train(policy_model, reference_model, info, settings, loaders, tokenizer, out, *, resume, entries):
    """DPO with the resumable loop; the policy saved as an instruction model with what made it. Returns the policy
    (eval mode) and the seconds of training."""
    train_loader, val_loader = loaders
    start = time.perf_counter()
    torch.manual_seed(settings["seed"])  # the book seeds again before training
    optimizer = torch.optim.AdamW(policy_model.parameters(), lr=settings["lr"], weight_decay=BOOK_DPO["weight_decay"])
    guard = stop_at_non_finite_loss(policy_model)
    with contextlib.redirect_stdout(sys.stderr):  # training lines are progress
        tracking = train_model_dpo_resumable(
            policy_model, reference_model, train_loader, val_loader, optimizer, settings["epochs"], settings["beta"],
            BOOK_DPO["eval_freq"], BOOK_DPO["eval_iter"], format_input(entries[1][0]), tokenizer,
            checkpoint_path=out / CHECKPOINT, resume=resume, config=info["config"], run_settings=settings,
            progress=True)
    guard.remove()
    seconds = time.perf_counter() - start
    train_margins, val_margins = reward_margins(tracking)
    started_from = {key: value for key, value in info.items()
                    if key not in ("config", "base", "gpt2_weights", "description", "prompt_style")}
    preference_tuning = {
        "method": "dpo", "data": PREFERENCE_DATA, "start_model": settings["checkpoint"], "limit": settings["limit"],
        "entries": {"train": len(entries[0]), "val": len(entries[1]), "test": len(entries[2])},
        "epochs": settings["epochs"], "lr": settings["lr"], "beta": settings["beta"],
        "weight_decay": BOOK_DPO["weight_decay"], "batch_size": settings["batch_size"], "seed": settings["seed"],
        "final_train_loss": tracking["train_losses"][-1], "final_val_loss": tracking["val_losses"][-1],
        "final_train_reward_margin": train_margins[-1], "final_val_reward_margin": val_margins[-1],
        "train_seconds": round(seconds, 1)}
    save_instruction_model(out / MODEL, policy_model, info["config"], base=info["base"], prompt_style="alpaca",
                           instruction_tuning=started_from, preference_tuning=preference_tuning)
    return policy_model.eval(), seconds


COMMANDS = {"finetune-preferences": finetune_preferences}
