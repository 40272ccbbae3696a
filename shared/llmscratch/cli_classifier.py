"""The command line's spam classifier: ``python -m llmscratch finetune-classifier | classify``.

Introduced in ch06_finetune_classification. ``finetune-classifier`` runs chapter 6 end to end with the package's
pieces: the SMS Spam Collection split as in the book (``llmscratch.classification_data``), GPT-2 (or a model
from random weights) turned into a classifier (``prepare_classifier``; LoRA as in appendix E with
``--lora-rank``), ``train_classifier_resumable`` with the book's settings (AdamW, weight decay 0.1, evaluation
every 50 steps on 5 batches), then the book's accuracies plus precision, recall and F1 of spam on the
natural-ratio test set. It writes, each file atomically, ``OUT/classifier.pt`` (``save_classifier``; LoRA
adapters merged in, so it loads into a plain ``GPTModel``), ``OUT/metrics.json`` and three plots; while it
trains, ``OUT/classifier_checkpoint.pt`` holds the last finished epoch, and ``--resume`` goes on from where an
interrupted run stopped (:mod:`llmscratch.cli_finetune`, shared with ``finetune-instructions``). ``classify``
loads the classifier and prints ``spam`` or ``not spam`` for a text.

As in the rest of the command line (:mod:`llmscratch.cli`): arguments are checked before any work, bad input is
one ``error: ...`` line with exit code 2, training lines go to stderr and results to stdout.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import tiktoken
import torch

from .checkpoints import read_training_state
from .classification import calc_accuracy_loader, classify_review, plot_values
from .classification_data import CLASS_NAMES, SPLIT_FILES, create_spam_loaders, load_spam_data, prepare_spam_csvs
from .classifier import (TRAINABLE_LAYERS, classification_metrics, count_trainable_parameters, load_classifier,
                         plot_confusion_matrix, prepare_classifier, save_classifier, train_classifier_resumable)
from .cli_checks import UsageError
from .cli_finetune import (RunFiles, add_finetune_arguments, check_finetune_numbers, check_lora_rank,
                           claim_when_ready, default_base, describe_lora, fill_lora_defaults, given_base,
                           interrupted_message, lora_of, merge_run_settings, note_resumed, start_run,
                           stop_at_non_finite_loss)
from .files import save_png, write_json
from .gpt import GPT_CONFIG_TINY, GPTModel
from .gpt2_tokenizer import gpt2_tokenizer
from .gpt2_weights import load_pretrained_gpt2, pretrained_gpt2_config
from .lora import add_lora, merge_lora
from .settings import get_settings, resolve_device

CLASSIFIER, METRICS, CHECKPOINT = "classifier.pt", "metrics.json", "classifier_checkpoint.pt"
PLOTS = {"loss": "loss.png", "accuracy": "accuracy.png", "confusion": "confusion_matrix.png"}
OUTPUTS = (CLASSIFIER, METRICS, *PLOTS.values())
FILES = RunFiles("finetune-classifier", CLASSIFIER, CHECKPOINT, (METRICS, *PLOTS.values())).register()
BOOK = {"epochs": 5, "batch_size": 8, "seed": 123, "weight_decay": 0.1, "eval_freq": 50, "eval_iter": 5}
LR = {"gpt2": 5e-5, "scratch": 1e-3}  # the book's for GPT-2 (also appendix E); a random model needs more
INTERRUPTED = {"finetune-classifier": interrupted_message(FILES), "classify": "interrupted"}


def add_classifier_commands(commands, device_help: str) -> None:
    """Add ``finetune-classifier`` and ``classify`` to the subparsers ``commands`` of the course's parser
    (introduced in ch06_finetune_classification)."""
    finetune = commands.add_parser(
        "finetune-classifier", help="finetune GPT-2 (or a model from scratch) as a spam classifier (chapter 6)",
        description="Chapter 6 end to end: split the SMS Spam Collection as the book does, turn GPT-2 into a "
                    f"spam classifier and finetune it. Writes OUT/{CLASSIFIER}, OUT/{METRICS} (accuracies; "
                    "precision, recall and F1 of spam on a test set with the natural 13.4% of spam) and plots "
                    f"of the loss, the accuracy and the confusion matrix; while it trains, OUT/{CHECKPOINT} holds "
                    "the last finished epoch (--resume goes on from it).")
    add_finetune_arguments(finetune, default_size="124M", device_help=device_help, out="runs/classifier",
                           lr_help="AdamW learning rate (default: 5e-5 for GPT-2, the book's; 1e-3 from scratch)",
                           lora_help=", the head's included")
    finetune.add_argument("--trainable-layers", choices=TRAINABLE_LAYERS,
                          help="besides the new head, train the last block and final norm (last_block), every "
                               "layer (all) or nothing else (none) (default: last_block for GPT-2, all from "
                               "scratch)")

    classify = commands.add_parser(
        "classify", help="say whether a text is spam, with a classifier of finetune-classifier",
        description=f"Print 'spam' or 'not spam' for TEXT, with a {CLASSIFIER} written by finetune-classifier.")
    classify.add_argument("text", metavar="TEXT", help="the message to classify")
    classify.add_argument("--checkpoint", type=Path, required=True, help=f"a {CLASSIFIER} of finetune-classifier")
    classify.add_argument("--device", help=device_help)


def check_finetune_args(args) -> None:
    """The numbers and option combinations of ``finetune-classifier``, checked before any work
    (introduced in ch06_finetune_classification)."""
    check_finetune_numbers(args)
    if args.lora_rank is not None and args.trainable_layers is not None:
        raise UsageError(f"--lora-rank cannot go with --trainable-layers {args.trainable_layers}: LoRA freezes "
                         "every weight and trains only its adapters (appendix E); drop one of them")


def _settings(args, stage: str, saved: dict) -> dict:
    """The run's settings: the options, else the saved run's (``--resume``), else the book's."""
    given = {"base": given_base(args), **{name: getattr(args, name) for name in (
        "trainable_layers", "lora_rank", "lora_alpha", "lora_scaling", "epochs", "lr", "batch_size", "seed")}}
    defaults = {"base": default_base("124M"), **{name: BOOK[name] for name in ("epochs", "batch_size", "seed")}}
    settings = merge_run_settings(given, saved, defaults, args.out, stage)
    fill_lora_defaults(settings)
    scratch = not settings["base"].startswith("gpt2-")
    if settings["lora_rank"] is None:
        settings["trainable_layers"] = settings["trainable_layers"] or ("all" if scratch else "last_block")
    settings["lr"] = settings["lr"] or LR["scratch" if scratch else "gpt2"]
    return settings


