"""Settings read from the environment and the device choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmscratch.settings import Settings, SettingsError, default_data_dir, get_device, resolve_device


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
    with pytest.raises(SettingsError, match="LLMSCRATCH_DEVICE='cuda' but PyTorch sees no CUDA GPU"):
        get_device(Settings.from_env({"LLMSCRATCH_DEVICE": "cuda"}))
    with pytest.raises(SettingsError, match="device='cuda:1' but PyTorch sees no CUDA GPU"):
        resolve_device("cuda:1", Settings.from_env({}))
    with pytest.raises(SettingsError, match="LLMSCRATCH_REQUIRE_CUDA=1"):
        get_device(Settings.from_env({"LLMSCRATCH_REQUIRE_CUDA": "1"}))


@pytest.mark.cuda
def test_cuda_is_picked_first():
    assert get_device(Settings.from_env({})).type == "cuda"


@pytest.mark.parametrize("value", ["maybe", "2", "ja", "enabled"])
def test_a_flag_that_is_not_yes_or_no_is_an_error(value):
    with pytest.raises(SettingsError, match=f"LLMSCRATCH_SMOKE={value!r} is not a yes/no value"):
        Settings.from_env({"LLMSCRATCH_SMOKE": value})
    with pytest.raises(SettingsError, match="LLMSCRATCH_REQUIRE_CUDA"):
        Settings.from_env({"LLMSCRATCH_REQUIRE_CUDA": value})


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "tpu", "vulkan"])
def test_unknown_device_is_an_error(value):
    with pytest.raises(SettingsError, match=f"LLMSCRATCH_DEVICE={value!r} is not a device"):
        Settings.from_env({"LLMSCRATCH_DEVICE": value})
    with pytest.raises(SettingsError, match=f"device={value!r} is not a device"):
        resolve_device(value, Settings.from_env({}))


def test_a_device_name_wins_over_the_environment():
    settings = Settings.from_env({"LLMSCRATCH_DEVICE": "cuda" if not torch.cuda.is_available() else "cpu"})
    assert resolve_device("cpu", settings) == torch.device("cpu")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="checks the error raised off a Mac")
def test_mps_off_a_mac_is_an_error():
    with pytest.raises(SettingsError, match="MPS is not available"):
        resolve_device("mps", Settings.from_env({}))
