"""What ``finetune-classifier`` and ``finetune-instructions`` share: their base options, checks, run folder,
resumption and the stop on a diverging loss.

Introduced in ch06_finetune_classification and ch07_finetune_instructions (the command line). Both commands
start from GPT-2 (``--gpt2 SIZE``), its shapes with random weights (``--from-scratch``) or a tiny GPT
(``--tiny``), optionally with appendix E's LoRA (``--lora-rank``, ``--lora-alpha``, ``--lora-scaling``). A run
folder holds, while the model trains, a checkpoint after every epoch (``RunFiles.checkpoint``); then the
finished model (``RunFiles.product``) and the other outputs; the checkpoint is removed once every output is
written. ``--resume`` goes on from where a run stopped: it continues the training from the last epoch's
checkpoint, or, when the model is saved, writes only the outputs that are missing.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

from .checkpoints import read_training_state
from .cli_checks import (MAX_EPOCHS, MAX_LORA_ALPHA, MAX_LR, SIZES, UsageError, check_count, check_out_folder,
                         check_real, check_seed, claim_out_folder, merge_settings, option, register_run_files)
from .instruction_run import SCRATCH_BASE, TINY_BASE
from .lora import LORA_SCALINGS, lora_alpha
from .settings import get_settings, resolve_device


@dataclass(frozen=True)
class RunFiles:
    """The files of one finetune command's run folder (introduced in ch06_finetune_classification)."""

    command: str
    product: str  # the finished model
    checkpoint: str  # the last finished epoch, while training; removed once every output is written
    outputs: tuple[str, ...]  # written after the product (metrics, plots, responses)

    @property
    def all(self) -> tuple[str, ...]:
        return (self.product, self.checkpoint, *self.outputs)

    def register(self) -> RunFiles:
        register_run_files(self.command, (self.product, self.checkpoint, *self.outputs[:1]))
        return self


def add_finetune_arguments(parser, *, default_size: str, device_help: str, out: str, lr_help: str,
                           lora_help: str) -> None:
    """The options of both finetune commands (introduced in ch06_finetune_classification); every default is
    ``None`` so that ``--resume`` can tell a given option from a default."""
    base = parser.add_mutually_exclusive_group()
    base.add_argument("--gpt2", choices=SIZES, help=f"start from OpenAI's GPT-2 of this size (default: {default_size})")
    base.add_argument("--from-scratch", action="store_true", default=None,
                      help=f"GPT-2 {default_size}'s architecture with random weights (the result is not GPT-2)")
    base.add_argument("--tiny", action="store_true", default=None, help="a tiny GPT from random weights, for quick "
                      "checks (the default when LLMSCRATCH_SMOKE=1)")
    parser.add_argument("--lora-rank", type=int, help="LoRA as in appendix E: freeze every weight and train adapters "
                        f"of this rank on every linear layer{lora_help} (the book: 16); they are merged into the "
                        "saved model")
    parser.add_argument("--lora-alpha", type=float, help="scale of the LoRA adapters (default: the rank; the book: "
                        "16 with rank 16)")
    parser.add_argument("--lora-scaling", choices=LORA_SCALINGS, help="book: the update is alpha * (x A B), as in "
                        "the printed book (default); rank: (alpha / rank) * (x A B), as the book's repository "
                        "computes it since its commit 'Add LoRA scaling' (16 times smaller at rank 16)")
    parser.add_argument("--epochs", type=int, help="train until this many epochs are done (default: the book's)")
    parser.add_argument("--lr", type=float, help=lr_help)
    parser.add_argument("--batch-size", type=int, help="default: 8, the book's")
    parser.add_argument("--seed", type=int, help="default: 123, the book's")
    parser.add_argument("--device", help=device_help)
    parser.add_argument("--out", type=Path, default=Path(out), help=f"output folder (default: {out})")
    parser.add_argument("--resume", action="store_true", help="go on with the run in OUT: continue its training "
                        "from the last finished epoch, or write the outputs it has not written yet")


def check_finetune_numbers(args) -> None:
    """The numbers both finetune commands take, checked before any work (introduced in
    ch06_finetune_classification)."""
    check_count("epochs", args.epochs, MAX_EPOCHS)
    check_count("batch_size", args.batch_size)
    check_count("lora_rank", args.lora_rank)
    check_real("lora_alpha", args.lora_alpha, zero_ok=False, maximum=MAX_LORA_ALPHA)
    check_real("lr", args.lr, zero_ok=False, why=" (a learning rate of 0 trains nothing)", maximum=MAX_LR)
    check_seed(args.seed)
    if args.lora_rank is None:
        for name in ("lora_alpha", "lora_scaling"):
            if getattr(args, name) is not None:
                raise UsageError(f"{option(name)} needs --lora-rank: it scales the LoRA adapters")


