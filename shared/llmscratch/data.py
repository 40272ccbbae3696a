"""Download, verify and cache the course's data files.

Introduced in ch02_text_data (2.2). Every file the course reads is listed in :data:`DATA_FILES` with its
canonical URL and sha256 (or, for a file whose sha256 is not pinned, a function that checks its structure:
Alpaca 52k, exercise 7.3). :func:`get_data` returns the local path of a file and, in this order:

1. reuses a cached copy in the data folder (``LLMSCRATCH_DATA_DIR``) when its sha256 matches;
2. copies it from an offline mirror folder (``LLMSCRATCH_DATA_MIRROR``) when the mirror holds it;
3. downloads it from its URL (with a timeout, a few retries and a progress bar).

A file only appears under its final name after its sha256 has been checked: it is staged in a hidden
``.{name}.XXXXXXXX.part`` file or folder next to it, flushed to disk and moved into place with
:func:`os.replace` (:mod:`llmscratch.files`), so an interrupted or wrong download never leaves a broken file
behind; a staging file that a killed process left is removed by the next fetch once it is a minute old. A
misconfigured mirror (a missing folder, a folder or an unreadable file where the file should be) is an error
at once, not a silent fall-through to the network.

Who does what. `pooch <https://www.fatiando.org/pooch>`_ fetches: :func:`pooch.retrieve` with a
:class:`pooch.HTTPDownloader` (requests: streaming, timeout, User-Agent, tqdm progress bar; urllib3 2 rejects a
body shorter than its Content-Length) downloads into the staging folder, and :class:`pooch.Unzip` extracts the
zip member there. Three parts stay ours, because pooch cannot do them the way the course needs:

* the retries: ``pooch.retrieve`` has none, and ``Pooch.fetch(retry_if_failed=n)`` retries every requests
  error (a 404 too) and every hash mismatch, after fixed waits of 1 s, 2 s, 3 s... that cannot be set. Ours
  retries network failures and HTTP 408/429/5xx only, after ``backoff``, ``2 * backoff``... seconds.
* the sha256 check: with ``known_hash`` pooch deletes a mismatching file and raises a ValueError whose text
  is the only place the received hash appears, and the registry's hash of a zipped file is the member's, not
  the archive's. So pooch gets ``known_hash=None`` and :func:`sha256_of` checks the file before it is
  installed, for :class:`DataChecksumError` to name both hashes.
* the install into the data folder: pooch only ever writes inside the staging folder; the checked file is
  ``fsync``-ed and moved over its final name with :func:`os.replace` (pooch's own move does not ``fsync``).

Run ``python -m llmscratch download`` to fetch all the files at once (e.g. before going offline).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pooch
import requests
from tqdm import tqdm

from .files import finish, install, remove_stale_temp_files, staged_file, staged_folder, sync_file
from .settings import get_settings

__all__ = [
    "DATA_FILES",
    "DataChecksumError",
    "DataDownloadError",
    "DataFile",
    "fetch",
    "get_data",
    "main",
    "read_json_records",
    "sha256_of",
]

_log = logging.getLogger(__name__)

MIRROR_VARIABLE = "LLMSCRATCH_DATA_MIRROR"
USER_AGENT = "Mozilla/5.0 (compatible; llmscratch course data downloader)"
_CHUNK = 1 << 20  # 1 MiB
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # HTTP answers worth another try
# failures of the network itself, worth another try (requests.ConnectionError is not the built-in one)
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class DataFile:
    """One data file of the course: where it comes from and what its content must hash to.

    A file whose sha256 is not pinned (``sha256=None``) names a ``verify`` function instead, which raises
    ValueError for a wrong file; it is checked, with the same guarantees, wherever a sha256 would be.
    """

    name: str  # key in DATA_FILES, e.g. "the-verdict"
    filename: str  # local file name in the data folder and in the mirror
    url: str  # canonical source
    sha256: str | None  # of the local file (of the extracted member when zip_member is set); None: see verify
    description: str
    zip_member: str | None = None  # the URL serves a zip: extract this member
    verify: Callable[[Path], object] | None = None  # with sha256=None: checks the file, ValueError when wrong
    optional: bool = False  # large and used by one optional exercise: fetched only when named

    def __post_init__(self) -> None:
        if self.sha256 is None and self.verify is None:
            raise ValueError(f"data file {self.name!r} needs a sha256 or a verify function: no file is installed "
                             "unchecked")


def read_json_records(path, keys, expected_entries=None) -> list[dict]:
    """The JSON list of objects in ``path``, after checking that every object has exactly the text fields
    ``keys`` and, when ``expected_entries`` is given, that there are that many; ValueError otherwise.

    Introduced in ch07_finetune_instructions (exercise 7.3): the structure check of Alpaca 52k, whose sha256 is
    not pinned (it could not be taken on the offline machine that built the course).
    """
    try:
        with open(path, encoding="utf-8-sig") as handle:  # a byte order mark (some Windows editors) is not JSON
            records = json.load(handle)
    except ValueError as error:  # not UTF-8 or not JSON
        raise ValueError(f"{path} is not a JSON file: {error}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} holds a JSON {type(records).__name__}, not a list of entries")
    if expected_entries is not None and len(records) != expected_entries:
        raise ValueError(f"{path} holds {len(records):,} entries, expected {expected_entries:,}")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or set(record) != set(keys):
            found = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"entry {i} of {path} has the keys {found}, expected exactly {sorted(keys)}")
        if not all(isinstance(value, str) for value in record.values()):
            raise ValueError(f"entry {i} of {path} has a field that is not text: {record!r:.200}")
    return records


_REGISTRY = (
    DataFile(
        name="the-verdict",
        filename="the-verdict.txt",
        url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        description="'The Verdict' by Edith Wharton (public domain); 20,479 characters",
    ),
    DataFile(
        name="sms-spam-collection",
        filename="SMSSpamCollection.tsv",
        url="https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
        sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
        description="UCI SMS Spam Collection (CC BY 4.0); 5,574 lines 'label<TAB>text'",
        zip_member="SMSSpamCollection",
    ),
    DataFile(
        name="instruction-data",
        filename="instruction-data.json",
        url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
        description="1,100 instruction examples {instruction, input, output}",
    ),
    DataFile(
        name="instruction-data-with-preference",
        filename="instruction-data-with-preference.json",
        url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/04_preference-tuning-with-dpo/"
            "instruction-data-with-preference.json",
        sha256="305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
        description="the 1,100 instructions with a polite 'chosen' and an impolite 'rejected' response; DPO (ch07)",
    ),
    DataFile(
        name="tinyshakespeare",
        filename="tinyshakespeare.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        description="Tiny Shakespeare; 1,115,394 characters, a larger corpus for pretraining demos",
    ),
    DataFile(
        name="alpaca-52k",
        filename="alpaca_data.json",
        url="https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/main/alpaca_data.json",
        sha256=None,  # not pinned: it could not be taken offline; the structure is checked instead
        description="Stanford Alpaca (CC BY-NC 4.0), 52,002 entries {instruction, input, output}; exercise 7.3",
        verify=functools.partial(read_json_records, keys=("instruction", "input", "output"),
                                 expected_entries=52_002),
        optional=True,  # 22 MB for exercise 7.3 only
    ),
)

DATA_FILES: dict[str, DataFile] = {entry.name: entry for entry in _REGISTRY}


class DataDownloadError(RuntimeError):
    """A data file could not be obtained (offline, server error, bad archive...)."""


class DataChecksumError(DataDownloadError):
    """A data file's content does not match its expected sha256; nothing was kept."""


