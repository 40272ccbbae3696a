"""All-or-nothing writes (llmscratch.files), used by data downloads, checkpoints and the CLI's plot."""

from __future__ import annotations

import os
import stat

import pytest

from llmscratch.files import atomic_write


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
