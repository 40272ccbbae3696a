"""Download, verify and cache the course's data files.

Introduced in ch02_text_data (2.2). Every file the course reads is listed in :data:`DATA_FILES` with its
canonical URL and sha256. :func:`get_data` returns the local path of a file and, in this order:

1. reuses a cached copy in the data folder (``LLMSCRATCH_DATA_DIR``) when its sha256 matches;
2. copies it from an offline mirror folder (``LLMSCRATCH_DATA_MIRROR``) when the mirror holds it;
3. downloads it from its URL (with a timeout, a few retries and a progress bar).

A file only appears under its final name after its sha256 has been checked: it is written to a hidden
``.part`` file next to it and moved into place with :func:`os.replace`, so an interrupted or wrong
download never leaves a broken file behind.

Run ``python -m llmscratch download`` to fetch all the files at once (e.g. before going offline).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from .files import finish, install, staged_file
from .settings import get_settings

__all__ = [
    "DATA_FILES",
    "DataChecksumError",
    "DataDownloadError",
    "DataFile",
    "fetch",
    "get_data",
    "main",
    "sha256_of",
]

_log = logging.getLogger(__name__)

MIRROR_VARIABLE = "LLMSCRATCH_DATA_MIRROR"
USER_AGENT = "Mozilla/5.0 (compatible; llmscratch course data downloader)"
_CHUNK = 1 << 20  # 1 MiB
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # HTTP answers worth another try


@dataclass(frozen=True)
class DataFile:
    """One data file of the course: where it comes from and what its content must hash to."""

    name: str  # key in DATA_FILES, e.g. "the-verdict"
    filename: str  # local file name in the data folder and in the mirror
    url: str  # canonical source
    sha256: str  # of the local file (of the extracted member when zip_member is set)
    description: str
    zip_member: str | None = None  # the URL serves a zip: extract this member


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
        name="tinyshakespeare",
        filename="tinyshakespeare.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        description="Tiny Shakespeare; 1,115,394 characters, a larger corpus for pretraining demos",
    ),
)

DATA_FILES: dict[str, DataFile] = {entry.name: entry for entry in _REGISTRY}


class DataDownloadError(RuntimeError):
    """A data file could not be obtained (offline, server error, bad archive...)."""


class DataChecksumError(DataDownloadError):
    """A data file's content does not match its expected sha256; nothing was kept."""


class _ShortResponse(Exception):
    """The server closed the connection before sending Content-Length bytes."""


_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, _ShortResponse)


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
    ``mirror/entry.filename`` if it exists, then the URL. ``retries`` is the number of extra download
    attempts after a network failure; they wait ``backoff``, ``2 * backoff``, ``4 * backoff``... seconds.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / entry.filename
    if _cached(entry, target):
        return target
    mirror_file = Path(mirror) / entry.filename if mirror is not None else None
    if mirror_file is not None and mirror_file.is_file():
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
    actual = sha256_of(target)
    if actual == entry.sha256:
        return True
    _log.warning("%s has sha256 %s instead of %s; fetching it again", target, actual, entry.sha256)
    target.unlink()
    return False


def _install(entry: DataFile, part: Path, target: Path, *, source: str, hint: str) -> None:
    """Move ``part`` to ``target`` if its sha256 is the expected one, else raise."""
    actual = sha256_of(part)
    if actual != entry.sha256:
        raise DataChecksumError(
            f"sha256 mismatch for {source}: expected {entry.sha256}, got {actual}. "
            f"Nothing was kept in {target.parent}. {hint}"
        )
    install(part, target)


def _copy_from_mirror(entry: DataFile, mirror_file: Path, target: Path) -> None:
    with staged_file(target) as (handle, part):
        with mirror_file.open("rb") as source:
            shutil.copyfileobj(source, handle, _CHUNK)
        finish(handle)
        hint = (
            f"Replace the mirror file with a good copy (canonical source: {entry.url}"
            + (f", member {entry.zip_member!r} of the zip" if entry.zip_member else "")
            + f"), or unset {MIRROR_VARIABLE} to download it."
        )
        _install(entry, part, target, source=f"mirror file {mirror_file}", hint=hint)


def _download(
    entry: DataFile, target: Path, mirror: object, *, timeout: float, retries: int, backoff: float, progress: bool
) -> None:
    hint = (
        f"The file at {entry.url} may have changed or been damaged on the way: try again, or download it "
        "by hand and compare its sha256 with the one in llmscratch.data.DATA_FILES."
    )
    with staged_file(target) as (handle, part):
        _download_with_retries(entry, target, mirror, handle, timeout=timeout, retries=retries, backoff=backoff,
                               progress=progress)
        finish(handle)
        if entry.zip_member is None:
            _install(entry, part, target, source=entry.url, hint=hint)
            return
        with staged_file(target) as (member_handle, member_part):
            _extract_member(entry, part, member_handle, target)
            finish(member_handle)
            _install(entry, member_part, target, source=f"{entry.url} (member {entry.zip_member!r})", hint=hint)


def _download_with_retries(
    entry: DataFile, target: Path, mirror: object, handle: IO[bytes], *, timeout: float, retries: int,
    backoff: float, progress: bool,
) -> None:
    last_error: BaseException | None = None
    attempts = 0
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        attempts += 1
        handle.seek(0)
        handle.truncate()
        try:
            _stream(entry.url, handle, timeout=timeout, progress=progress, desc=entry.filename)
            return
        except urllib.error.HTTPError as error:
            error.close()
            last_error = error
            if error.code not in _RETRY_STATUS:
                break
        except _TRANSIENT as error:
            last_error = error
        _log.info("download of %s failed (attempt %d of %d): %s", entry.url, attempts, retries + 1, last_error)
    raise _download_error(entry, target, mirror, last_error, attempts) from last_error


def _stream(url: str, handle: IO[bytes], *, timeout: float, progress: bool, desc: str) -> None:
    """Write the body of ``url`` to ``handle``; a body shorter than its Content-Length is an error."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.strip().isdigit() else None
        received = 0
        with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress) as bar:
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise _ShortResponse(f"connection closed after {received} of {total} bytes")


def _extract_member(entry: DataFile, archive: Path, handle: IO[bytes], target: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped, zipped.open(str(entry.zip_member)) as member:
            shutil.copyfileobj(member, handle, _CHUNK)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DataDownloadError(
            f"{entry.url} is not a zip archive holding {entry.zip_member!r} ({error}). "
            f"Nothing was kept in {target.parent}. Try again later, or extract the member by hand and save it "
            f"as {target}."
        ) from error


def _describe(error: BaseException | None) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{error.reason}"
    return str(error) or type(error).__name__


def _download_error(
    entry: DataFile, target: Path, mirror: object, error: BaseException | None, attempts: int
) -> DataDownloadError:
    by_hand = f"save it as {target}"
    if entry.zip_member is not None:
        by_hand = f"extract the member {entry.zip_member!r} from the zip and save it as {target}"
    if mirror is None:
        use_mirror = f"set {MIRROR_VARIABLE} to a folder that holds {entry.filename}"
    else:
        use_mirror = f"put {entry.filename} in the mirror folder {mirror} (set by {MIRROR_VARIABLE})"
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
    """Fetch ``names`` (default: every file of :data:`DATA_FILES`), one printed line per file.

    This is ``python -m llmscratch download``.
    """
    names = list(DATA_FILES) if not names else names
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
        raise SystemExit(f"{len(failed)} of {len(names)} data files could not be fetched: {', '.join(failed)}")
