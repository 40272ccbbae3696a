"""The course's command line: ``python -m llmscratch pretrain | generate | download`` (ch05_pretraining), and
``finetune-classifier | classify`` (ch06_finetune_classification, in :mod:`llmscratch.cli_classifier`) and
``finetune-instructions | evaluate | chat`` (ch07_finetune_instructions, in :mod:`llmscratch.cli_instructions`),
``finetune-preferences`` (the book's DPO bonus of chapter 7, in :mod:`llmscratch.cli_preferences`), and
``app``, a web page for the models of all three (in :mod:`llmscratch.cli_app`).

Progress (training lines, bars) goes to stderr, results to stdout. Every argument is checked before any work
starts (:mod:`llmscratch.cli_checks`): bad input gets a one-line ``error: ...`` and exit code 2, never a
traceback. ``pretrain`` locks its output folder (:mod:`llmscratch.run_lock`), saves the checkpoint atomically
after every epoch before anything optional (sample, plot), and an interrupted run keeps its last checkpoint
intact and exits with 130. Under ``torchrun`` (several processes, GPUs or machines) ``pretrain`` trains with
``DistributedDataParallel`` (:mod:`llmscratch.distributed`): rank 0 locks the folder, prints and saves.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import time
from pathlib import Path

import tiktoken
import torch

from . import data
from .attention import ATTENTION_IMPLEMENTATIONS
from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .checkpoints import describe_kind, read_training_state
from .cli_checks import (DEFAULTS, RUN_SETTINGS, SIZES, TEXT_DATA, UsageError, check_generate_args,
                         check_out_folder, check_run_settings, claim_out_folder, data_setting, describe, flag_advice,
                         merge_run_settings, register_run_files, settings_from_config)
from .cli_app import COMMANDS as APP_COMMANDS
from .cli_app import INTERRUPTED as APP_INTERRUPTED
from .cli_app import add_app_commands
from .cli_classifier import COMMANDS as CLASSIFIER_COMMANDS
from .cli_classifier import INTERRUPTED as CLASSIFIER_INTERRUPTED
from .cli_classifier import add_classifier_commands
from .cli_instructions import COMMANDS as INSTRUCTION_COMMANDS
from .cli_instructions import INTERRUPTED as INSTRUCTION_INTERRUPTED
from .cli_instructions import add_instruction_commands
from .cli_preferences import COMMANDS as PREFERENCE_COMMANDS
from .cli_preferences import INTERRUPTED as PREFERENCE_INTERRUPTED
from .cli_preferences import add_preference_commands
from .decoding import check_sampling_args
from .decoding import generate as generate_tokens
from .distributed import (BACKENDS, RunStopped, choose_backend, distributed_loaders, launch_from_env, process_group,
                          stop_on_sigterm, train_model_distributed)
from .files import save_png
from .gpt import GPT2_CONFIGS, GPT_CONFIG_TINY, GPTModel, check_config
from .gpt2_download import download_gpt2
from .gpt2_weights import load_pretrained_gpt2
from .pretraining import create_train_val_loaders, plot_losses, text_to_token_ids, token_ids_to_text
from .pretraining import train_model_resumable
from .resumable import TrainingState
from .settings import SettingsError, get_settings, resolve_device

CHECKPOINT, PLOT = "checkpoint.pt", "losses.png"  # what pretrain writes in its output folder
register_run_files("pretrain", (CHECKPOINT, PLOT))
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: LLMSCRATCH_DEVICE, else cuda > mps > cpu)"
INTERRUPTED = {"pretrain": "interrupted: the last checkpoint (if any) is intact",
               "generate": "interrupted", "download": "interrupted: no partial file was kept", **CLASSIFIER_INTERRUPTED,
               **INSTRUCTION_INTERRUPTED, **PREFERENCE_INTERRUPTED, **APP_INTERRUPTED}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ...``), not the usage block plus the error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="python -m llmscratch",
        description="Command line of the course 'Build a Large Language Model (From Scratch)' in Portuguese: "
                    "pretrain a GPT, sample from it or from GPT-2, download the course's files, finetune and use "
                    "a spam classifier and a model that follows instructions.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = DEFAULTS
    pretrain = commands.add_parser(
        "pretrain", help="train the chapter-5 GPT on a text, with checkpoints and a loss plot",
        description="Train GPTModel on a course text or any UTF-8 file (90/10 split), as in chapter 5. Saves "
                    f"OUT/{CHECKPOINT} after every epoch and OUT/{PLOT} at the end; --resume goes on from "
                    f"OUT/{CHECKPOINT}, with the saved run's settings for the options not given.")
    pretrain.add_argument("--data", help=f"{' or '.join(TEXT_DATA)}, or a path to a UTF-8 text file "
                          f"(default: {d['data']})")
    pretrain.add_argument("--out", type=Path, default=Path("runs/pretrain"),
                          help="output folder (default: runs/pretrain)")
    model = pretrain.add_mutually_exclusive_group()
    model.add_argument("--model", choices=SIZES, help=f"GPT-2 size of the model (default: {d['model']})")
    model.add_argument("--tiny", action="store_true", help="a tiny model and context 64, for quick checks "
                       "(the default when LLMSCRATCH_SMOKE=1)")
    pretrain.add_argument("--context-length", type=int, help="tokens per training window, at most 1024 "
                          "(default: 256, 64 with --tiny)")
    pretrain.add_argument("--epochs", type=int, help=f"train until this many epochs are done (default: {d['epochs']})")
    pretrain.add_argument("--batch-size", type=int, help=f"default: {d['batch_size']}")
    pretrain.add_argument("--lr", type=float, help=f"AdamW learning rate (default: {d['lr']})")
    pretrain.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default: {d['weight_decay']})")
    pretrain.add_argument("--eval-freq", type=int, help=f"evaluate every N steps (default: {d['eval_freq']})")
    pretrain.add_argument("--eval-iter", type=int, help=f"batches per evaluation (default: {d['eval_iter']})")
    pretrain.add_argument("--attn-impl", choices=list(ATTENTION_IMPLEMENTATIONS),
                          help="attention: the book's code or the fast path (default: scratch)")
    pretrain.add_argument("--start-context", help=f"prompt of the samples (default: {d['start_context']!r})")
    pretrain.add_argument("--seed", type=int, help=f"default: {d['seed']}, the book's")
    pretrain.add_argument("--device", help=DEVICE_HELP)
    pretrain.add_argument("--resume", action="store_true", help=f"continue from OUT/{CHECKPOINT}")
    pretrain.add_argument("--dist-backend", choices=BACKENDS, help="under torchrun: the process group's backend "
                          "(default: nccl on CUDA, gloo on the CPU)")

    generate = commands.add_parser(
        "generate", help="sample text from a checkpoint or from OpenAI's GPT-2",
        description="Generate text from a checkpoint of `pretrain` (or any GPTModel .pth / GPT-2 .safetensors "
                    "or model folder) or from OpenAI's pretrained GPT-2 (--gpt2, downloaded once and cached). A "
                    ".pth holding only a state dict (no config) is read by its tensors' shapes; if its width and "
                    "depth are no GPT-2 size nor --tiny's, give its heads with --n-heads.")
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help=f"a {CHECKPOINT} of `pretrain`, a GPTModel .pth (a "
                        "checkpoint or a plain state dict), a GPT-2 .safetensors or a folder with model.safetensors "
                        "and config.json")
    source.add_argument("--gpt2", choices=SIZES, help="OpenAI's GPT-2 weights of this size")
    generate.add_argument("--n-heads", type=int, metavar="N",
                          help="attention heads of a plain GPTModel state dict (torch.save(model.state_dict(), "
                               "...)) whose width and depth match no GPT-2 size nor --tiny: its tensors show every "
                               "other size, not the heads")
    generate.add_argument("--prompt", default="Every effort moves you", help="start of the text")
    generate.add_argument("--max-new-tokens", type=int, default=50, help="default: 50")
    generate.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default: 0.0)")
    generate.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    generate.add_argument("--seed", type=int, default=123, help="default: 123")
    generate.add_argument("--device", help=DEVICE_HELP)

    download = commands.add_parser(
        "download", help="fetch the course's data files (and GPT-2 weights) ahead of time",
        description="Download (or copy from LLMSCRATCH_DATA_MIRROR) the course's data files, verified by sha256, "
                    "and optionally OpenAI's GPT-2 weights.")
    download.add_argument("names", nargs="*", metavar="NAME",
                          help="data files to fetch (default: all but the optional ones; known: "
                               + ", ".join(f"{name} (optional)" if entry.optional else name
                                           for name, entry in data.DATA_FILES.items()) + ")")
    download.add_argument("--gpt2", choices=SIZES, action="append", default=[],
                          help="also download GPT-2 weights of this size (repeatable)")
    add_classifier_commands(commands, DEVICE_HELP)
    add_instruction_commands(commands, DEVICE_HELP)
    add_preference_commands(commands, DEVICE_HELP)
    add_app_commands(commands, DEVICE_HELP)
    return parser


def _read_text(name: str) -> tuple[str, str]:
    if not name.strip():
        raise UsageError(f"--data is empty: use {' or '.join(TEXT_DATA)}, or a path to a UTF-8 text file")
    if name in TEXT_DATA:
        return data.get_data(name).read_text(encoding="utf-8"), name
    path = Path(name)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--data {name}: {what} (use {' or '.join(TEXT_DATA)}, or a path to a UTF-8 text file)")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte order mark (some Windows editors) is not text
    except UnicodeDecodeError as error:
        raise UsageError(f"--data {name} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not text.strip():
        raise UsageError(f"--data {name} is empty")
    return text, path.name


def _saved_run(checkpoint: Path, config=None) -> dict:
    """The training state of the checkpoint to resume, checked (format, version, fields, ``config``)."""
    try:
        saved = read_training_state(checkpoint, config=config)
        TrainingState.from_checkpoint(saved, checkpoint)  # the fields a resumed run needs
    except ValueError as error:
        raise UsageError(f"--resume: {error}") from None
    return saved


def _claim(stack: contextlib.ExitStack, out: Path, checkpoint: Path, resume: bool) -> None:
    """Make ``out`` this run's (``claim_out_folder``): writable, locked, without temporary files of a killed run;
    no checkpoint to overwrite."""
    def no_checkpoint_to_overwrite():
        if not resume and checkpoint.exists():
            raise UsageError(f"{checkpoint} exists: add --resume to continue it, or pick another --out")

    claim_out_folder(stack, out, command="pretrain", own_files=(CHECKPOINT, PLOT), check=no_checkpoint_to_overwrite)


def _cause(error: BaseException, kind: type) -> BaseException | None:
    """``error`` or the first exception of ``kind`` in its chain of causes and contexts."""
    while error is not None and not isinstance(error, kind):
        error = error.__cause__ or error.__context__
    return error


def _save_failed(error: BaseException, path: Path, kept: str) -> UsageError:
    """One line for a failed save (a full disk shows up as OSError ENOSPC or as torch's inline_container);
    an error that is not about writing the file is raised again as it is.

    Ctrl+C during ``torch.save`` interrupts the file's ``write`` and torch reports a RuntimeError ("unexpected
    pos"), the KeyboardInterrupt only in its ``__context__``: that is an interruption (exit 130), not a full disk.
    """
    cause = error
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        cause = cause.__cause__ or cause.__context__
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or any(
        word in str(error) for word in ("inline_container", "PytorchStreamWriter", "No space left"))
    if not full and not isinstance(error, OSError):
        raise error
    problem = "no space left on device" if full else f"{type(error).__name__}: {error}"
    fix = "free space or pick another --out" if full else "check the folder or pick another --out"
    return UsageError(f"{problem} while saving {path}: {fix}; {kept}")


def _model_config(settings: dict, saved_config=None) -> dict:
    base = GPT_CONFIG_TINY if settings["model"] == "tiny" else GPT2_CONFIGS[settings["model"]]
    cfg = {**base, "context_length": settings["context_length"], "attn_impl": settings["attn_impl"]}
    if isinstance(saved_config, dict) and "attn_impl" not in saved_config and cfg["attn_impl"] == "scratch":
        del cfg["attn_impl"]  # saved without the key (e.g. by a notebook): the same model, the default attention
    try:
        check_config(cfg)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return cfg


def pretrain(args) -> None:
    """One process, or one of a torchrun launch: there rank 0 prints, the others are quiet; an error is reported
    once per machine (by its local rank 0), and a process that died by the ranks that lost their connection to it."""
    try:
        launch = launch_from_env()
    except ValueError as error:
        raise UsageError(str(error)) from None
    if launch is None:
        if args.dist_backend is not None:
            raise UsageError("--dist-backend is for runs under torchrun: torchrun --nproc_per_node=N -m llmscratch "
                             "pretrain ...")
        return _pretrain(args, None)
    try:
        with stop_on_sigterm(), open(os.devnull, "w") as devnull, contextlib.ExitStack() as quiet:
            if not launch.is_main:
                quiet.enter_context(contextlib.redirect_stdout(devnull))
                quiet.enter_context(contextlib.redirect_stderr(devnull))
            _pretrain(args, launch)
    except KeyboardInterrupt:
        if launch.local_rank == 0:
            raise
        raise SystemExit(130) from None
    except (UsageError, SettingsError, OSError, RunStopped) as error:
        if launch.local_rank != 0 and not isinstance(error, PeerLost):
            raise SystemExit(2) from None
        if isinstance(error, RunStopped):  # outside training, or while an error was reported
            raise _run_stopped(error, args.out / CHECKPOINT, launch) from None
        raise


def _pretrain(args, launch) -> None:
    given = {name: getattr(args, name) for name in RUN_SETTINGS}  # None: not given
    given.update(data=data_setting(args.data), model="tiny" if args.tiny else args.model)
    check_run_settings(given)  # numbers and texts first: nothing is read or written before they are fine
    device, backend = resolve_device(args.device), None
    if launch is not None:
        try:
            device, backend = choose_backend(device, launch, args.dist_backend)
        except ValueError as error:
            raise UsageError(str(error)) from None
    owner = launch is None or launch.is_main  # the process that locks the folder and writes in it
    out, checkpoint = args.out, args.out / CHECKPOINT
    check_out_folder(out, (CHECKPOINT, PLOT), command="pretrain")
    if args.resume and not checkpoint.is_file():
        raise UsageError(f"--resume: no checkpoint at {checkpoint}; run without --resume first")
    with contextlib.ExitStack() as stack:
        claimed = out.is_dir() or not owner  # an existing folder is locked first; a new one once all is checked
        if claimed and owner:
            _claim(stack, out, checkpoint, args.resume)
        saved = _saved_run(checkpoint) if args.resume else {}
        saved_settings = saved.get("run_settings") if isinstance(saved.get("run_settings"), dict) else {}
        from_config = settings_from_config(saved.get("config"))  # for checkpoints without run settings
        settings = merge_run_settings(given, {**from_config, **saved_settings}, out, get_settings().smoke)
        check_run_settings(settings)
        epochs_before = saved.get("epoch", 0)
        if epochs_before >= settings["epochs"]:  # nothing to do, nothing is touched
            print(f"note: the run in {out} is already complete: {epochs_before} epochs trained (--epochs "
                  f"{settings['epochs']}); pass --epochs N larger than {epochs_before} to train more", file=sys.stderr)
            return
        cfg = _model_config(settings, saved.get("config"))
        if args.resume:
            _saved_run(checkpoint, config=cfg)  # the saved model is the one these settings build
        text, label = _read_text(args.data if args.data is not None else settings["data"])
        torch.manual_seed(settings["seed"])
        try:
            if launch is None:
                train_loader, val_loader = create_train_val_loaders(text, cfg["context_length"], settings["batch_size"])
            else:  # this rank's share of every batch
                train_loader, val_loader = distributed_loaders(text, cfg["context_length"], settings["batch_size"],
                                                               launch, settings["seed"])
        except ValueError as error:
            raise UsageError(f"--data {label}: {error}") from None

        if not claimed:  # (another run may have created it meanwhile: _claim finds its lock or checkpoint)
            _claim(stack, out, checkpoint, args.resume)
        if args.resume:
            if not saved_settings:
                print(f"note: {checkpoint} records no run settings (an older checkpoint): the model comes from "
                      "its config, the other settings from the options given or the defaults", file=sys.stderr)
            print(f"resuming {out} from epoch {epochs_before} to {settings['epochs']} with {describe(settings)}",
                  file=sys.stderr)
        _train(args, settings, cfg, device, train_loader, val_loader, label, epochs_before, launch, backend)


def _fit(args, settings, cfg, model, optimizer, device, train_loader, val_loader, launch, backend):
    """train_model_resumable, or under torchrun train_model_distributed in the run's process group."""
    common = dict(checkpoint_path=args.out / CHECKPOINT, resume=args.resume, config=cfg, run_settings=settings,
                  progress=True)
    book = (model, train_loader, val_loader, optimizer, device, settings["epochs"], settings["eval_freq"],
            settings["eval_iter"], settings["start_context"], tiktoken.get_encoding("gpt2"))
    if launch is None:
        return train_model_resumable(*book, **common)
    with process_group(launch, backend, device):
        return train_model_distributed(*book, launch=launch, seed=settings["seed"], **common)


class PeerLost(UsageError):
    """A torchrun run stopped by another process's failure: reported by local rank 0 and by every rank that lost
    its connection to the failed one (which may be rank 0)."""


def _run_stopped(error: BaseException, checkpoint: Path, launch) -> UsageError:
    """One line for a torchrun run that another process's failure stopped (SIGTERM, or a lost connection)."""
    if isinstance(error, RunStopped):
        why, lost = str(error), UsageError
    else:  # gloo's or nccl's message is long and names only addresses
        why, lost = f"another process of the run failed or lost its connection (seen by rank {launch.rank})", PeerLost
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # torchrun's SIGTERM, now or soon: the reason is known
    if not checkpoint.is_file():
        return lost(f"the run stopped: {why}; no checkpoint was saved (see torchrun's report for the process that "
                    "failed)")
    epoch = ""
    with contextlib.suppress(Exception):  # saved atomically: whole, whatever reading it now says
        epoch = f" of epoch {read_training_state(checkpoint)['epoch']}"
    return lost(f"the run stopped: {why}; the checkpoint {checkpoint}{epoch} is intact (see torchrun's report for "
                "the process that failed; --resume continues it)")


def _train(args, settings, cfg, device, train_loader, val_loader, label, epochs_before, launch=None,
           backend=None) -> None:
    out, checkpoint, epochs = args.out, args.out / CHECKPOINT, settings["epochs"]
    world = 1 if launch is None else launch.world_size
    torch.manual_seed(settings["seed"])
    model = GPTModel(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    windows = f"{len(train_loader.dataset):,} + {len(val_loader.dataset):,} windows of {cfg['context_length']} tokens"
    where = f"device {device}" if launch is None else f"{world} processes ({backend}), device {device} on rank 0"
    print(f"pretraining {'a tiny GPT' if settings['model'] == 'tiny' else 'GPT-2 ' + settings['model']} on "
          f"{label} ({windows}), {epochs} epoch{'s' * (epochs != 1)}, {where}", file=sys.stderr)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # training lines are progress
            train_losses, val_losses, tokens_seen = _fit(args, settings, cfg, model, optimizer, device,
                                                         train_loader, val_loader, launch, backend)
    except ValueError as error:  # a checkpoint that cannot be resumed (e.g. its optimizer state)
        raise UsageError(str(error)) from None
    except (OSError, RuntimeError) as error:
        stopped = _cause(error, RunStopped)  # torch.save reports a SIGTERM while writing as its own error
        lost = isinstance(error, torch.distributed.DistError) or any(w in str(error) for w in ("gloo", "NCCL"))
        if launch is not None and (stopped or lost):  # (gloo's lost connections are plain RuntimeErrors)
            raise _run_stopped(stopped or error, checkpoint, launch) from None
        kept = "the previous checkpoint is intact" if checkpoint.is_file() else "no checkpoint was saved"
        raise _save_failed(error, checkpoint, kept) from None
    if launch is not None and not launch.is_main:
        return  # rank 0 plots and reports
    seconds = time.perf_counter() - start
    # Every epoch trains on the same full batches (drop_last): the tokens of this run (all ranks), without reloading
    trained = (epochs - epochs_before) * len(train_loader) * settings["batch_size"] * cfg["context_length"] * world
    figure = plot_losses(torch.linspace(0, epochs, len(train_losses)), tokens_seen, train_losses, val_losses)
    try:
        save_png(figure, out / PLOT)
    except OSError as error:
        raise _save_failed(error, out / PLOT, f"the checkpoint {checkpoint} is saved") from None
    if train_losses:
        print(f"final train loss {train_losses[-1]:.3f}, val loss {val_losses[-1]:.3f}")
    print(f"checkpoint: {checkpoint}")
    print(f"loss plot: {out / PLOT}")
    print(f"tokens/s: {trained / max(seconds, 1e-9):,.0f} ({seconds:.1f} s)")


def generate(args) -> None:
    check_generate_args(args)  # before the model is loaded (or downloaded)
    device = resolve_device(args.device)
    if args.checkpoint is not None and not args.checkpoint.exists():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such file or folder")
    if args.checkpoint is not None and args.checkpoint.is_file():
        with contextlib.suppress(ValueError):  # a file of another format: load_pretrained_gpt2 says what it is
            kind = read_training_state(args.checkpoint).get("kind")
            if kind == "classifier":
                raise UsageError(f"--checkpoint {args.checkpoint} is {describe_kind(kind)}: it answers spam or "
                                 "not spam, it does not generate text")
    if args.n_heads is not None and args.gpt2:
        raise UsageError("--n-heads is for a --checkpoint without a config: GPT-2's sizes have known heads")
    try:
        model = load_pretrained_gpt2(args.gpt2 or args.checkpoint, n_heads=args.n_heads)
    except (ValueError, FileNotFoundError) as error:  # the messages name the file and the problem
        raise UsageError(str(error)) from None
    vocab_size = model.tok_emb.num_embeddings
    eos_id = GPT2_ENDOFTEXT_ID if GPT2_ENDOFTEXT_ID < vocab_size else None
    try:
        check_sampling_args(args.temperature, args.top_k, vocab_size, eos_id)
    except ValueError:
        raise UsageError(f"--top-k {args.top_k} is larger than the model's vocabulary of {vocab_size} tokens") from None
    tokenizer = tiktoken.get_encoding("gpt2")
    prompt = text_to_token_ids(args.prompt, tokenizer)
    if int(prompt.max()) >= vocab_size:
        raise UsageError(f"--prompt has token id {int(prompt.max())}, beyond the model's {vocab_size} tokens")
    model.to(device).eval()
    torch.manual_seed(args.seed)
    ids = generate_tokens(model, prompt.to(device), args.max_new_tokens, model.pos_emb.num_embeddings,
                          temperature=args.temperature, top_k=args.top_k, eos_id=eos_id, use_cache=True)
    print(token_ids_to_text(ids.cpu(), tokenizer))


def download(args) -> None:
    for name in args.names:
        if name not in data.DATA_FILES:
            raise UsageError(f"unknown data file {name!r}; known: {', '.join(data.DATA_FILES)}")
    if args.names or not args.gpt2:
        data.main(args.names)
    for size in args.gpt2:
        print(f"gpt2 {size:<14} {download_gpt2(size)}")


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"pretrain": pretrain, "generate": generate, "download": download, **CLASSIFIER_COMMANDS,
               **INSTRUCTION_COMMANDS, **PREFERENCE_COMMANDS, **APP_COMMANDS}[args.command]
    try:
        get_settings()  # LLMSCRATCH_* values that make no sense: one line, before anything
        command(args)
    except KeyboardInterrupt:
        message = INTERRUPTED[args.command]  # a text, or a function of args that says which files exist
        parser.exit(130, (message(args) if callable(message) else message) + "\n")
    except (UsageError, SettingsError, data.DataDownloadError, OSError) as error:
        parser.exit(2, f"error: {flag_advice(_one_line(error), args.command)}\n")  # OSError: downloads, disks
    return 0
