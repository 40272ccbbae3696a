"""The command line's checks of its input, run before any work starts (see :mod:`llmscratch.cli`).

Every check raises :class:`UsageError` with a one-line message that names the option and says what to do;
the command line prints it as ``error: ...`` and exits with code 2.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import sys
import tempfile
from pathlib import Path

from .files import remove_stale_temp_files
from .gpt import GPT2_CONFIGS, GPT_CONFIG_TINY
from .run_lock import RunFolderLocked, lock_run_folder

TEXT_DATA = ("the-verdict", "tinyshakespeare")  # course files that are plain text
SIZES = tuple(GPT2_CONFIGS)  # "124M", "355M", "774M", "1558M"
MAX_CONTEXT = 1024  # GPT-2's positional embeddings
SEED_RANGE = (-0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF)  # what torch.manual_seed accepts

# The settings of a pretraining run, saved in its checkpoint. On --resume an option that is not given takes the
# saved value; the STRICT ones must not change (the resumed run would not continue the saved one), the others
# may (the number of epochs to reach, the prompt of the samples).
STRICT_SETTINGS = ("data", "model", "context_length", "batch_size", "lr", "weight_decay", "eval_freq",
                   "eval_iter", "seed", "attn_impl")
RUN_SETTINGS = (*STRICT_SETTINGS, "epochs", "start_context")
DEFAULTS = {"data": "the-verdict", "model": "124M", "batch_size": 2, "lr": 4e-4, "weight_decay": 0.1,
            "eval_freq": 5, "eval_iter": 5, "seed": 123, "attn_impl": "scratch", "epochs": 10,
            "start_context": "Every effort moves you"}
DEFAULT_CONTEXT = {"tiny": 64}  # tokens per window; GPT-2 sizes: 256, the book's


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def option(name: str, value=None) -> str:
    """How the setting ``name`` is written on the command line: ``--batch-size 8``, ``--tiny``."""
    if name == "model" and value == "tiny":
        return "--tiny"
    flag = "--" + name.replace("_", "-")
    return flag if value is None else f"{flag} {shlex.quote(str(value))}"


def check_count(name: str, value, maximum: int | None = None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{option(name)} must be at least 1, got {value}")
    if value is not None and maximum is not None and value > maximum:
        raise UsageError(f"{option(name)} must be at most {maximum}, got {value}")


def check_real(name: str, value, *, zero_ok: bool, why: str = "") -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise UsageError(f"{option(name)} must be a finite number {bound}{why}, got {value}")


def check_seed(value) -> None:
    low, high = SEED_RANGE
    if value is not None and not low <= value <= high:
        raise UsageError(f"--seed must be between {low} and {high} (0xffff_ffff_ffff_ffff), got {value}")


def check_run_settings(settings: dict) -> None:
    """The settings of ``pretrain`` (``None``: not given) that are outside their domain."""
    for name in ("epochs", "batch_size", "eval_freq", "eval_iter"):
        check_count(name, settings[name])
    check_count("context_length", settings["context_length"], MAX_CONTEXT)
    check_real("lr", settings["lr"], zero_ok=False, why=" (a learning rate of 0 trains nothing)")
    check_real("weight_decay", settings["weight_decay"], zero_ok=True)
    check_seed(settings["seed"])
    if settings["start_context"] is not None and not settings["start_context"].strip():
        raise UsageError("--start-context is empty: the samples printed after every epoch need a prompt")


def check_generate_args(args) -> None:
    check_count("max_new_tokens", args.max_new_tokens)
    check_real("temperature", args.temperature, zero_ok=True, why=" (0 is greedy decoding)")
    check_count("top_k", args.top_k)
    check_seed(args.seed)
    if not args.prompt:
        raise UsageError("--prompt is empty: give the start of the text")


def data_setting(name: str | None) -> str | None:
    """``--data`` as saved with a run: a course file's name, or the absolute path of a file."""
    return name if name is None or name in TEXT_DATA else str(Path(name).expanduser().resolve())


def merge_run_settings(given: dict, saved: dict | None, out: Path, smoke: bool) -> dict:
    """The settings a run uses: the given ones, else the saved ones (``--resume``), else the defaults.

    A STRICT setting given with another value than the saved run's is an error that says which.
    """
    saved = saved or {}
    differ = [n for n in STRICT_SETTINGS if given[n] is not None and n in saved and given[n] != saved[n]]
    if differ:
        used = " and ".join(option(n, saved[n]) for n in differ)
        asked = " and ".join(option(n, given[n]) for n in differ)
        drop = " and ".join(option(n, given[n]).split()[0] for n in differ)
        raise UsageError(f"the run saved in {out} used {used}, not {asked}: drop {drop} to resume it with its "
                         "settings, or start a new run with another --out")
    defaults = {**DEFAULTS, "model": "tiny" if smoke else DEFAULTS["model"]}
    merged = {n: given[n] if given[n] is not None else saved.get(n, defaults.get(n)) for n in RUN_SETTINGS}
    if merged["context_length"] is None:
        merged["context_length"] = DEFAULT_CONTEXT.get(merged["model"], 256)
    return merged


def settings_from_config(config) -> dict:
    """``model``, ``context_length`` and ``attn_impl`` of a checkpoint's model config: what a checkpoint saved
    without run settings (an older command line, a notebook) still says about its run."""
    if not isinstance(config, dict):
        return {}
    shape = ("emb_dim", "n_layers", "n_heads")
    models = [name for name, cfg in {"tiny": GPT_CONFIG_TINY, **GPT2_CONFIGS}.items()
              if all(cfg[key] == config.get(key) for key in shape)]
    found = {"model": models[0] if len(models) == 1 else None, "context_length": config.get("context_length"),
             "attn_impl": config.get("attn_impl", "scratch")}
    return {name: value for name, value in found.items() if value is not None}


def describe(settings: dict) -> str:
    """The settings as command-line options, to show which ones a resumed run uses."""
    return " ".join(option(n, settings[n]) for n in RUN_SETTINGS if n != "epochs")


def check_out_folder(out: Path, files: tuple[str, ...], product: str | None = None) -> None:
    """``out`` can be the run's folder: not a file, not under a file, no folder where a file goes and, when
    ``product`` (the model a finetuning run writes) is named, no finished one to overwrite."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: pick another --out")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"--out {out} cannot be created: {parent} is a file, not a folder")
    for name in files:
        if (out / name).is_dir():
            raise UsageError(f"{out / name} is a folder, but the run writes a file there: move it away or "
                             "pick another --out")
    if product is not None:
        _check_no_product(out, product)


def _check_no_product(out: Path, product: str) -> None:
    if (out / product).exists():
        raise UsageError(f"{out / product} exists: move it away or pick another --out")


def check_writable(folder: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"cannot write in {folder} ({error.strerror or error}): make it writable or pick "
                         "another --out") from None


@contextlib.contextmanager
def claimed_out_folder(out: Path, product: str):
    """``out`` created if needed, writable and locked for this run, without a ``product`` file (the model the
    run writes) to overwrite; temporary files of a killed run are removed. Used by ``finetune-classifier`` and
    ``finetune-instructions``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {out} ({error.strerror or error})") from None
    check_writable(out)
    try:
        with lock_run_folder(out):
            _check_no_product(out, product)  # checked again: another run may have finished meanwhile
            for stale in remove_stale_temp_files(out):
                print(f"removed {stale}, left by a run that was killed while saving", file=sys.stderr)
            yield
    except RunFolderLocked as error:
        raise UsageError(f"{out} is in use by another run (process id {error.pid or 'not yet written'}): wait "
                         "for it to end, or pick another --out") from None
