"""The command line's ``finetune-instructions`` (ch07_finetune_instructions): chapter 7 end to end.

Introduced in ch07_finetune_instructions, 7.2 to 7.7; the commands' entry points and ``evaluate`` and ``chat``
live in :mod:`llmscratch.cli_instructions`, what both finetune commands share in :mod:`llmscratch.cli_finetune`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import torch

from .checkpoints import read_training_state
from .classifier import count_trainable_parameters
from .cli_checks import MAX_NEW_TOKENS, UsageError, check_count
from .cli_finetune import (RunFiles, add_finetune_arguments, check_finetune_numbers, check_lora_rank,
                           claim_when_ready, default_base, describe_lora, fill_lora_defaults, given_base, lora_of,
                           merge_run_settings, note_resumed, start_run, stop_at_non_finite_loss)
from .files import save_png, write_json
from .gpt2_tokenizer import gpt2_tokenizer
from .instruction import PROMPT_STYLES
from .instruction_data import (ALPACA_DATA, INSTRUCTION_DATA, create_instruction_loaders, load_alpaca_data,
                               load_instruction_data, split_instruction_data)
from .instruction_run import (build_instruction_model, instruction_model_config, instruction_responses,
                              load_instruction_model, save_instruction_model)
from .lora import merge_lora
from .pretraining import plot_losses, train_model_resumable

MODEL, RESPONSES, PLOT = "instruction_model.pt", "instruction-data-with-response.json", "loss.png"
CHECKPOINT = "instruction_checkpoint.pt"  # the last finished epoch, while training
OUTPUTS = (MODEL, RESPONSES, PLOT)
FILES = RunFiles("finetune-instructions", MODEL, CHECKPOINT, (RESPONSES, PLOT)).register()
BOOK = {"gpt2": "355M", "epochs": 2, "batch_size": 8, "seed": 123, "weight_decay": 0.1, "eval_freq": 5,
        "eval_iter": 5, "max_new_tokens": 256}  # the book's settings of 7.5 to 7.7
LR = {"gpt2": 5e-5, "scratch": 1e-3}  # the book's for GPT-2; random weights learn nothing at 5e-5 in two epochs
RESPONSE_KEY = "model_response"  # the book's key of the responses (7.7)
DATA_SETS = {INSTRUCTION_DATA: load_instruction_data, ALPACA_DATA: load_alpaca_data}  # --data's registry names


def add_finetune_parser(commands, device_help: str) -> None:
    """Add ``finetune-instructions`` to the subparsers ``commands`` (introduced in ch07_finetune_instructions)."""
    finetune = commands.add_parser(
        "finetune-instructions", help="finetune GPT-2 (or a model from scratch) to follow instructions (chapter 7)",
        description="Chapter 7 end to end: split the instruction data 85/10/5 as the book does, finetune GPT-2 "
                    "medium with chapter 5's training loop and the book's settings, and answer the test "
                    f"entries (greedy, batched with the KV cache). Writes OUT/{MODEL} (the model, LoRA adapters "
                    f"merged in, with what made it), OUT/{RESPONSES} (the test entries with a '{RESPONSE_KEY}' "
                    f"key, as the book's file) and OUT/{PLOT}; while it trains, OUT/{CHECKPOINT} holds the last "
                    "finished epoch (--resume goes on from it).")
    add_finetune_arguments(finetune, default_size=BOOK["gpt2"], device_help=device_help, out="runs/instructions",
                           lr_help="AdamW learning rate (default: 5e-5 for GPT-2, the book's; 1e-3 with --tiny or "
                                   "--from-scratch, as random weights learn next to nothing at 5e-5)",
                           lora_help="")
    finetune.add_argument("--prompt-style", choices=sorted(PROMPT_STYLES),
                          help="the book's Alpaca prompt or exercise 7.1's Phi-3 prompt (default: alpaca)")
    finetune.add_argument("--mask-instructions", action="store_true", default=None,
                          help="no loss on the prompt's tokens, only on the response (exercise 7.2)")
    finetune.add_argument("--data", help=f"{INSTRUCTION_DATA} (the book's 1,100 entries), {ALPACA_DATA} (exercise "
                          "7.3, downloaded once, 22 MB) or a path to a JSON file holding a list of {instruction, "
                          f"input, output}} entries (default: {INSTRUCTION_DATA})")
    finetune.add_argument("--limit", type=int, metavar="N",
                          help="use only the first N entries of the data, before the 85/10/5 split, for quick "
                               "runs (e.g. 20: 17 training, 1 validation and 2 test entries)")
    finetune.add_argument("--max-new-tokens", type=int,
                          help="longest response to each test entry, in tokens (default: 256, the book's)")


# --- the run -------------------------------------------------------------------------------------


def check_finetune_args(args) -> None:
    """The numbers and option combinations of ``finetune-instructions``, checked before any work
    (introduced in ch07_finetune_instructions, 7.6)."""
    check_finetune_numbers(args)
    check_count("limit", args.limit)
    check_count("max_new_tokens", args.max_new_tokens, MAX_NEW_TOKENS)
    if args.data is not None and not args.data.strip():
        raise UsageError(f"--data is empty: use {' or '.join(DATA_SETS)}, or a path to a JSON file")


def _data_setting(name: str | None) -> str | None:
    """``--data`` as the run records it: a registry name, or the absolute path of a file."""
    return name if name is None or name in DATA_SETS else str(Path(name).expanduser().resolve())


def _settings(args, stage: str, saved: dict) -> dict:
    """The run's settings: the options, else the saved run's (``--resume``), else the book's."""
    given = {"base": given_base(args), "data": _data_setting(args.data), **{name: getattr(args, name) for name in (
        "prompt_style", "mask_instructions", "lora_rank", "lora_alpha", "lora_scaling", "limit", "epochs", "lr",
        "batch_size", "seed", "max_new_tokens")}}
    defaults = {"base": default_base(BOOK["gpt2"]), "data": INSTRUCTION_DATA, "prompt_style": "alpaca",
                "mask_instructions": False,
                **{name: BOOK[name] for name in ("epochs", "batch_size", "seed", "max_new_tokens")}}
    settings = merge_run_settings(given, saved, defaults, args.out, stage)
    fill_lora_defaults(settings)
    settings["lr"] = settings["lr"] or LR["gpt2" if settings["base"].startswith("gpt2-") else "scratch"]
    return settings


