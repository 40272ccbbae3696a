"""All-or-nothing writes (llmscratch.files), used by data downloads, checkpoints and the CLI's plot, and the
cleanup of the temporary files a killed process leaves."""

from __future__ import annotations

import os
import shutil
import stat
import time

import pytest

from llmscratch.files import atomic_write, remove_stale_temp_files, staged_file, staged_folder


def test_atomic_write_replaces_the_file_with_the_usual_permissions(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as handle:
        handle.write(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until the block ends
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not the temporary file's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("interruption", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_atomic_write_interrupted_keeps_the_old_file(tmp_path, interruption):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(interruption)):
        with atomic_write(target) as handle:
            handle.write(b"half of the new")
            raise interruption
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temporary file left


def left_by_a_kill(target, suffix=".part", age=3600.0):
    """The temporary file ``staged_file`` makes for ``target``, kept as a SIGKILL leaves it (no cleanup ran)."""
    with staged_file(target, suffix) as (handle, part):
        handle.write(b"half")
        handle.flush()
        os.link(part, target.parent / "kept")
    os.replace(target.parent / "kept", part)
    old = time.time() - age
    os.utime(part, (old, old))
    return part


def test_remove_stale_temp_files_removes_ours_only(tmp_path):
    ours = [left_by_a_kill(tmp_path / "out.bin"), left_by_a_kill(tmp_path / "run.json", ".tmp")]
    with staged_folder(tmp_path / "data.txt") as stage:  # the folder pooch downloads into, left by a kill
        (stage / "download").write_bytes(b"half")
        shutil.copytree(stage, tmp_path / "kept")
    os.replace(tmp_path / "kept", stage)
    old = time.time() - 3600
    os.utime(stage / "download", (old, old))
    os.utime(stage, (old, old))
    others = [".gitignore", ".hidden.txt", ".out.bin.part", "out.bin.abcd1234.part", ".out.bin.ABCD1234.part"]
    for name in others:
        (tmp_path / name).write_bytes(b"not ours")
        os.utime(tmp_path / name, (old, old))
    assert remove_stale_temp_files(tmp_path, older_than=60) == sorted([*ours, stage])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


def test_remove_stale_temp_files_keeps_fresh_ones_and_other_targets(tmp_path):
    fresh = left_by_a_kill(tmp_path / "out.bin", age=0)  # maybe a live writer: left alone
    other = left_by_a_kill(tmp_path / "other.bin")
    stale = left_by_a_kill(tmp_path / "out.bin")
    assert remove_stale_temp_files(tmp_path, ["out.bin"]) == [stale]
    assert fresh.exists() and other.exists()
    assert remove_stale_temp_files(tmp_path, older_than=0) == sorted([fresh, other])
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_folder_with_a_fresh_file_inside_is_kept(tmp_path):
    stage = tmp_path / ".data.txt.abcd1234.part"
    stage.mkdir()
    (stage / "download").write_bytes(b"still arriving")  # written just now
    old = time.time() - 3600
    os.utime(stage, (old, old))
    assert remove_stale_temp_files(tmp_path) == []
    assert (stage / "download").exists()
