"""A lock on a run folder, so that two training runs never write the same checkpoint (ch05_pretraining, the CLI).

``with lock_run_folder(out): ...`` holds an exclusive lock on ``out/.lock`` (``fcntl.flock``; on Windows
``msvcrt.locking``) and writes this process's id in it. A second process fails at once with
:class:`RunFolderLocked`, which names the first one's process id. The operating system drops the lock when
its process ends, however it ends: a lock file left behind by a killed run (SIGKILL, power cut) blocks
nobody. On a normal exit (an error and Ctrl+C included) the file is removed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"
_WINDOWS_LOCK_OFFSET = 1024  # Windows locks byte ranges: lock one past the process id, which stays readable


class RunFolderLocked(RuntimeError):
    """Another process holds the lock of this run folder."""

    def __init__(self, folder: Path, pid: int | None):
        self.folder, self.pid = Path(folder), pid
        who = f"process id {pid}" if pid else "process id not yet written"
        super().__init__(f"{folder} is in use by another run ({who}): wait for it to end, "
                         "or pick another output folder")


@contextlib.contextmanager
def lock_run_folder(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of the existing folder ``folder`` for the ``with`` block; yield the lock file's path.

    Raises :class:`RunFolderLocked` if another process holds it, ``OSError`` if the file cannot be created
    (e.g. a read-only folder).
    """
    path = Path(folder) / LOCK_NAME
    fd = _acquire(path)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):  # removed while still locked: the next run creates a fresh one
            path.unlink()
        os.close(fd)  # releases the lock


def _acquire(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                raise RunFolderLocked(path.parent, _read_pid(fd))
            try:  # the holder may have removed the file between our open and our lock: then lock the new one
                current = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                current = False
            if current:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 32).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
