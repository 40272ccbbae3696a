"""The run-folder lock of the command line (llmscratch.run_lock): one run per folder, never blocked by the dead."""

from __future__ import annotations

import os
import signal

import pytest

from llmscratch.run_lock import LOCK_NAME, RunFolderLocked, lock_run_folder


def test_lock_holds_the_pid_and_is_removed_on_exit(tmp_path):
    with lock_run_folder(tmp_path) as path:
        assert path == tmp_path / LOCK_NAME
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


def test_second_holder_fails_at_once_naming_the_first(tmp_path):
    with lock_run_folder(tmp_path):
        with pytest.raises(RunFolderLocked, match=f"process id {os.getpid()}") as caught:
            with lock_run_folder(tmp_path):
                pass
        assert caught.value.pid == os.getpid()
        assert (tmp_path / LOCK_NAME).is_file()  # the failed attempt left the holder's file alone
    with lock_run_folder(tmp_path):  # free again once released
        pass


def test_lock_is_released_on_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with lock_run_folder(tmp_path):
            raise KeyboardInterrupt
    assert not (tmp_path / LOCK_NAME).exists()
    with lock_run_folder(tmp_path):
        pass


def test_file_left_by_a_dead_process_does_not_block(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999999\n")  # a run killed with SIGKILL leaves its file
    with lock_run_folder(tmp_path) as path:
        assert path.read_text() == f"{os.getpid()}\n"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_lock_of_a_killed_process_is_free(tmp_path):
    """A child holds the lock; the parent is refused with the child's pid; SIGKILL the child: the lock is free."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the lock, say so, wait to be killed
        try:
            os.close(ready_r)
            with lock_run_folder(tmp_path):
                os.write(ready_w, b"x")
                signal.pause()
        finally:
            os._exit(1)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"x"
        with pytest.raises(RunFolderLocked, match=f"process id {pid}"):
            with lock_run_folder(tmp_path):
                pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
    assert (tmp_path / LOCK_NAME).read_text() == f"{pid}\n"  # left behind by the killed run...
    with lock_run_folder(tmp_path):  # ...and blocking nobody
        pass


def test_folder_that_cannot_hold_the_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        with lock_run_folder(tmp_path / "missing"):
            pass