def given_base(args) -> str | None:
    """The base the options name (``gpt2-SIZE``, ``from-scratch``, ``tiny from scratch``), ``None`` if none."""
    if args.tiny:
        return TINY_BASE
    if args.from_scratch:
        return SCRATCH_BASE
    return None if args.gpt2 is None else f"gpt2-{args.gpt2}"


def default_base(default_size: str) -> str:
    return TINY_BASE if get_settings().smoke else f"gpt2-{default_size}"


def check_lora_rank(rank, config: dict) -> None:
    """A rank above the layers' width adds parameters, not capacity, and a huge one only allocates."""
    if rank is not None and rank > config["emb_dim"]:
        raise UsageError(f"--lora-rank must be at most the model's width ({config['emb_dim']}), got {rank}: A and B "
                         "are (in, rank) and (rank, out), a low-rank update (the book: 16)")


def lora_of(settings: dict) -> tuple[dict | None, float | None]:
    """``(lora, alpha)``: the LoRA settings as saved with the run (``None`` without LoRA) and the ``alpha`` to give
    the book's ``LoRALayer`` for the chosen scaling (``lora_alpha``)."""
    if settings["lora_rank"] is None:
        return None, None
    lora = {"rank": settings["lora_rank"], "alpha": float(settings["lora_alpha"]),
            "scaling": settings["lora_scaling"]}
    return lora, lora_alpha(lora["alpha"], lora["rank"], lora["scaling"])


def fill_lora_defaults(settings: dict) -> None:
    if settings["lora_rank"] is not None:
        settings["lora_alpha"] = float(settings["lora_alpha"] or settings["lora_rank"])
        settings["lora_scaling"] = settings["lora_scaling"] or "book"


def folder_state(out: Path, files: RunFiles, resume: bool) -> tuple[str, dict]:
    """``(stage, saved)``: what the run in ``out`` has done and the training state of its checkpoint.

    Stages: ``"train"`` (train from the start, or from the checkpoint when ``saved``), ``"finish"`` (the model is
    saved: write the missing outputs), ``"complete"`` (nothing to do). Without ``--resume`` a folder holding a
    run of this command is refused; with it, a folder without one.
    """
    checkpoint, product = out / files.checkpoint, out / files.product
    saved = {}
    if checkpoint.is_file():
        if not resume:
            raise UsageError(f"{out} holds an unfinished run ({checkpoint}): add --resume to go on with it, or pick "
                             "another --out")
        try:
            saved = read_training_state(checkpoint)
        except ValueError as error:
            raise UsageError(f"--resume: {error}") from None
    if not product.exists():
        if resume and not saved:
            raise UsageError(f"--resume: {out} holds no run to go on with (no {files.checkpoint}, no "
                             f"{files.product}); run without --resume first")
        return "train", saved
    if not resume:
        raise UsageError(f"{product} exists: move it away or pick another --out")
    missing = [name for name in files.outputs if not (out / name).exists()]
    if not missing:
        return "complete", saved
    if not saved:
        raise UsageError(f"--resume: {product} is saved but {', '.join(missing)} not, and the training history "
                         f"({files.checkpoint}) is gone: move the model away and train again")
    return "finish", saved


def merge_run_settings(given: dict, saved: dict, defaults: dict, out: Path, stage: str) -> dict:
    """The run's settings: the given options, else those saved in its checkpoint (``--resume``), else the
    defaults. A resumed run keeps every saved setting but ``--epochs`` (more epochs continue the training) and
    ``--max-new-tokens``; a model that is already saved keeps its epochs too."""
    saved_settings = saved.get("run_settings") if isinstance(saved.get("run_settings"), dict) else {}
    strict = [n for n in given if n not in ("epochs", "max_new_tokens")] + (["epochs"] if stage == "finish" else [])
    settings = merge_settings(given, saved_settings, defaults, out, strict)
    if saved and settings["epochs"] < saved.get("epoch", 0):
        raise UsageError(f"--epochs {settings['epochs']} is fewer than the {saved['epoch']} epochs the run in {out} "
                         "has trained: drop --epochs, or pick another --out for a new run")
    return settings