def _config(base: str) -> dict:
    """The ``GPTModel`` config of ``base``: GPT-2's (the book's: qkv_bias, context 1024, no dropout), or the tiny
    GPT's without dropout."""
    if base.startswith("gpt2-"):
        return pretrained_gpt2_config(base.removeprefix("gpt2-"))
    return {**GPT_CONFIG_TINY, "drop_rate": 0.0} if base.startswith("tiny") else pretrained_gpt2_config("124M")


def _build_model(settings: dict, config: dict, pretrained: bool):
    """The GPT of the run's base turned into a two-class classifier, as chapter 6 (and appendix E) prepares it;
    the global seed must be set before (the new head and LoRA's ``A`` draw from it). ``pretrained``: load
    GPT-2's weights (a resumed run loads its own instead)."""
    base = settings["base"]
    if base.startswith("gpt2-") and pretrained:
        try:
            model = load_pretrained_gpt2(base.removeprefix("gpt2-"), config)  # GPT2DownloadError: an OSError
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(str(error)) from None
    else:
        model = GPTModel(config)
    prepare_classifier(model, len(CLASS_NAMES), trainable_layers=settings["trainable_layers"] or "none")
    lora, _ = lora_of(settings)
    if lora is not None:  # appendix E: freeze everything, the new head included, then add the adapters
        add_lora(model, lora["rank"], lora["alpha"], lora["scaling"])
    return model


def _spam_loaders(batch_size: int, seed: int):
    """The train, validation, test and natural-ratio test loaders of the book's split (CSVs in the data folder)."""
    paths = prepare_spam_csvs(get_settings().data_dir / "sms_spam", load_spam_data())
    torch.manual_seed(seed)  # the book seeds before building the loaders
    try:
        return create_spam_loaders([paths[name] for name in SPLIT_FILES], tiktoken.get_encoding("gpt2"), batch_size)
    except ValueError as error:  # e.g. a batch larger than the training set
        raise UsageError(f"--batch-size {batch_size}: {error}") from None


def finetune_classifier(args) -> None:
    """``python -m llmscratch finetune-classifier``: chapter 6 end to end (introduced in
    ch06_finetune_classification)."""
    check_finetune_args(args)  # numbers first: nothing is read, downloaded or written before they are fine
    started = start_run(args, FILES, _settings)
    if started is None:
        return
    device, stage, saved, settings = started
    out = args.out
    config = _config(settings["base"])
    check_lora_rank(settings["lora_rank"], config)
    with contextlib.ExitStack() as stack:
        claim_now = claim_when_ready(stack, args, FILES)
        torch.manual_seed(settings["seed"])  # the book seeds before the new head
        model = _build_model(settings, config, pretrained=not saved)
        trainable = count_trainable_parameters(model)
        loaders = _spam_loaders(settings["batch_size"], settings["seed"])
        how = describe_lora(settings, f"trainable layers {settings['trainable_layers']}")
        print(f"finetuning a classifier from {settings['base']} ({how}: {trainable:,} trainable parameters), "
              f"{settings['epochs']} epoch{'s' * (settings['epochs'] != 1)}, lr {settings['lr']:g}, batch size "
              f"{settings['batch_size']}, device {device}", file=sys.stderr)
        claim_now()
        note_resumed(out, stage, saved, settings)
        seconds = None
        if stage == "train":
            model, seconds = _train(model, settings, config, loaders, device, out, resume=bool(saved))
        else:
            model, _ = _load_classifier(out / CLASSIFIER, device)
        accuracies, natural = _write_outputs(model, settings, trainable, loaders, device, out, seconds)
        (out / CHECKPOINT).unlink(missing_ok=True)  # every output is written: the run is complete

    print(f"Training accuracy: {accuracies['train_accuracy']*100:.2f}%")
    print(f"Validation accuracy: {accuracies['val_accuracy']*100:.2f}%")
    print(f"Test accuracy: {accuracies['test_accuracy']*100:.2f}%")
    print(f"natural-ratio test set ({natural['num_examples']} messages): spam precision {natural['precision']:.3f}, "
          f"recall {natural['recall']:.3f}, F1 {natural['f1']:.3f}")
    print(f"classifier: {out / CLASSIFIER}")
    print(f"metrics: {out / METRICS}; plots: {', '.join(str(out / name) for name in PLOTS.values())}")
    if seconds is not None:
        print(f"training took {seconds:.1f} s")