def _read_data(name: str) -> list[dict]:
    """The entries of a registry data set or of a JSON file (``name``: its absolute path), checked."""
    if name in DATA_SETS:
        try:
            return DATA_SETS[name]()
        except ValueError as error:
            raise UsageError(f"--data {name}: {error}") from None
    path = Path(name)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--data {name}: {what} (use {' or '.join(DATA_SETS)}, or a path to a JSON file holding "
                         "a list of {instruction, input, output} entries)")
    try:
        return load_instruction_data(path)
    except ValueError as error:  # not JSON, not a list, entries with other fields
        raise UsageError(f"--data: {error}") from None


def _split(data: list[dict], settings: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """The book's 85/10/5 split of the first ``--limit`` entries, each part large enough."""
    limit, batch_size = settings["limit"], settings["batch_size"]
    used = data if limit is None else data[:limit]
    train_data, val_data, test_data = split_instruction_data(used)
    if len(train_data) < batch_size or not val_data or not test_data:
        limited = len(used) < len(data)
        raise UsageError(f"the 85/10/5 split of {'the first' if limited else 'the'} {len(used)} entries of --data "
                         f"gives {len(train_data)} training, {len(val_data)} validation and {len(test_data)} test "
                         f"entries; training needs one batch of {batch_size} (--batch-size) and the others one "
                         f"entry each: use more entries{' (a larger --limit)' if limited else ''}")
    return train_data, val_data, test_data


def _build_model(settings: dict, pretrained: bool):
    lora, _ = lora_of(settings)
    try:  # GPT2DownloadError (an OSError): one line, exit 2
        return build_instruction_model(settings["base"], lora_rank=None if lora is None else lora["rank"],
                                       lora_alpha=None if lora is None else lora["alpha"],
                                       lora_scaling="book" if lora is None else lora["scaling"], pretrained=pretrained)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None


def finetune_instructions(args) -> None:
    """``python -m llmscratch finetune-instructions``: chapter 7 end to end (introduced in
    ch07_finetune_instructions, 7.2 to 7.7)."""
    check_finetune_args(args)  # numbers first: nothing is read, downloaded or written before they are fine
    started = start_run(args, FILES, _settings)
    if started is None:
        return
    device, stage, saved, settings = started
    out = args.out
    check_lora_rank(settings["lora_rank"], instruction_model_config(settings["base"]))
    with contextlib.ExitStack() as stack:
        claim_now = claim_when_ready(stack, args, FILES)
        train_data, val_data, test_data = _split(_read_data(args.data or settings["data"]), settings)
        torch.manual_seed(settings["seed"])  # random weights and LoRA's adapters draw from it
        model, config = _build_model(settings, pretrained=not saved)
        trainable = count_trainable_parameters(model)
        tokenizer = gpt2_tokenizer()  # an entry may quote <|endoftext|>
        torch.manual_seed(settings["seed"])  # the book seeds before building the loaders (7.4)
        train_loader, val_loader, _ = create_instruction_loaders(
            train_data, val_data, test_data, tokenizer, batch_size=settings["batch_size"], device=device,
            allowed_max_length=config["context_length"], prompt_style=settings["prompt_style"],
            mask_instructions=settings["mask_instructions"])
        epochs = settings["epochs"]
        print(f"finetuning {settings['base']} to follow instructions ({describe_lora(settings, 'all weights')}: "
              f"{trainable:,} trainable parameters) on {len(train_data)} entries, {epochs} epoch"
              f"{'s' * (epochs != 1)}, lr {settings['lr']:g}, batch size {settings['batch_size']}, prompt style "
              f"{settings['prompt_style']}{', prompt tokens masked' if settings['mask_instructions'] else ''}, "
              f"device {device}", file=sys.stderr)
        claim_now()
        note_resumed(out, stage, saved, settings)
        seconds = None
        if stage == "train":
            model, seconds = _train(model, config, settings, (train_loader, val_loader), tokenizer, device, out,
                                    entries={"train": len(train_data), "val": len(val_data), "test": len(test_data)},
                                    trainable=trainable, resume=bool(saved))
        else:
            model, _ = _load_model(out / MODEL, device)
        history = read_training_state(out / CHECKPOINT)["history"]
        train_losses, val_losses = history["train_losses"], history["val_losses"]
        figure = plot_losses(torch.linspace(0, epochs, len(train_losses)), history["track_tokens_seen"],
                             train_losses, val_losses)
        save_png(figure, out / PLOT)
        print(f"generating the responses to the {len(test_data)} test entries", file=sys.stderr)
        responses = instruction_responses(model, tokenizer, test_data, prompt_style=settings["prompt_style"],
                                          max_new_tokens=settings["max_new_tokens"])
        write_json(out / RESPONSES, [{**entry, RESPONSE_KEY: response}
                                      for entry, response in zip(test_data, responses)])
        (out / CHECKPOINT).unlink(missing_ok=True)  # every output is written: the run is complete

    print(f"final train loss {train_losses[-1]:.3f}, val loss {val_losses[-1]:.3f}")
    print(f"model: {out / MODEL}")
    print(f"test responses: {out / RESPONSES} ({len(test_data)} entries; score them with: python -m llmscratch "
          f"evaluate --responses {out / RESPONSES})")
    print(f"loss plot: {out / PLOT}")
    if seconds is not None:
        print(f"training took {seconds:.1f} s")


def _train(model, config, settings, loaders, tokenizer, device, out, *, entries, trainable, resume):
    """Chapter 5's loop (``train_model_resumable``: a checkpoint after every epoch), LoRA's adapters merged, the
    model saved with what made it; returns the model (eval mode) and the seconds of training."""
    train_loader, val_loader = loaders
    model.to(device)
    start = time.perf_counter()
    torch.manual_seed(settings["seed"])  # the book seeds again before training (7.6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=BOOK["weight_decay"])
    start_context = PROMPT_STYLES[settings["prompt_style"]].format_input(val_loader.dataset.data[0])
    guard = stop_at_non_finite_loss(model)
    with contextlib.redirect_stdout(sys.stderr):  # training lines are progress
        train_losses, val_losses, _ = train_model_resumable(
            model, train_loader, val_loader, optimizer, device, settings["epochs"], BOOK["eval_freq"],
            BOOK["eval_iter"], start_context, tokenizer, checkpoint_path=out / CHECKPOINT, resume=resume,
            config=config, run_settings=settings, progress=True)
    guard.remove()
    seconds = time.perf_counter() - start
    lora, _ = lora_of(settings)
    if lora is not None:
        merge_lora(model)  # a plain GPTModel: what load_instruction_model builds
    made_with = {
        "mask_instructions": settings["mask_instructions"], "lora": lora, "data": settings["data"],
        "limit": settings["limit"], "entries": entries, "epochs": settings["epochs"], "lr": settings["lr"],
        "weight_decay": BOOK["weight_decay"], "batch_size": settings["batch_size"], "seed": settings["seed"],
        "eval_freq": BOOK["eval_freq"], "eval_iter": BOOK["eval_iter"], "trainable_parameters": trainable,
        "final_train_loss": train_losses[-1], "final_val_loss": val_losses[-1], "train_seconds": round(seconds, 1),
        "device": str(device)}
    save_instruction_model(out / MODEL, model, config, base=settings["base"], prompt_style=settings["prompt_style"],
                           **made_with)
    return model.eval(), seconds


def _load_model(path: Path, device):
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--checkpoint {path}: {what} (give the {MODEL} of finetune-instructions)")
    try:
        return load_instruction_model(path, device)
    except ValueError as error:  # not a checkpoint, a checkpoint of another kind, a newer version...
        raise UsageError(str(error)) from None
