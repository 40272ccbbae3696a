"""The command line's spam classifier: ``python -m llmscratch finetune-classifier | classify``.

Introduced in ch06_finetune_classification. ``finetune-classifier`` runs chapter 6 end to end with the package's
pieces: the SMS Spam Collection split as in the book (``llmscratch.classification_data``), GPT-2 (or a model
from random weights) turned into a classifier (``prepare_classifier``; LoRA as in appendix E with
``--lora-rank``), ``train_classifier_resumable`` with the book's settings (AdamW, weight decay 0.1, evaluation
every 50 steps on 5 batches), then the book's accuracies plus precision, recall and F1 of spam on the
natural-ratio test set. It writes, each file atomically, ``OUT/classifier.pt`` (``save_classifier``; LoRA
adapters merged in, so it loads into a plain ``GPTModel``), ``OUT/metrics.json`` and three plots. ``classify``
loads that file and prints ``spam`` or ``not spam`` for a text.

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

from .classification import calc_accuracy_loader, classify_review, plot_values
from .classification_data import CLASS_NAMES, SPLIT_FILES, create_spam_loaders, load_spam_data, prepare_spam_csvs
from .classifier import (TRAINABLE_LAYERS, classification_metrics, count_trainable_parameters, load_classifier,
                         plot_confusion_matrix, prepare_classifier, save_classifier, train_classifier_resumable)
from .cli_checks import (SIZES, UsageError, check_count, check_out_folder, check_real, check_seed,
                         claimed_out_folder)
from .files import save_png, write_json
from .gpt import GPT_CONFIG_TINY, GPTModel
from .gpt2_weights import load_pretrained_gpt2, pretrained_gpt2_config
from .lora import merge_lora, replace_linear_with_lora
from .settings import get_settings, resolve_device

CLASSIFIER, METRICS = "classifier.pt", "metrics.json"
PLOTS = {"loss": "loss.png", "accuracy": "accuracy.png", "confusion": "confusion_matrix.png"}
OUTPUTS = (CLASSIFIER, METRICS, *PLOTS.values())
BOOK = {"epochs": 5, "batch_size": 8, "seed": 123, "weight_decay": 0.1, "eval_freq": 50, "eval_iter": 5}
LR = {"gpt2": 5e-5, "scratch": 1e-3}  # the book's for GPT-2 (also appendix E); a random model needs more
INTERRUPTED = {"finetune-classifier": "interrupted: no classifier was saved", "classify": "interrupted"}


def add_classifier_commands(commands, device_help: str) -> None:
    """Add ``finetune-classifier`` and ``classify`` to the subparsers ``commands`` of the course's parser
    (introduced in ch06_finetune_classification)."""
    finetune = commands.add_parser(
        "finetune-classifier", help="finetune GPT-2 (or a model from scratch) as a spam classifier (chapter 6)",
        description="Chapter 6 end to end: split the SMS Spam Collection as the book does, turn GPT-2 into a "
                    "spam classifier and finetune it. Writes OUT/classifier.pt, OUT/metrics.json (accuracies; "
                    "precision, recall and F1 of spam on a test set with the natural 13.4% of spam) and plots "
                    "of the loss, the accuracy and the confusion matrix.")
    base = finetune.add_mutually_exclusive_group()
    base.add_argument("--gpt2", choices=SIZES, help="start from OpenAI's GPT-2 of this size (default: 124M)")
    base.add_argument("--from-scratch", action="store_true",
                      help="GPT-2 124M's architecture with random weights, every layer trained")
    base.add_argument("--tiny", action="store_true", help="a tiny GPT from random weights, for quick checks "
                      "(the default when LLMSCRATCH_SMOKE=1)")
    finetune.add_argument("--epochs", type=int, default=BOOK["epochs"], help="default: 5, the book's")
    finetune.add_argument("--trainable-layers", choices=TRAINABLE_LAYERS,
                          help="besides the new head, train the last block and final norm (last_block), every "
                               "layer (all) or nothing else (none) (default: last_block for GPT-2, all from "
                               "scratch)")
    finetune.add_argument("--lora-rank", type=int, help="LoRA as in appendix E: freeze every weight and train "
                          "adapters of this rank on every linear layer, the head's included (the book: 16)")
    finetune.add_argument("--lora-alpha", type=float, help="scale of the LoRA adapters (default: the rank)")
    finetune.add_argument("--lr", type=float, help="AdamW learning rate (default: 5e-5 for GPT-2, the book's; "
                          "1e-3 from scratch)")
    finetune.add_argument("--batch-size", type=int, default=BOOK["batch_size"], help="default: 8")
    finetune.add_argument("--seed", type=int, default=BOOK["seed"], help="default: 123, the book's")
    finetune.add_argument("--device", help=device_help)
    finetune.add_argument("--out", type=Path, default=Path("runs/classifier"),
                          help="output folder (default: runs/classifier)")

    classify = commands.add_parser(
        "classify", help="say whether a text is spam, with a classifier of finetune-classifier",
        description="Print 'spam' or 'not spam' for TEXT, with a classifier.pt written by finetune-classifier.")
    classify.add_argument("text", metavar="TEXT", help="the message to classify")
    classify.add_argument("--checkpoint", type=Path, required=True, help=f"a {CLASSIFIER} of finetune-classifier")
    classify.add_argument("--device", help=device_help)


def check_finetune_args(args) -> None:
    """The numbers and option combinations of ``finetune-classifier``, checked before any work
    (introduced in ch06_finetune_classification)."""
    check_count("epochs", args.epochs)
    check_count("batch_size", args.batch_size)
    check_count("lora_rank", args.lora_rank)
    check_real("lora_alpha", args.lora_alpha, zero_ok=False)
    check_real("lr", args.lr, zero_ok=False, why=" (a learning rate of 0 trains nothing)")
    check_seed(args.seed)
    if args.lora_alpha is not None and args.lora_rank is None:
        raise UsageError("--lora-alpha needs --lora-rank: it scales the LoRA adapters")
    if args.lora_rank is not None and args.trainable_layers is not None:
        raise UsageError(f"--lora-rank cannot go with --trainable-layers {args.trainable_layers}: LoRA freezes "
                         "every weight and trains only its adapters (appendix E); drop one of them")


def _base(args) -> str:
    """What the classifier starts from: ``gpt2-SIZE``, ``from-scratch`` or ``tiny from scratch``."""
    if args.tiny or (args.gpt2 is None and not args.from_scratch and get_settings().smoke):
        return "tiny from scratch"
    return "from-scratch" if args.from_scratch else f"gpt2-{args.gpt2 or '124M'}"


def _build_model(base: str, trainable_layers: str, lora_rank, lora_alpha):
    """``(model, config)``: the GPT of ``base`` turned into a two-class classifier, as chapter 6 (and appendix E)
    prepares it; the global seed must be set before (the new head and LoRA's ``A`` draw from it)."""
    if base.startswith("gpt2-"):
        size = base.removeprefix("gpt2-")
        config = pretrained_gpt2_config(size)  # the book's: qkv_bias, context 1024, no dropout
        try:
            model = load_pretrained_gpt2(size, config)  # GPT2DownloadError (an OSError): one line, exit 2
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(str(error)) from None
    else:
        config = {**GPT_CONFIG_TINY, "drop_rate": 0.0} if base.startswith("tiny") else pretrained_gpt2_config("124M")
        model = GPTModel(config)
    prepare_classifier(model, len(CLASS_NAMES), trainable_layers=trainable_layers)
    if lora_rank is not None:  # appendix E: freeze everything, the new head included, then add the adapters
        for param in model.parameters():
            param.requires_grad = False
        replace_linear_with_lora(model, rank=lora_rank, alpha=lora_alpha)
    return model, config


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
    device = resolve_device(args.device)
    out = args.out
    check_out_folder(out, OUTPUTS, product=CLASSIFIER)
    base = _base(args)
    scratch = not base.startswith("gpt2-")
    layers = None if args.lora_rank is not None else args.trainable_layers or ("all" if scratch else "last_block")
    alpha = None if args.lora_rank is None else args.lora_alpha if args.lora_alpha is not None else args.lora_rank
    lr = args.lr if args.lr is not None else LR["scratch" if scratch else "gpt2"]

    torch.manual_seed(args.seed)  # the book seeds before the new head
    model, config = _build_model(base, layers or "none", args.lora_rank, alpha)
    trainable = count_trainable_parameters(model)
    train_loader, val_loader, test_loader, natural_loader = _spam_loaders(args.batch_size, args.seed)
    how = f"LoRA rank {args.lora_rank}, alpha {alpha:g}" if layers is None else f"trainable layers {layers}"
    print(f"finetuning a classifier from {base} ({how}: {trainable:,} trainable parameters), {args.epochs} "
          f"epoch{'s' * (args.epochs != 1)}, lr {lr:g}, batch size {args.batch_size}, device {device}",
          file=sys.stderr)
    model.to(device)
    with claimed_out_folder(out, CLASSIFIER):
        start = time.perf_counter()
        torch.manual_seed(args.seed)  # the book seeds again before training
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=BOOK["weight_decay"])
        with contextlib.redirect_stdout(sys.stderr):  # training lines are progress
            train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_resumable(
                model, train_loader, val_loader, optimizer, device, args.epochs, BOOK["eval_freq"],
                BOOK["eval_iter"], progress=True)
        seconds = time.perf_counter() - start
        if args.lora_rank is not None:
            merge_lora(model)  # a plain GPTModel: what load_classifier builds
        model.eval()
        accuracies = {f"{name}_accuracy": calc_accuracy_loader(loader, model, device)
                      for name, loader in (("train", train_loader), ("val", val_loader), ("test", test_loader))}
        natural = classification_metrics(natural_loader, model, device)
        save_classifier(out / CLASSIFIER, model, config, max_length=train_loader.dataset.max_length)
        metrics = {"base": base, "epochs": args.epochs, "trainable_layers": layers,
                   "lora": None if layers else {"rank": args.lora_rank, "alpha": alpha}, "lr": lr,
                   "batch_size": args.batch_size, "seed": args.seed, "trainable_parameters": trainable,
                   **accuracies, "natural_test": natural, "train_seconds": round(seconds, 1), "device": str(device)}
        write_json(out / METRICS, metrics, indent=2)
        for label, train_values, val_values in (("loss", train_losses, val_losses),
                                                ("accuracy", train_accs, val_accs)):
            epochs_seen = torch.linspace(0, args.epochs, len(train_values))
            seen = torch.linspace(0, examples_seen, len(train_values))
            save_png(plot_values(epochs_seen, seen, train_values, val_values, label=label), out / PLOTS[label])
        save_png(plot_confusion_matrix(natural["confusion_matrix"]), out / PLOTS["confusion"])

    print(f"Training accuracy: {accuracies['train_accuracy']*100:.2f}%")
    print(f"Validation accuracy: {accuracies['val_accuracy']*100:.2f}%")
    print(f"Test accuracy: {accuracies['test_accuracy']*100:.2f}%")
    print(f"natural-ratio test set ({natural['num_examples']} messages): spam precision {natural['precision']:.3f}, "
          f"recall {natural['recall']:.3f}, F1 {natural['f1']:.3f}")
    print(f"classifier: {out / CLASSIFIER}")
    print(f"metrics: {out / METRICS}; plots: {', '.join(str(out / name) for name in PLOTS.values())}")
    print(f"training took {seconds:.1f} s")


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
    try:
        model, info = load_classifier(path, device)
    except ValueError as error:  # not a checkpoint, a checkpoint of another kind, a newer version...
        raise UsageError(str(error)) from None
    if info["num_classes"] != len(CLASS_NAMES):
        raise UsageError(f"{path} is a classifier of {info['num_classes']} classes, not a spam classifier "
                         f"({' / '.join(CLASS_NAMES)})")
    print(classify_review(args.text, model, tiktoken.get_encoding("gpt2"), device, max_length=info["max_length"],
                          pad_token_id=info["pad_token_id"], token_position=info["token_position"]))


COMMANDS = {"finetune-classifier": finetune_classifier, "classify": classify}
