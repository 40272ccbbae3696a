"""Saving and loading training checkpoints: model, optimizer and training state, written atomically.

Introduced in ch05_pretraining, 5.4 (the book saves ``model.state_dict()`` and the optimizer's with
``torch.save``; this module adds what resuming a run exactly needs). A checkpoint is one ``torch.save`` file::

    {"format": "llmscratch-checkpoint", "version": 1,
     "model_state_dict": {...}, "optimizer_state_dict": {...} or None,
     "training_state": {"epoch": 1, "global_step": 8, "tokens_seen": ..., "train_losses": [...], ...,
                        "rng_state": {...}, "config": {...}}}

It holds only tensors, numbers, strings, ``None`` and lists/tuples/dicts of them, so it loads with
``torch.load(weights_only=True)``, which cannot run code hidden in a file (a plain pickle can).

The file is written to a hidden temporary file in the same folder, flushed to disk (``fsync``) and then
renamed over the final name (``llmscratch.files.atomic_write``): whatever stops the save (an error, a full disk,
Ctrl+C), the final name holds either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import torch

from .files import atomic_write

CHECKPOINT_FORMAT = "llmscratch-checkpoint"
CHECKPOINT_VERSION = 1
_PRIMITIVES = (bool, int, float, str, type(None))


def get_rng_state():
    """The random number generators' states, as tensors (ch05_pretraining, 5.4).

    torch's CPU generator (dropout on the CPU, the ``DataLoader``'s shuffle order), every CUDA device's
    generator (dropout on the GPU) and Python's ``random``. NumPy's generator is not saved: training here
    does not use it.
    """
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),  # uint8 tensor
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],  # one uint8 tensor per GPU
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def set_rng_state(state):
    """Restore the states returned by ``get_rng_state`` (ch05_pretraining, 5.4)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) != torch.cuda.device_count():
            raise ValueError(
                f"the checkpoint holds the RNG states of {len(state['cuda'])} GPUs but this machine has "
                f"{torch.cuda.device_count()}; exact resumption needs the same GPUs"
            )
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss_next"]))


def _check_storable(value, where):
    """Raise a ``ValueError`` naming the first value ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(value, torch.Tensor) or type(value) in _PRIMITIVES:
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_storable(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise ValueError(f"{where} has a key of type {type(key).__name__}; use str or int keys")
            _check_storable(item, f"{where}[{key!r}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}: a checkpoint stores only tensors, "
        "numbers, strings, None and lists/tuples/dicts of them (so it loads with weights_only=True); "
        "convert it, e.g. torch.as_tensor(x), float(x) or x.tolist()"
    )


def save_checkpoint(path, model, optimizer=None, **training_state):
    """Save model, optimizer and ``training_state`` to ``path`` atomically; return the path (ch05_pretraining, 5.4).

    ``training_state`` holds whatever resuming needs, e.g. ``epoch``, ``global_step``, ``tokens_seen``, the
    loss lists, ``rng_state=get_rng_state()`` and ``config`` (the model's config dict, checked on load).
    Values must be tensors, numbers, strings, None or lists/tuples/dicts of them (a clear ``ValueError``
    otherwise, before anything is written).
    """
    path = Path(path)
    _check_storable(training_state, "training_state")
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot save {path}: the folder {path.parent} does not exist; "
            f"create it first, e.g. Path({str(path.parent)!r}).mkdir(parents=True, exist_ok=True)"
        )
    if path.is_dir():
        raise IsADirectoryError(f"cannot save the checkpoint as {path}: that is a folder; give a file name")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "training_state": training_state,
    }
    with atomic_write(path) as handle:  # a temporary file renamed into place: never half a checkpoint
        torch.save(payload, handle)
    return path


def _not_a_checkpoint(path, payload):
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return ValueError(
            f"{path} looks like a bare state_dict (torch.save(model.state_dict(), ...)), not a checkpoint of "
            "save_checkpoint: load it with model.load_state_dict(torch.load(path, weights_only=True))"
        )
    found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
    return ValueError(
        f"{path} is not a checkpoint written by llmscratch.checkpoints.save_checkpoint "
        f"(expected a dict with format={CHECKPOINT_FORMAT!r}, found {found})"
    )


def _check_config(path, saved, config):
    missing = object()
    differing = sorted(k for k in set(saved) | set(config) if saved.get(k, missing) != config.get(k, missing))
    if differing:
        details = "; ".join(
            f"{k}: checkpoint {saved.get(k, '<absent>')!r}, given {config.get(k, '<absent>')!r}" for k in differing
        )
        raise ValueError(
            f"config mismatch with {path} in {', '.join(differing)} ({details}). Build the model with the "
            "checkpoint's config (load_checkpoint(...)['config'] of a matching run) or start a new run"
        )


def _torch_load(path, map_location, what):
    """``torch.load(weights_only=True)`` with a one-line ``ValueError`` for files it cannot or will not read.

    PyTorch's own message for a refused file suggests ``weights_only=False``, which would run any code hidden
    in the file: never shown here.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}: check the path")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a {what} file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated/corrupt file, not a torch file, or refused by weights_only
        if not zipfile.is_zipfile(path) and not _starts_like_a_pickle(path):
            reason = "its bytes are not a file of torch.save: neither a zip archive nor a pickle"
        elif "weights_only" in str(error).lower() or "weights only" in str(error).lower():
            reason = "it holds Python objects other than tensors and plain values, which are not loaded for safety"
        else:
            first_line = str(error).splitlines()[0] if str(error) else ""
            reason = f"torch.load failed: {type(error).__name__}: {first_line}"
        raise ValueError(f"{path} is not a {what} ({reason})") from None


