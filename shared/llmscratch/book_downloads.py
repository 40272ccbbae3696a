"""The book's download functions, by their book names and signatures, backed by the course's verified downloads.

The book downloads each data file with ``urllib`` and trusts whatever arrives. Here the same calls go through the
data registry (:mod:`llmscratch.data`): the URL must be one of the course's canonical addresses, the file is
checked against its sha256 before it appears under its name, and the offline mirror (``LLMSCRATCH_DATA_MIRROR``)
serves it without internet. A reader can type the book's call; what differs is said in each docstring.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import DATA_FILES, DataFile, fetch
from .settings import get_settings

__all__ = ["download_and_load_file", "fetch_url", "registry_entry"]


def registry_entry(url: str) -> DataFile:
    """The registry entry whose canonical address is ``url``; a ValueError names the known addresses."""
    for entry in DATA_FILES.values():
        if entry.url == url:
            return entry
    known = "\n  ".join(f"{entry.name}: {entry.url}" for entry in DATA_FILES.values())
    raise ValueError(f"{url!r} is not one of the course's data files, so its content could not be checked. "
                     f"Use one of these addresses (or llmscratch.get_data(name)):\n  {known}")


def fetch_url(url: str, file_path) -> Path:
    """Make ``file_path`` hold the verified file that the registry serves at ``url`` and return its path.

    ``file_path``'s name must be the registry's file name (the book's names are); its folder is created.
    """
    entry, file_path = registry_entry(url), Path(file_path)
    if file_path.name != entry.filename:
        raise ValueError(f"the file from {url} is saved as {entry.filename!r}; got {file_path.name!r} "
                         f"(pass a path ending in {entry.filename})")
    return fetch(entry, file_path.parent, get_settings().data_mirror)


def download_and_load_file(file_path, url):
    """The book's loader of the instruction data (7.2): download ``url`` to ``file_path`` once, then read the JSON.

    Same name, signature and result as the book's. The body differs in one step: instead of ``urllib``
    (``urlopen(url).read()`` written to ``file_path``), :func:`fetch_url` downloads through the course's registry,
    checks the sha256 and uses the offline mirror; a cached file is checked, not trusted.
    Introduced in ch07_finetune_instructions, 7.2.
    """
    fetch_url(url, file_path)

    with open(file_path, "r", encoding="utf-8") as file:
        data = json.load(file)

    return data
