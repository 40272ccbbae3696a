"""The course's command line: ``python -m llmscratch pretrain | generate | download`` (ch05_pretraining).

Progress (training lines, bars) goes to stderr, results to stdout. Bad input gets a one-line ``error: ...``
and exit code 2, never a traceback; an interrupted run keeps its last checkpoint intact (checkpoints are
written atomically) and exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import tiktoken
import torch

from . import data
from .attention import ATTENTION_IMPLEMENTATIONS
from .checkpoints import load_checkpoint
from .dataloader import create_dataloader_v1
from .decoding import generate as generate_tokens
from .files import atomic_write
from .gpt import GPT2_CONFIGS, GPTModel
from .gpt2_download import download_gpt2
from .gpt2_weights import load_pretrained_gpt2
from .pretraining import plot_losses, text_to_token_ids, token_ids_to_text, train_model_simple
from .settings import get_device, get_settings

TEXT_DATA = ("the-verdict", "tinyshakespeare")  # course files that are plain text
SIZES = tuple(GPT2_CONFIGS)  # "124M", "355M", "774M", "1558M"
# A tiny model for quick runs (--tiny, or LLMSCRATCH_SMOKE=1): same code, seconds instead of hours on a CPU.
TINY_CONFIG = {"vocab_size": 50257, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2,
               "drop_rate": 0.1, "qkv_bias": False}


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ...``), not the usage block plus the error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m llmscratch",
        description="Command line of the course 'Build a Large Language Model (From Scratch)' in Portuguese: "
                    "pretrain a GPT, sample from it or from GPT-2, download the course's files.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pretrain = commands.add_parser(
        "pretrain", help="train the chapter-5 GPT on a text, with checkpoints and a loss plot",
        description="Train GPTModel on a course text or any UTF-8 file (90/10 split), as in chapter 5. Saves "
                    "OUT/checkpoint.pt after every epoch and OUT/losses.png at the end; --resume goes on from "
                    "OUT/checkpoint.pt.")
    pretrain.add_argument("--data", default="the-verdict",
                          help=f"{' or '.join(TEXT_DATA)}, or a path to a UTF-8 text file (default: the-verdict)")
    pretrain.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="output folder (default: runs/pretrain)")
    pretrain.add_argument("--model", choices=SIZES, default="124M", help="GPT-2 size of the model (default: 124M)")
    pretrain.add_argument("--tiny", action="store_true", help="a tiny model and context 64, for quick checks "
                          "(the default when LLMSCRATCH_SMOKE=1)")
    pretrain.add_argument("--context-length", type=int, default=256, help="tokens per training window (default: 256)")
    pretrain.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    pretrain.add_argument("--batch-size", type=int, default=2, help="default: 2")
    pretrain.add_argument("--lr", type=float, default=4e-4, help="AdamW learning rate (default: 4e-4)")
    pretrain.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default: 0.1)")
    pretrain.add_argument("--eval-freq", type=int, default=5, help="evaluate every N steps (default: 5)")
    pretrain.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation (default: 5)")
    pretrain.add_argument("--attn-impl", choices=list(ATTENTION_IMPLEMENTATIONS), default="scratch",
                          help="attention: the book's code or the fast path (default: scratch)")
    pretrain.add_argument("--start-context", default="Every effort moves you", help="prompt of the samples")
    pretrain.add_argument("--seed", type=int, default=123, help="default: 123, the book's")
    pretrain.add_argument("--device", help="cpu, cuda, mps... (default: LLMSCRATCH_DEVICE, else cuda > mps > cpu)")
    pretrain.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")

    generate = commands.add_parser(
        "generate", help="sample text from a checkpoint or from OpenAI's GPT-2",
        description="Generate text from a checkpoint of `pretrain` (or any GPTModel .pth / GPT-2 .safetensors) "
                    "or from OpenAI's pretrained GPT-2 (--gpt2, downloaded once and cached).")
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint.pt of `pretrain`, a .pth or a .safetensors")
    source.add_argument("--gpt2", choices=SIZES, help="OpenAI's GPT-2 weights of this size")
    generate.add_argument("--prompt", default="Every effort moves you", help="start of the text")
    generate.add_argument("--max-new-tokens", type=int, default=50, help="default: 50")
    generate.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default: 0.0)")
    generate.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    generate.add_argument("--seed", type=int, default=123, help="default: 123")
    generate.add_argument("--device", help="cpu, cuda, mps... (default: LLMSCRATCH_DEVICE, else cuda > mps > cpu)")

    download = commands.add_parser(
        "download", help="fetch the course's data files (and GPT-2 weights) ahead of time",
        description="Download (or copy from LLMSCRATCH_DATA_MIRROR) the course's data files, verified by sha256, "
                    "and optionally OpenAI's GPT-2 weights.")
    download.add_argument("names", nargs="*", metavar="NAME",
                          help=f"data files to fetch (default: all of {', '.join(data.DATA_FILES)})")
    download.add_argument("--gpt2", choices=SIZES, action="append", default=[],
                          help="also download GPT-2 weights of this size (repeatable)")
    return parser


def _device(name):
    if name is None:
        return get_device()
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"unknown device {name!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} but PyTorch sees no CUDA GPU; use --device cpu")
    return device


def _read_text(name: str) -> tuple[str, str]:
    if name in TEXT_DATA:
        return data.get_data(name).read_text(encoding="utf-8"), name
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"--data {name}: no such file (use {' or '.join(TEXT_DATA)}, or a path to a UTF-8 text file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"--data {name} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not text.strip():
        raise UsageError(f"--data {name} is empty")
    return text, path.name


def _loaders(text, context_length, batch_size, seed):
    n_tokens = len(tiktoken.get_encoding("gpt2").encode(text, allowed_special={"<|endoftext|>"}))
    split = int(0.9 * len(text))
    # Each side of the 90/10 split needs more than one window of context_length tokens (about 10x in all)
    needed = 10 * (context_length + 1)
    if n_tokens < needed:
        raise UsageError(f"the text has {n_tokens} tokens, too short for --context-length {context_length} "
                         f"(needs about {needed}: use a longer text or a smaller --context-length)")
    torch.manual_seed(seed)
    common = dict(batch_size=batch_size, max_length=context_length, stride=context_length)
    try:
        train_loader = create_dataloader_v1(text[:split], drop_last=True, shuffle=True, **common)
        val_loader = create_dataloader_v1(text[split:], drop_last=False, shuffle=False, **common)
    except ValueError as error:
        raise UsageError(f"cannot split the text into windows: {error}") from None
    if len(train_loader) == 0:
        raise UsageError(f"--batch-size {batch_size} is larger than the {len(train_loader.dataset)} training windows")
    return train_loader, val_loader, n_tokens


def pretrain(args) -> None:
    for name in ("epochs", "batch_size", "context_length", "eval_freq", "eval_iter"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    tiny = args.tiny or get_settings().smoke
    cfg = dict(TINY_CONFIG) if tiny else {**GPT2_CONFIGS[args.model], "context_length": args.context_length}
    context_length = cfg["context_length"]
    cfg["attn_impl"] = args.attn_impl
    device = _device(args.device)
    text, label = _read_text(args.data)
    train_loader, val_loader, n_tokens = _loaders(text, context_length, args.batch_size, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "checkpoint.pt"
    if args.resume and not checkpoint.is_file():
        raise UsageError(f"--resume: no checkpoint at {checkpoint}; run without --resume first")
    if not args.resume and checkpoint.is_file():
        raise UsageError(f"{checkpoint} exists: add --resume to continue it, or pick another --out")
    torch.manual_seed(args.seed)
    model = GPTModel(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    epochs_before = 0  # epochs trained before this run
    if args.resume:
        try:  # check the config before training starts: a clear error instead of a shape mismatch
            epochs_before = load_checkpoint(checkpoint, model, optimizer, map_location=device, config=cfg)["epoch"]
        except ValueError as error:
            raise UsageError(str(error)) from None

    print(f"pretraining {'a tiny GPT' if tiny else 'GPT-2 ' + args.model} on {label} ({n_tokens:,} tokens), "
          f"{args.epochs} epochs, device {device}", file=sys.stderr)
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # training lines are progress
        train_losses, val_losses, tokens_seen = train_model_simple(
            model, train_loader, val_loader, optimizer, device, args.epochs, args.eval_freq, args.eval_iter,
            args.start_context, tiktoken.get_encoding("gpt2"),
            checkpoint_path=checkpoint, resume=args.resume, config=cfg, progress=True)
    seconds = time.perf_counter() - start
    # Every epoch trains on the same full batches (drop_last): the tokens of this run, without reloading
    tokens_per_epoch = len(train_loader) * args.batch_size * context_length
    trained = max(args.epochs - epochs_before, 0) * tokens_per_epoch
    figure = plot_losses(torch.linspace(0, args.epochs, len(train_losses)), tokens_seen, train_losses, val_losses)
    with atomic_write(args.out / "losses.png") as handle:
        figure.savefig(handle, format="png", dpi=120)
    if train_losses:
        print(f"final train loss {train_losses[-1]:.3f}, val loss {val_losses[-1]:.3f}")
    print(f"checkpoint: {checkpoint}")
    print(f"loss plot: {args.out / 'losses.png'}")
    print(f"tokens/s: {trained / max(seconds, 1e-9):,.0f} ({seconds:.1f} s)")


def generate(args) -> None:
    if args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if args.temperature < 0:
        raise UsageError("--temperature must be >= 0")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if not args.prompt:
        raise UsageError("--prompt is empty")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file")
    device = _device(args.device)
    source = args.gpt2 if args.gpt2 else args.checkpoint
    try:
        model = load_pretrained_gpt2(source)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    model.to(device).eval()
    tokenizer = tiktoken.get_encoding("gpt2")
    torch.manual_seed(args.seed)
    ids = generate_tokens(model, text_to_token_ids(args.prompt, tokenizer).to(device), args.max_new_tokens,
                          model.pos_emb.num_embeddings, temperature=args.temperature, top_k=args.top_k,
                          eos_id=50256, use_cache=True)
    print(token_ids_to_text(ids.cpu(), tokenizer))


def download(args) -> None:
    for name in args.names:
        if name not in data.DATA_FILES:
            raise UsageError(f"unknown data file {name!r}; known: {', '.join(data.DATA_FILES)}")
    if args.names or not args.gpt2:
        data.main(args.names)
    for size in args.gpt2:
        print(f"gpt2 {size:<14} {download_gpt2(size)}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"pretrain": pretrain, "generate": generate, "download": download}[args.command]
    try:
        command(args)
    except UsageError as error:
        parser.exit(2, f"error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, "interrupted: the last checkpoint (if any) is intact\n")
    except (OSError, data.DataDownloadError) as error:  # downloads, disks: say what failed, in one line
        parser.exit(2, f"error: {error}\n")
    return 0