def _starts_like_a_pickle(path):
    """A pickle (torch.save's legacy format) starts with the PROTO opcode 0x80 and a protocol number."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 1 <= head[1] <= 5


def _check_version(path, payload):
    version = payload.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} has no valid checkpoint version ({version!r}): the file is damaged; use another "
                         "checkpoint or start a new run")
    if version > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint version {version}, newer than this llmscratch "
            f"({CHECKPOINT_VERSION}); update the package (git pull; pip install -r requirements.txt)"
        )
    missing = [key for key in ("model_state_dict", "optimizer_state_dict", "training_state") if key not in payload]
    if missing or not isinstance(payload.get("training_state"), dict):
        raise ValueError(f"{path} lacks {', '.join(missing) or 'a training_state dict'}: the file is damaged or "
                         "was not written by save_checkpoint; use another checkpoint or start a new run")


def load_model_state(path, map_location="cpu"):
    """``(state_dict, config or None)`` of a model file: a checkpoint of ``save_checkpoint`` (with its config),
    the book's ``{"model_state_dict": ..., "optimizer_state_dict": ...}`` (5.4) or a bare ``state_dict``.

    The one reader of the checkpoint format for code that only needs the weights (``load_pretrained_gpt2``).
    """
    payload = _torch_load(path, map_location, "PyTorch model file (torch.save of a state_dict or a checkpoint)")
    config = None
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        _check_version(path, payload)
        config = payload["training_state"].get("config")
        payload = payload["model_state_dict"]
    elif isinstance(payload, dict) and isinstance(payload.get("model_state_dict"), dict):
        payload = payload["model_state_dict"]  # the book's checkpoint with the optimizer's state (5.4)
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ValueError(f"{path} holds a {type(payload).__name__}, not a state dict of tensors nor a checkpoint")
    return payload, config if isinstance(config, dict) else None


# What each ``training_state["kind"]`` of the package's files is, for messages that name what a file holds
KIND_DESCRIPTIONS = {None: "a pretraining checkpoint (no classification head)",
                     "classifier": "a spam classifier of finetune-classifier (use classify, or load_classifier)",
                     "instruction-model": "an instruction model of finetune-instructions (use chat, or "
                                          "load_instruction_model)"}


def describe_kind(kind):
    """What a checkpoint of ``kind`` holds, in words (ch06_finetune_classification)."""
    return KIND_DESCRIPTIONS.get(kind, f"a checkpoint of kind {kind!r}")


def read_training_state(path, *, config=None):
    """The training state of a checkpoint, checked (format, version, ``config``), without reading the weights
    into a model (ch05_pretraining, 5.4): what a command line needs before it resumes a run."""
    payload = _torch_load(path, "meta", "checkpoint written by llmscratch.checkpoints.save_checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise _not_a_checkpoint(path, payload)
    _check_version(path, payload)
    state = payload["training_state"]
    if config is not None and state.get("config") is not None:
        _check_config(path, state["config"], config)
    return state


def load_checkpoint(path, model, optimizer=None, map_location="cpu", *, config=None):
    """Load a checkpoint into ``model`` (and ``optimizer``); return its training state (ch05_pretraining, 5.4).

    Loads with ``torch.load(weights_only=True)``. ``config``, when given, must equal the config saved with the
    checkpoint (the error names the keys that differ). The RNG states are returned, not applied: call
    ``set_rng_state(state["rng_state"])`` to continue the random sequence (``ResumableRun`` does).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}: check the path, or train first with "
            f"train_model_resumable(..., checkpoint_path={str(path)!r}) (or save_checkpoint), "
            "or start from scratch with resume=False"
        )
    payload = _torch_load(path, map_location, "checkpoint written by llmscratch.checkpoints.save_checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise _not_a_checkpoint(path, payload)
    _check_version(path, payload)
    state = payload["training_state"]
    saved_config = state.get("config")
    if config is not None and saved_config is not None:
        _check_config(path, saved_config, config)
    try:
        model.load_state_dict(payload["model_state_dict"])
    except RuntimeError as error:
        hint = f" (it was saved with config {saved_config})" if saved_config is not None else ""
        raise ValueError(
            f"the model's architecture does not match the checkpoint {path}{hint}; build the model with the "
            f"same config. PyTorch said: {str(error).splitlines()[0]}"
        ) from None
    if optimizer is not None:
        if payload["optimizer_state_dict"] is None:
            raise ValueError(f"{path} holds no optimizer state (saved with optimizer=None); pass optimizer=None")
        try:
            optimizer.load_state_dict(payload["optimizer_state_dict"])
        except ValueError as error:
            raise ValueError(
                f"the optimizer does not match the one saved in {path} (same model parameters and "
                f"param_groups are needed): {error}"
            ) from None
    return state
