"""Settings read from the environment and the device choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmscratch.settings import Settings, default_data_dir, get_device


def test_defaults():
    settings = Settings.from_env({})
    assert settings == Settings(smoke=False, device=None, data_dir=default_data_dir(),
                                data_mirror=None, require_cuda=False)
    assert default_data_dir() == Path(__file__).resolve().parent.parent / "data"


def test_values_from_env(tmp_path):
    settings = Settings.from_env({
        "LLMSCRATCH_SMOKE": "1", "LLMSCRATCH_DEVICE": "cpu", "LLMSCRATCH_DATA_DIR": str(tmp_path / "d"),
        "LLMSCRATCH_DATA_MIRROR": str(tmp_path / "m"), "LLMSCRATCH_REQUIRE_CUDA": "true",
    })
    assert settings.smoke and settings.require_cuda
    assert settings.device == "cpu"
    assert settings.data_dir == tmp_path / "d" and settings.data_mirror == tmp_path / "m"


@pytest.mark.parametrize("value", ["0", "", "no", "false"])
def test_smoke_off(value):
    assert not Settings.from_env({"LLMSCRATCH_SMOKE": value}).smoke


def test_explicit_cpu_device():
    assert get_device(Settings.from_env({"LLMSCRATCH_DEVICE": "cpu"})) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_errors_without_gpu():
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        get_device(Settings.from_env({"LLMSCRATCH_DEVICE": "cuda"}))
    with pytest.raises(RuntimeError, match="LLMSCRATCH_REQUIRE_CUDA=1"):
        get_device(Settings.from_env({"LLMSCRATCH_REQUIRE_CUDA": "1"}))


@pytest.mark.cuda
def test_cuda_is_picked_first():
    assert get_device(Settings.from_env({})).type == "cuda"
