"""Download OpenAI's GPT-2 weights from the Hugging Face Hub.

Introduced in ch05_pretraining, 5.5. The book downloads TensorFlow checkpoints from OpenAI; here the same
weights come from the Hub repositories in :data:`GPT2_REPOS`, as ``model.safetensors`` (+ ``config.json``),
through ``huggingface_hub.hf_hub_download``, which

- caches each file (by default in Hugging Face's cache, ``~/.cache/huggingface/hub``, or ``HF_HUB_CACHE``;
  shared with ``transformers``), so a second call downloads nothing;
- retries and resumes a transfer that breaks off, checks the size of what arrived, writes to a temporary
  file and only then moves it into the cache (an interrupted download never leaves a broken file);
- shows a progress bar (``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides it).

:func:`download_gpt2` looks in the cache first and makes no request at all when the files are there (GPT-2's
weights have not changed since 2019). Offline mode (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) only
ever uses the cache. Every failure ends in :class:`GPT2DownloadError`, which says what to do: connect, or
download ``model.safetensors`` by hand and pass its path to ``load_pretrained_gpt2``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .data import quiet_logger

__all__ = ["GPT2_REPOS", "GPT2DownloadError", "download_gpt2"]

GPT2_REPOS: dict[str, str] = {
    "124M": "openai-community/gpt2",          # gpt2 (small), 0.5 GB of float32 weights
    "355M": "openai-community/gpt2-medium",   # 1.4 GB
    "774M": "openai-community/gpt2-large",    # 3.1 GB
    "1558M": "openai-community/gpt2-xl",      # 6.4 GB
}
GPT2_FILES = ("config.json", "model.safetensors")  # config first: small, and it fails fast when offline
DEFAULT_ENDPOINT = "https://huggingface.co"


class GPT2DownloadError(OSError):
    """The GPT-2 weights could not be downloaded or found in the cache (ch05_pretraining, 5.5)."""


def _check_size(size) -> str:
    if size not in GPT2_REPOS:
        raise ValueError(f"unknown GPT-2 size {size!r}: use one of {', '.join(repr(s) for s in GPT2_REPOS)}")
    return size


def _offline(local_files_only: bool | None) -> bool:
    """``local_files_only`` when given, else ``HF_HUB_OFFLINE`` (read now, not when huggingface_hub was imported)."""
    if local_files_only is not None:
        return bool(local_files_only)
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def _file_url(endpoint: str | None, repo_id: str, revision: str, filename: str) -> str:
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    return f"{endpoint}/{repo_id}/resolve/{revision}/{filename}"


def download_gpt2(size: str, *, cache_dir: str | os.PathLike | None = None, endpoint: str | None = None,
                  local_files_only: bool | None = None, revision: str | None = None) -> Path:
    """Download GPT-2's ``model.safetensors`` and ``config.json`` for ``size``; return the weights' path.

    Introduced in ch05_pretraining, 5.5. ``size`` is ``"124M"``, ``"355M"``, ``"774M"`` or ``"1558M"``
    (:data:`GPT2_REPOS`). The two files end up side by side in the cache, so ``path.parent`` is a folder that
    ``load_pretrained_gpt2`` also accepts.

    - ``cache_dir``: where the Hub cache lives (default: Hugging Face's, shared with ``transformers``).
    - ``endpoint``: the Hub's address (default ``HF_ENDPOINT`` or https://huggingface.co), e.g. a mirror.
    - ``local_files_only``: ``True`` never touches the network; ``None`` (default) follows ``HF_HUB_OFFLINE``.
    - ``revision``: branch, tag or commit of the repository (default ``"main"``).

    Raises ``ValueError`` for an unknown size and :class:`GPT2DownloadError` when the files are neither in the
    cache nor downloadable.
    """
    repo_id = GPT2_REPOS[_check_size(size)]
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError as error:  # the loader itself works without it, from a local file
        raise ImportError(
            "downloading GPT-2 needs huggingface_hub: pip install huggingface_hub "
            "(or download model.safetensors by hand and pass its path to load_pretrained_gpt2)"
        ) from error

    revision = revision or "main"
    offline = _offline(local_files_only)
    kwargs = dict(repo_id=repo_id, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir),
                  endpoint=endpoint)
    paths = {}
    for filename in GPT2_FILES:
        try:  # the cache first: no request at all when the file is already there
            paths[filename] = Path(hf_hub_download(filename=filename, local_files_only=True, **kwargs))
            continue
        except LocalEntryNotFoundError:  # not in the cache
            if offline:
                raise GPT2DownloadError(
                    f"GPT-2 {size} ({repo_id}/{filename}) is not in the cache "
                    f"({cache_dir or 'the default Hugging Face cache'}) and offline mode is on "
                    "(HF_HUB_OFFLINE=1 or local_files_only=True). Connect to the internet and run without offline "
                    "mode once, or download model.safetensors by hand from "
                    f"{_file_url(endpoint, repo_id, revision, 'model.safetensors')} and pass its path: "
                    "load_pretrained_gpt2('path/to/model.safetensors')"
                ) from None
        try:
            with quiet_logger("huggingface_hub", logging.ERROR):  # its retry warnings; our error says it all
                paths[filename] = Path(hf_hub_download(filename=filename, local_files_only=False, **kwargs))
        except Exception as error:  # no connection, proxy, Hub down, size check failed, ...
            raise GPT2DownloadError(
                f"could not download GPT-2 {size} ({repo_id}/{filename}) from "
                f"{_file_url(endpoint, repo_id, revision, filename)}: {type(error).__name__}: {error}\n"
                "What to do: check the internet connection (or HF_ENDPOINT / proxy settings) and run again "
                "(finished files stay cached); or download model.safetensors by hand from "
                f"{_file_url(endpoint, repo_id, revision, 'model.safetensors')} and pass its path: "
                "load_pretrained_gpt2('path/to/model.safetensors')"
            ) from error
    return paths["model.safetensors"]