def check_data_dir() -> None:
    """The course's data folder (``LLMSCRATCH_DATA_DIR``) is a folder or can be created: not a file."""
    data_dir = get_settings().data_dir
    found = next((folder for folder in (data_dir, *data_dir.parents) if folder.exists()), None)
    if found is not None and not found.is_dir():
        raise UsageError(f"the data folder {data_dir} cannot be used: {found} is a file, not a folder (set "
                         "LLMSCRATCH_DATA_DIR to a folder)")


def check_folder(args, files: RunFiles) -> tuple[str, dict]:
    """``check_out_folder`` for a finetune command and the data folder, then the run's ``folder_state``."""
    check_out_folder(args.out, files.all, command=files.command)
    check_data_dir()
    return folder_state(args.out, files, args.resume)


def claim(stack: contextlib.ExitStack, out: Path, files: RunFiles, resume: bool) -> None:
    """Lock ``out`` for this run (``claim_out_folder``) and check again, under the lock, that what it found
    before is still so (another run may have finished meanwhile)."""
    claim_out_folder(stack, out, command=files.command, own_files=files.all,
                     check=lambda: folder_state(out, files, resume))


def start_run(args, files: RunFiles, settings_of):
    """``(device, stage, saved, settings)`` of a finetune run after its checks, or ``None`` when the run in
    ``args.out`` is complete (said on stderr). ``settings_of(args, stage, saved)`` merges the command's
    settings."""
    device = resolve_device(args.device)
    stage, saved = check_folder(args, files)
    if stage == "complete":
        print(f"note: the run in {args.out} is complete: every file is written", file=sys.stderr)
        return None
    return device, stage, saved, settings_of(args, stage, saved)


def claim_when_ready(stack: contextlib.ExitStack, args, files: RunFiles):
    """Lock ``args.out`` now when it exists (before any work); else return the function that creates and locks
    it once the data and the model are built (so a run that fails on them leaves no folder behind)."""
    if args.out.is_dir():
        claim(stack, args.out, files, args.resume)
        return lambda: None
    return lambda: claim(stack, args.out, files, args.resume)


def describe_lora(settings: dict, without: str) -> str:
    """``LoRA rank R, alpha A, S scaling`` for the run's first line, or ``without``."""
    lora, _ = lora_of(settings)
    return without if lora is None else f"LoRA rank {lora['rank']}, alpha {lora['alpha']:g}, {lora['scaling']} scaling"


class Diverged(UsageError):
    """The training loss is not a finite number: one line, exit code 2."""


def stop_at_non_finite_loss(model):
    """Raise ``Diverged`` at the first training step whose model output is not finite (NaN or infinity): its loss
    is not finite, and training on would only spread NaN. A forward hook on ``model`` (train mode only);
    returns its handle (``.remove()``)."""
    step = [0]

    def check(module, inputs, output):
        if not module.training:
            return
        if not bool(output.isfinite().all()):
            raise Diverged(f"training diverged at step {step[0]}: the loss is not a finite number (NaN or "
                           "infinity); lower --lr (or --lora-alpha) and run again")
        step[0] += 1

    return model.register_forward_hook(check)


def interrupted_message(files: RunFiles):
    """The line printed on Ctrl+C: which files of the run exist and how to go on (a function of ``args``)."""
    def message(args) -> str:
        out = getattr(args, "out", None)
        if out is None or not (out / files.product).exists() and not (out / files.checkpoint).exists():
            return "interrupted: no model was saved"
        if (out / files.product).exists():
            missing = [name for name in files.outputs if not (out / name).exists()]
            if not missing:
                return f"interrupted: {out / files.product} and every output are saved"
            return (f"interrupted: {out / files.product} is saved, {', '.join(missing)} not: run the same command "
                    "with --resume to write them")
        return (f"interrupted: {out / files.checkpoint} holds the last finished epoch: run the same command with "
                "--resume to go on")
    return message


def note_resumed(out: Path, stage: str, saved: dict, settings: dict) -> None:
    if stage == "finish":
        print(f"resuming {out}: the model is saved, writing the missing outputs", file=sys.stderr)
    elif saved:
        print(f"resuming {out} from epoch {saved.get('epoch', 0)} to {settings['epochs']}", file=sys.stderr)


__all__ = ["Diverged", "RunFiles", "add_finetune_arguments", "check_data_dir", "check_finetune_numbers",
           "check_folder", "check_lora_rank", "claim", "claim_when_ready", "describe_lora", "fill_lora_defaults",
           "folder_state", "interrupted_message", "lora_of", "merge_run_settings", "start_run",
           "stop_at_non_finite_loss"]
