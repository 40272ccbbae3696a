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
# Upper bounds: beyond them a run only allocates without end or diverges at once (NaN from the first step)
MAX_EPOCHS = 10_000
MAX_LR = 1.0  # AdamW's rates are around 1e-4 to 1e-3
MAX_NEW_TOKENS = 100_000
MAX_LORA_ALPHA = 10_000.0  # the book: 16


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def option(name: str, value=None) -> str:
    """How the setting ``name`` is written on the command line: ``--batch-size 8``, ``--tiny``, ``--gpt2 124M``."""
    if name in ("model", "base") and value in ("tiny", "tiny from scratch"):
        return "--tiny"
    if name == "base" and value is not None:
        return "--from-scratch" if value == "from-scratch" else f"--gpt2 {str(value).removeprefix('gpt2-')}"
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"no {flag}"
    return flag if value is None else f"{flag} {shlex.quote(str(value))}"


def check_count(name: str, value, maximum: int | None = None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{option(name)} must be at least 1, got {value}")
    if value is not None and maximum is not None and value > maximum:
        raise UsageError(f"{option(name)} must be at most {maximum}, got {value}")


def check_real(name: str, value, *, zero_ok: bool, why: str = "", maximum: float | None = None) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise UsageError(f"{option(name)} must be a finite number {bound}{why}, got {value}")
    if maximum is not None and value > maximum:
        raise UsageError(f"{option(name)} must be at most {maximum:g}, got {value:g}")


def check_seed(value) -> None:
    low, high = SEED_RANGE
    if value is not None and not low <= value <= high:
        raise UsageError(f"--seed must be between {low} and {high} (0xffff_ffff_ffff_ffff), got {value}")


def check_run_settings(settings: dict) -> None:
    """The settings of ``pretrain`` (``None``: not given) that are outside their domain."""
    for name in ("batch_size", "eval_freq", "eval_iter"):
        check_count(name, settings[name])
    check_count("epochs", settings["epochs"], MAX_EPOCHS)
    check_count("context_length", settings["context_length"], MAX_CONTEXT)
    check_real("lr", settings["lr"], zero_ok=False, why=" (a learning rate of 0 trains nothing)", maximum=MAX_LR)
    check_real("weight_decay", settings["weight_decay"], zero_ok=True)
    check_seed(settings["seed"])
    if settings["data"] is not None and not settings["data"].strip():
        raise UsageError(f"--data is empty: use {' or '.join(TEXT_DATA)}, or a path to a UTF-8 text file")
    if settings["start_context"] is not None and not settings["start_context"].strip():
        raise UsageError("--start-context is empty: the samples printed after every epoch need a prompt")


def check_generate_args(args) -> None:
    check_count("max_new_tokens", args.max_new_tokens, MAX_NEW_TOKENS)
    check_count("n_heads", args.n_heads)
    check_real("temperature", args.temperature, zero_ok=True, why=" (0 is greedy decoding)")
    check_count("top_k", args.top_k)
    check_seed(args.seed)
    if not args.prompt:
        raise UsageError("--prompt is empty: give the start of the text")


def data_setting(name: str | None) -> str | None:
    """``--data`` as saved with a run: a course file's name, or the absolute path of a file."""
    return name if name is None or name in TEXT_DATA or not name.strip() else str(Path(name).expanduser().resolve())


def merge_run_settings(given: dict, saved: dict | None, out: Path, smoke: bool) -> dict:
    """The settings a run uses: the given ones, else the saved ones (``--resume``), else the defaults.

    A STRICT setting given with another value than the saved run's is an error that says which.
    """
    defaults = {**DEFAULTS, "model": "tiny" if smoke else DEFAULTS["model"]}
    merged = merge_settings(given, saved, defaults, out, STRICT_SETTINGS)
    if merged["context_length"] is None:
        merged["context_length"] = DEFAULT_CONTEXT.get(merged["model"], 256)
    return merged


def merge_settings(given: dict, saved: dict | None, defaults: dict, out: Path, strict) -> dict:
    """Each setting of ``given``: its value when given (not ``None``), else the saved run's, else the default.
    A ``strict`` setting given with another value than the saved run's is an error that says which (shared by
    ``pretrain --resume`` and the finetune commands' ``--resume``)."""
    saved = saved or {}
    differ = [n for n in strict if given.get(n) is not None and n in saved and given[n] != saved[n]]
    if differ:
        used = " and ".join(option(n, saved[n]) for n in differ)
        asked = " and ".join(option(n, given[n]) for n in differ)
        drop = " and ".join(option(n, given[n]).split()[0] for n in differ)
        raise UsageError(f"the run saved in {out} used {used}, not {asked}: drop {drop} to resume it with its "
                         "settings, or start a new run with another --out")
    return {n: given[n] if given[n] is not None else saved.get(n, defaults.get(n)) for n in given}


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


# The files that mark a folder as the run of a command: a folder holding another command's run is refused, as the
# commands share names (loss.png) and would overwrite each other's files. Each command registers its own.
RUN_FILES: dict[str, tuple[str, ...]] = {}


def register_run_files(command: str, files: tuple[str, ...]) -> None:
    """Declare the files that mark a folder as ``command``'s run (see ``check_out_folder``)."""
    RUN_FILES[command] = tuple(files)


def _check_no_other_run(out: Path, command: str | None) -> None:
    for other, names in RUN_FILES.items():
        found = [name for name in names if other != command and (out / name).exists()]
        if found:
            raise UsageError(f"--out {out} holds a run of {other} ({', '.join(found)}), not of {command}: pick "
                             "another --out (the commands would overwrite each other's files)")


def check_out_folder(out: Path, files: tuple[str, ...], command: str | None = None) -> None:
    """``out`` can be the run's folder: not a file, not under a file, no folder where a file goes, no run of
    another command (``command``: the one that runs). When ``out`` does not exist yet, the folder that will
    hold it must be writable."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: pick another --out")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"--out {out} cannot be created: {parent} is a file, not a folder")
    for name in files:
        if (out / name).is_dir():
            raise UsageError(f"{out / name} is a folder, but the run writes a file there: move it away or "
                             "pick another --out")
    if command is not None:
        _check_no_other_run(out, command)
    if not out.exists() and parent is not None:
        check_writable(parent, f"--out {out} cannot be created")


def check_writable(folder: Path, what: str | None = None) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        where = f"{what}: cannot write in {folder}" if what else f"cannot write in {folder}"
        raise UsageError(f"{where} ({error.strerror or error}): make it writable or pick another --out") from None


def claim_out_folder(stack: contextlib.ExitStack, out: Path, *, command: str | None = None,
                     own_files: tuple[str, ...] = (), check=None) -> None:
    """Make ``out`` this run's until ``stack`` closes: created if needed, writable, locked, no other command's run
    in it, no temporary files of a killed run; then ``check()`` (e.g. no finished model to overwrite), run under
    the lock because another run may have finished meanwhile. Shared by ``pretrain`` and the finetune commands.

    Temporary files of ``own_files`` (the run's outputs) are removed whatever their age: nobody else writes
    them while this run holds the lock. Others (e.g. a scores file of ``evaluate`` beside the responses) only
    once nothing has written to them for a minute.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {out} ({error.strerror or error})") from None
    check_writable(out)
    try:
        stack.enter_context(lock_run_folder(out))
    except RunFolderLocked as error:
        who = f"process id {error.pid}" if error.pid else "its process id not yet written"
        raise UsageError(f"{out} is in use by another run ({who}): wait for it to end, or pick another "
                         "--out") from None
    stale = remove_stale_temp_files(out, own_files, older_than=0) if own_files else []
    for path in stale + remove_stale_temp_files(out):
        print(f"removed {path}, left by a run that was killed while saving", file=sys.stderr)
    if command is not None:
        _check_no_other_run(out, command)
    if check is not None:
        check()


# Advice of the Python API (a keyword, a function call) that the package's messages give, and what the command line
# says instead: its flag, or its command. Keys are exact phrases of the package's messages (tests check they exist).
FLAG_ADVICE = {
    # gpt2_weights: a file without a config whose heads are unknown / a GPT-2 file of no known size
    "pass n_heads=N (a divisor of emb_dim), or cfg=...": {"generate": "pass --n-heads N (a divisor of emb_dim)"},
    "Put its config.json next to it and pass the folder, or pass cfg=...": {
        "generate": "put its config.json next to it and pass the folder as --checkpoint"},
    # gpt2_download: GPT-2 neither cached nor downloadable
    "(HF_HUB_OFFLINE=1 or local_files_only=True)": {"*": "(HF_HUB_OFFLINE=1)"},
    "and pass its path: load_pretrained_gpt2('path/to/model.safetensors')": {
        "generate": "and pass its path: --checkpoint path/to/model.safetensors",
        "*": "and sample from it with `python -m llmscratch generate --checkpoint path/to/model.safetensors` (the "
             "other commands take GPT-2 from the download cache: `python -m llmscratch download --gpt2 SIZE` once "
             "with a connection)"},
    # judge_http: no judge answered
    "(or pass url= of an OpenAI-compatible server": {"*": "(or pass --judge-url with the address of an "
                                                          "OpenAI-compatible server"},
    # checkpoints: a plain state dict where a checkpoint of a command is expected
    "load it with model.load_state_dict(torch.load(path, weights_only=True))": {
        "pretrain": "--resume continues a checkpoint.pt of pretrain; sample from this file with `python -m "
                    "llmscratch generate --checkpoint FILE`",
        "classify": "classify takes the classifier.pt of finetune-classifier",
        "chat": "chat takes the model of finetune-instructions; sample from this file with `python -m llmscratch "
                "generate --checkpoint FILE`",
        "*": "this command takes a file it wrote itself, not a plain state dict; sample from this file with "
             "`python -m llmscratch generate --checkpoint FILE`"},
}


def flag_advice(message: str, command: str) -> str:
    """``message`` with the Python API's advice (``url=``, ``load_pretrained_gpt2(...)``, ``n_heads=``) replaced by
    what ``command`` takes: its flag or a command (``FLAG_ADVICE``). The Python API keeps its own advice."""
    for phrase, advice in FLAG_ADVICE.items():
        if phrase in message and (command in advice or "*" in advice):
            message = message.replace(phrase, advice.get(command, advice.get("*")))
    return message