def sha256_of(path: str | os.PathLike[str], chunk_size: int = _CHUNK) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def get_data(name: str) -> Path:
    """Local path of the course data file ``name`` (a key of :data:`DATA_FILES`), fetched if needed.

    Introduced in ch02_text_data, 2.2. The data folder and the offline mirror come from
    :func:`llmscratch.settings.get_settings` (``LLMSCRATCH_DATA_DIR``, ``LLMSCRATCH_DATA_MIRROR``).
    """
    entry = _lookup(name)
    settings = get_settings()
    return fetch(entry, settings.data_dir, settings.data_mirror)


def fetch(
    entry: DataFile,
    data_dir: str | os.PathLike[str],
    mirror: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 30,
    retries: int = 3,
    progress: bool = True,
    backoff: float = 1.0,
) -> Path:
    """Make ``data_dir/entry.filename`` hold the verified file and return its path.

    Cache first (a cached file with the wrong sha256 is deleted and fetched again), then
    ``mirror/entry.filename`` if the mirror holds it, then the URL. ``retries`` is the number of extra download
    attempts after a network failure; they wait ``backoff``, ``2 * backoff``, ``4 * backoff``... seconds.
    Staging files of this entry that a killed process left in ``data_dir`` (a minute old) are removed first.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / entry.filename
    for stale in remove_stale_temp_files(data_dir, [entry.filename]):
        _log.info("removed %s, left by an interrupted download", stale)
    if _cached(entry, target):
        return target
    mirror_file = _mirror_file(entry, mirror)
    if mirror_file is not None:
        _copy_from_mirror(entry, mirror_file, target)
    else:
        _download(entry, target, mirror, timeout=timeout, retries=retries, backoff=backoff, progress=progress)
    return target


def _lookup(name: str) -> DataFile:
    try:
        return DATA_FILES[name]
    except KeyError:
        known = ", ".join(sorted(DATA_FILES))
        raise ValueError(f"Unknown data file {name!r}. Known names: {known}.") from None


def _cached(entry: DataFile, target: Path) -> bool:
    """True if ``target`` holds the right file; a wrong one is deleted."""
    if not target.is_file():
        return False
    if entry.sha256 is None:  # not pinned: the entry's structure check
        problem = _unverified(entry, target)
        if problem is None:
            return True
        _log.warning("%s fails the check of %r (%s); fetching it again", target, entry.name, problem)
        target.unlink()
        return False
    actual = sha256_of(target)
    if actual == entry.sha256:
        return True
    _log.warning("%s has sha256 %s instead of %s; fetching it again", target, actual, entry.sha256)
    target.unlink()
    return False


def _unverified(entry: DataFile, path: Path) -> str | None:
    """What ``entry.verify`` finds wrong with ``path``, None if nothing."""
    try:
        entry.verify(path)
    except ValueError as error:
        return str(error)
    return None


def _install(entry: DataFile, part: Path, target: Path, *, source: str, hint: str) -> None:
    """Move ``part`` to ``target`` if its sha256 is the expected one (or it passes ``entry.verify``), else raise."""
    if entry.sha256 is None:
        problem = _unverified(entry, part)
        if problem is not None:
            raise DataChecksumError(
                f"{source} is not the expected file (its sha256 is not pinned; the structure check says: "
                f"{problem}). Nothing was kept in {target.parent}. {hint}"
            )
        install(part, target)
        return
    actual = sha256_of(part)
    if actual != entry.sha256:
        raise DataChecksumError(
            f"sha256 mismatch for {source}: expected {entry.sha256}, got {actual}. "
            f"Nothing was kept in {target.parent}. {hint}"
        )
    install(part, target)


# --- the offline mirror ------------------------------------------------------------------------------------


def _mirror_file(entry: DataFile, mirror: str | os.PathLike[str] | None) -> Path | None:
    """``mirror/entry.filename`` if the mirror holds it, None if there is no mirror or it lacks the file.

    A mirror that is not a folder, or that holds something other than a file under the name, is an error:
    falling through to the network would hide the misconfiguration behind a slow download or an offline error.
    """
    if mirror is None:
        return None
    mirror = Path(mirror)
    if not mirror.is_dir():
        problem = "does not exist" if not mirror.exists() else "is not a folder"
        raise DataDownloadError(
            f"{MIRROR_VARIABLE} is {mirror}, which {problem}. Set it to the folder that holds the course's "
            f"data files, or unset it to download them."
        )
    path = mirror / entry.filename
    if path.is_file():
        return path
    if path.exists() or path.is_symlink():
        raise DataDownloadError(
            f"The mirror folder {mirror} ({MIRROR_VARIABLE}) holds {path}, which is not a file (a folder or a "
            f"broken link). Replace it with the file (canonical source: {entry.url}), or remove it to download it."
        )
    return None


def _copy_from_mirror(entry: DataFile, mirror_file: Path, target: Path) -> None:
    with staged_file(target) as (handle, part):
        with _open_mirror_file(mirror_file) as source:
            shutil.copyfileobj(source, handle, _CHUNK)
        finish(handle)
        hint = (
            f"Replace the mirror file with a good copy (canonical source: {entry.url}"
            + (f", member {entry.zip_member!r} of the zip" if entry.zip_member else "")
            + f"), or unset {MIRROR_VARIABLE} to download it."
        )
        _install(entry, part, target, source=f"mirror file {mirror_file}", hint=hint)


def _open_mirror_file(mirror_file: Path) -> IO[bytes]:
    try:
        return mirror_file.open("rb")
    except OSError as error:
        raise DataDownloadError(
            f"Cannot read the mirror file {mirror_file} ({error.strerror or error}). Make it readable, or unset "
            f"{MIRROR_VARIABLE} to download it."
        ) from error


# --- download (pooch fetches; retries, checks and the install are ours) ------------------------------------


def _download(
    entry: DataFile, target: Path, mirror: object, *, timeout: float, retries: int, backoff: float, progress: bool
) -> None:
    hint = (
        f"The file at {entry.url} may have changed or been damaged on the way: try again, or download it "
        "by hand and compare its sha256 with the one in llmscratch.data.DATA_FILES."
        if entry.sha256 is not None else f"The file at {entry.url} may have changed or been damaged on the way."
    )
    source = entry.url if entry.zip_member is None else f"{entry.url} (member {entry.zip_member!r})"
    with staged_folder(target) as stage:
        fetched = _retrieve_with_retries(entry, target, mirror, stage, timeout=timeout, retries=retries,
                                         backoff=backoff, progress=progress)
        sync_file(fetched)
        _install(entry, fetched, target, source=source, hint=hint)


def _retrieve_with_retries(
    entry: DataFile, target: Path, mirror: object, stage: Path, *, timeout: float, retries: int, backoff: float,
    progress: bool,
) -> Path:
    last_error: requests.RequestException | None = None
    attempts = 0
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        attempts += 1
        try:
            return _retrieve(entry, target, stage, timeout=timeout, progress=progress)
        except requests.RequestException as error:
            last_error = error
            if not _worth_retrying(error):
                break
        _log.info("download of %s failed (attempt %d of %d): %s", entry.url, attempts, retries + 1, last_error)
    raise _download_error(entry, target, mirror, last_error, attempts) from last_error


def _retrieve(entry: DataFile, target: Path, stage: Path, *, timeout: float, progress: bool) -> Path:
    """One download attempt with pooch into ``stage``: the downloaded file, or the member extracted from it."""
    with _progress_bar(entry.filename, progress) as bar:
        downloader = pooch.HTTPDownloader(progressbar=bar if progress else False, chunk_size=1 << 16,
                                          timeout=timeout, headers={"User-Agent": USER_AGENT})
        return _pooch_retrieve(downloader, entry, target, stage)


class _PoochBar(tqdm):
    """The bar that pooch fills (it sets ``total`` and calls ``update``, ``reset``, ``close``), passed as an object
    rather than ``progressbar=True`` so that it names the file and is closed by us when an attempt fails."""

    def __bool__(self) -> bool:  # pooch only uses a bar object that is true; tqdm's truth is total > 0
        return True


# A bar shows only once bytes have flowed for this long: an attempt that fails at once (offline) prints no empty
# "0.00B [00:00, ?B/s]" bar, so a stored notebook output holds the error message alone.
PROGRESS_DELAY_S = 0.5


def _progress_bar(desc: str, enabled: bool) -> _PoochBar:
    return _PoochBar(desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
                     delay=PROGRESS_DELAY_S)


def _pooch_retrieve(downloader: pooch.HTTPDownloader, entry: DataFile, target: Path, stage: Path) -> Path:
    """``pooch.retrieve`` into ``stage``, without ``known_hash`` (the check is ours, see the module docstring)."""
    if entry.zip_member is None:
        with _quiet_pooch():
            return Path(pooch.retrieve(entry.url, known_hash=None, fname=entry.filename, path=stage,
                                       downloader=downloader))
    unzip = pooch.Unzip(members=[entry.zip_member], extract_dir="unzipped")  # stage/unzipped/<member>
    try:
        with _quiet_pooch():
            pooch.retrieve(entry.url, known_hash=None, fname=f"{entry.filename}.zip", path=stage,
                           downloader=downloader, processor=unzip)
    except zipfile.BadZipFile as error:
        raise _not_a_zip(entry, target, str(error)) from error
    member = stage / "unzipped" / entry.zip_member
    if not member.is_file():
        raise _not_a_zip(entry, target, "the member is missing")
    return member


@contextlib.contextmanager
def quiet_logger(logger: str | logging.Logger, level: int = logging.WARNING) -> Iterator[None]:
    """Raise ``logger`` (a name, or a logger object: pooch's is not in logging's registry) and its children to
    ``level`` for the duration: a library's chatter (pooch's INFO lines naming our staging folder;
    huggingface_hub's "Retrying in 1s" warnings) stays out of the notebooks, while our own error message says
    what happened and what to do."""
    logger = logging.getLogger(logger) if isinstance(logger, str) else logger
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _quiet_pooch() -> contextlib.AbstractContextManager[None]:
    """Mute pooch's INFO lines (they name our staging folder and suggest a known_hash); warnings still show."""
    return quiet_logger(pooch.get_logger(), logging.WARNING)


