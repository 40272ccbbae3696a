"""The command line, run as a reader would: ``python -m llmscratch ...`` in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "llmscratch", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.fixture
def mirror() -> str:
    path = os.environ.get("LLMSCRATCH_DATA_MIRROR")
    if not path:
        pytest.skip("LLMSCRATCH_DATA_MIRROR is not set (CI sets it to ../shared/data)")
    return path


def test_download_from_mirror(tmp_path, mirror):
    result = run_cli("download", "the-verdict", cwd=tmp_path,
                     env_extra={"LLMSCRATCH_DATA_DIR": str(tmp_path / "data"), "LLMSCRATCH_DATA_MIRROR": mirror})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["the-verdict", os.path.join("data", "the-verdict.txt")]
    assert (tmp_path / "data" / "the-verdict.txt").stat().st_size == 20_479
    assert "Warning" not in result.stderr


def test_unknown_name_is_a_one_line_error(tmp_path):
    result = run_cli("download", "the-verdikt", cwd=tmp_path, env_extra={"LLMSCRATCH_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Unknown data file 'the-verdikt'. Known names: "
        "instruction-data, sms-spam-collection, the-verdict, tinyshakespeare."]
    assert "Traceback" not in result.stderr


def test_help_lists_commands(tmp_path):
    result = run_cli("--help", cwd=tmp_path, env_extra={})
    assert result.returncode == 0 and "download" in result.stdout
