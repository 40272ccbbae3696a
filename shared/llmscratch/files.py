"""All-or-nothing file writes, shared by the data downloads, the checkpoints and the command line.

A file is written to a hidden temporary file in the same folder (``staged_file``), flushed to disk and only
then renamed over its final name (``install``, ``os.replace``: atomic on one file system). Whatever stops the
writing (an error, a wrong checksum, a full disk, Ctrl+C), the final name holds either the old file or the
new one, never half of one, and the temporary file is removed.

Only a process killed outright (SIGKILL, power cut) leaves its hidden temporary file behind;
``remove_stale_temp_files`` deletes those of our naming once nobody has written to them for a minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

_UMASK = os.umask(0o022)  # read the umask once (os.umask can only read it by setting it)...
os.umask(_UMASK)  # ...and put it back; temporary files are 0600, installed files get the usual mode

STALE_AFTER = 60.0  # seconds without a write after which a temporary file of ours counts as abandoned
# ".{target}.XXXXXXXX{.part|.tmp}": XXXXXXXX are the 8 random characters tempfile puts in its names
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.(?:part|tmp)")


@contextlib.contextmanager
def staged_file(target: Path, suffix: str = ".part") -> Iterator[tuple[IO[bytes], Path]]:
    """A hidden temporary file ``.{name}.XXXX{suffix}`` next to ``target``, open for binary writing, and its
    path; always deleted on exit unless ``install`` moved it into place."""
    target = Path(target)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=suffix, delete=False)
    part = Path(handle.name)
    try:
        yield handle, part
    finally:
        handle.close()
        part.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(target: Path, suffix: str = ".part") -> Iterator[Path]:
    """A hidden temporary folder ``.{name}.XXXX{suffix}`` next to ``target``, for a tool that writes files of its
    own naming (e.g. pooch); always deleted on exit, with all it holds."""
    target = Path(target)
    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sync_file(path: Path) -> None:
    """Flush a closed file that another library wrote to disk (``fsync``), like ``finish`` does for our handles."""
    with open(path, "r+b") as handle:
        os.fsync(handle.fileno())


def remove_stale_temp_files(
    folder: str | os.PathLike[str], names: str | Iterable[str] | None = None, *, older_than: float = STALE_AFTER
) -> list[Path]:
    """Delete the temporary files and folders that ``staged_file`` / ``staged_folder`` left in ``folder`` when
    their process was killed, and return their paths.

    Only hidden names of our pattern ``.{target}.XXXXXXXX.part`` / ``.tmp`` are candidates (``.gitignore``,
    ``.notes.txt`` or another program's files never are), only for the targets in ``names`` when given, and only
    when nothing was written to them (or, for a folder, in them) for ``older_than`` seconds: a live writer, such
    as another process downloading the same file, keeps its file fresh and is left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None else {names} if isinstance(names, str) else set(names)
    now = time.time()
    removed = []
    for path in sorted(folder.iterdir()):
        match = _TEMP_NAME.fullmatch(path.name)
        if match is None or (wanted is not None and match["target"] not in wanted):
            continue
        last_write = _last_write(path)
        if last_write is None or now - last_write < older_than:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _last_write(path: Path) -> float | None:
    """The newest mtime of ``path`` and, for a folder, of everything in it; None if it vanished meanwhile."""
    try:
        newest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                for name in dirs + files:
                    with contextlib.suppress(FileNotFoundError):
                        newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    except FileNotFoundError:
        return None
    return newest


def finish(handle: IO[bytes]) -> None:
    """Flush ``handle`` to disk (``fsync``) and close it: the bytes are stored before a name points at them."""
    if not handle.closed:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()


def install(part: Path, target: Path) -> Path:
    """Give the finished temporary file ``part`` the usual permissions and rename it over ``target``."""
    os.chmod(part, 0o666 & ~_UMASK)
    os.replace(part, target)
    _fsync_folder(Path(target).parent)
    return Path(target)


@contextlib.contextmanager
def atomic_write(target: Path) -> Iterator[IO[bytes]]:
    """``with atomic_write(path) as handle: ...`` writes ``path`` all or nothing (any exception: nothing)."""
    with staged_file(target, suffix=".tmp") as (handle, part):
        yield handle
        finish(handle)
        install(part, target)


def write_json(target: Path, value, indent: int = 4) -> None:
    """``value`` as JSON text in ``target`` (UTF-8, a final newline), all or nothing."""
    with atomic_write(target) as handle:
        handle.write((json.dumps(value, indent=indent) + "\n").encode("utf-8"))


def save_png(figure, target: Path) -> None:
    """A matplotlib ``figure`` as a PNG image in ``target``, all or nothing."""
    with atomic_write(target) as handle:
        figure.savefig(handle, format="png", dpi=120)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable: fsync the folder's entry (POSIX; a no-op where folders can't be opened)."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
