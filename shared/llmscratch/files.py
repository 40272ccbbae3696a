"""All-or-nothing file writes, shared by the data downloads, the checkpoints and the command line.

A file is written to a hidden temporary file in the same folder (``staged_file``), flushed to disk and only
then renamed over its final name (``install``, ``os.replace``: atomic on one file system). Whatever stops the
writing (an error, a wrong checksum, a full disk, Ctrl+C), the final name holds either the old file or the
new one, never half of one, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_UMASK = os.umask(0o022)  # read the umask once (os.umask can only read it by setting it)...
os.umask(_UMASK)  # ...and put it back; temporary files are 0600, installed files get the usual mode


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