def _train(model, settings, config, loaders, device, out, *, resume):
    """Train with a checkpoint after every epoch, merge LoRA's adapters and save the classifier; returns the
    model (a plain ``GPTModel``, what ``load_classifier`` builds) and the seconds of training."""
    train_loader, val_loader, _, _ = loaders
    model.to(device)
    start = time.perf_counter()
    torch.manual_seed(settings["seed"])  # the book seeds again before training
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=BOOK["weight_decay"])
    guard = stop_at_non_finite_loss(model)
    with contextlib.redirect_stdout(sys.stderr):  # training lines are progress
        train_classifier_resumable(model, train_loader, val_loader, optimizer, device, settings["epochs"],
                                   BOOK["eval_freq"], BOOK["eval_iter"], checkpoint_path=out / CHECKPOINT,
                                   resume=resume, config=config, run_settings=settings, progress=True)
    guard.remove()
    seconds = time.perf_counter() - start
    if settings["lora_rank"] is not None:
        merge_lora(model)  # a plain GPTModel: what load_classifier builds
    save_classifier(out / CLASSIFIER, model, config, max_length=train_loader.dataset.max_length)
    return model.eval(), seconds


def _write_outputs(model, settings, trainable, loaders, device, out, seconds):
    """The accuracies, the natural-ratio metrics and the plots (from the checkpoint's history), each file
    written atomically; returns the accuracies and the natural-ratio metrics."""
    train_loader, val_loader, test_loader, natural_loader = loaders
    model.eval()
    accuracies = {f"{name}_accuracy": calc_accuracy_loader(loader, model, device)
                  for name, loader in (("train", train_loader), ("val", val_loader), ("test", test_loader))}
    natural = classification_metrics(natural_loader, model, device)
    lora, _ = lora_of(settings)
    metrics = {"base": settings["base"], "epochs": settings["epochs"], "trainable_layers": settings["trainable_layers"],
               "lora": lora, "lr": settings["lr"], "batch_size": settings["batch_size"], "seed": settings["seed"],
               "trainable_parameters": trainable, **accuracies, "natural_test": natural,
               "train_seconds": None if seconds is None else round(seconds, 1), "device": str(device)}
    write_json(out / METRICS, metrics, indent=2)
    state = read_training_state(out / CHECKPOINT)
    history, examples_seen = state["history"], state["tokens_seen"]
    for label, train_name, val_name in (("loss", "train_losses", "val_losses"), ("accuracy", "train_accs", "val_accs")):
        train_values, val_values = history.get(train_name, []), history.get(val_name, [])
        epochs_seen = torch.linspace(0, settings["epochs"], len(train_values))
        seen = torch.linspace(0, examples_seen, len(train_values))
        save_png(plot_values(epochs_seen, seen, train_values, val_values, label=label), out / PLOTS[label])
    save_png(plot_confusion_matrix(natural["confusion_matrix"]), out / PLOTS["confusion"])
    return accuracies, natural


def _load_classifier(path: Path, device):
    try:
        return load_classifier(path, device)
    except ValueError as error:  # not a checkpoint, a checkpoint of another kind, a newer version...
        raise UsageError(str(error)) from None


def classify(args) -> None:
    """``python -m llmscratch classify``: ``spam`` or ``not spam`` for one text (introduced in
    ch06_finetune_classification, 6.8)."""
    if not args.text.strip():
        raise UsageError("the text to classify is empty: give a message, e.g. \"You won a prize!\"")
    device = resolve_device(args.device)
    path = args.checkpoint
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--checkpoint {path}: {what} (give the {CLASSIFIER} of finetune-classifier)")
    model, info = _load_classifier(path, device)
    if info["num_classes"] != len(CLASS_NAMES):
        raise UsageError(f"{path} is a classifier of {info['num_classes']} classes, not a spam classifier "
                         f"({' / '.join(CLASS_NAMES)})")
    print(classify_review(args.text, model, gpt2_tokenizer(), device, max_length=info["max_length"],
                          pad_token_id=info["pad_token_id"], token_position=info["token_position"]))


COMMANDS = {"finetune-classifier": finetune_classifier, "classify": classify}