def _worth_retrying(error: requests.RequestException) -> bool:
    if isinstance(error, requests.HTTPError):
        return error.response is not None and error.response.status_code in _RETRY_STATUS
    return isinstance(error, _TRANSIENT)


def _not_a_zip(entry: DataFile, target: Path, reason: str) -> DataDownloadError:
    return DataDownloadError(
        f"{entry.url} is not a zip archive holding {entry.zip_member!r} ({reason}). "
        f"Nothing was kept in {target.parent}. Try again later, or extract the member by hand and save it "
        f"as {target}."
    )


def _describe(error: BaseException | None) -> str:
    """A short reason: ``HTTP 404 Not Found``, or the innermost cause (``[Errno 111] Connection refused``)."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    if error is None:
        return "no attempt"
    root = _innermost(error)
    if isinstance(error, requests.exceptions.ChunkedEncodingError):
        return f"connection closed early: {root}"
    return str(root) or type(root).__name__


def _innermost(error: BaseException) -> BaseException:
    """The root cause of ``error``: requests wraps urllib3's error, which wraps the socket's."""
    for _ in range(10):
        cause = error.__cause__ or error.__context__
        if cause is None:
            break
        error = cause
    return error


def _download_error(
    entry: DataFile, target: Path, mirror: object, error: BaseException | None, attempts: int
) -> DataDownloadError:
    by_hand = f"save it as {target}"
    if entry.zip_member is not None:
        by_hand = f"extract the member {entry.zip_member!r} from the zip and save it as {target}"
    if mirror is None:
        use_mirror = f"set {MIRROR_VARIABLE} to a folder that holds {entry.filename}"
    else:
        use_mirror = f"put {entry.filename} in the mirror folder {mirror} ({MIRROR_VARIABLE}), which lacks it"
    return DataDownloadError(
        f"Could not download {entry.name!r} from {entry.url} to {target} "
        f"({_describe(error)}; {attempts} attempt(s)). If this machine is offline or the site is down, "
        f"download the file by hand and {by_hand}, or {use_mirror}."
    )


def _display(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(names: list[str] | None = None) -> None:
    """Fetch ``names`` (default: every file of :data:`DATA_FILES` but the optional ones), one line per file.

    This is ``python -m llmscratch download``. Every name is tried; if any failed, raises one
    :class:`DataDownloadError` naming them (after their ``FAILED`` lines on stderr).
    """
    names = [name for name, entry in DATA_FILES.items() if not entry.optional] if not names else names
    for name in names:
        _lookup(name)
    failed = []
    for name in names:
        try:
            path = get_data(name)
        except DataDownloadError as error:
            failed.append(name)
            print(f"{name}: FAILED: {error}", file=sys.stderr)
            continue
        print(f"{name:<20} {_display(path)}")
    if failed:
        raise DataDownloadError(f"{len(failed)} of {len(names)} data files could not be fetched: {', '.join(failed)}")
