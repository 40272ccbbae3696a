"""Run-time settings of the course, read once from environment variables.

Introduced in ch01_intro (setup). Every notebook and script reads its settings from here, so one variable
changes the behaviour of the whole course:

====================== ===================================================================================
variable               meaning
====================== ===================================================================================
LLMSCRATCH_SMOKE       ``1``: tiny configs, few steps, small subsets (what CI runs); anything else: full run
LLMSCRATCH_DEVICE      ``cpu``, ``cuda``, ``cuda:1``, ``mps``...; unset: cuda > mps > cpu
LLMSCRATCH_DATA_DIR    where downloads are cached (default: the repository's ``data/`` folder)
LLMSCRATCH_DATA_MIRROR a folder holding the course's data files, used instead of the internet
LLMSCRATCH_REQUIRE_CUDA ``1``: fail (instead of skip or fall back) when no CUDA GPU is present
====================== ===================================================================================
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# shared/llmscratch -> shared -> repository root (only meaningful in a clone or an editable install)
REPO_ROOT = PACKAGE_DIR.parent.parent

_TRUE = {"1", "true", "yes", "on"}


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def default_data_dir() -> Path:
    """The repository's ``data/`` folder in a clone, else ``~/.cache/llmscratch``."""
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / "data"
    return Path.home() / ".cache" / "llmscratch"


@dataclass(frozen=True)
class Settings:
    """The course's settings (introduced in ch01_intro). Build with :meth:`from_env`."""

    smoke: bool = False  # tiny configs and few steps, for CI and quick checks
    device: str | None = None  # None: pick cuda > mps > cpu at run time
    data_dir: Path = Path("data")  # download cache
    data_mirror: Path | None = None  # offline mirror of the course's data files
    require_cuda: bool = False  # a missing GPU is an error, not a skip

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = env.get("LLMSCRATCH_DATA_DIR")
        mirror = env.get("LLMSCRATCH_DATA_MIRROR")
        device = env.get("LLMSCRATCH_DEVICE")
        return cls(
            smoke=_flag(env.get("LLMSCRATCH_SMOKE")),
            device=device.strip() if device and device.strip() else None,
            data_dir=Path(data_dir).expanduser().resolve() if data_dir else default_data_dir(),
            data_mirror=Path(mirror).expanduser().resolve() if mirror else None,
            require_cuda=_flag(env.get("LLMSCRATCH_REQUIRE_CUDA")),
        )


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment the first time they are asked for."""
    return Settings.from_env()


def get_device(settings: Settings | None = None):
    """The ``torch.device`` the course runs on (introduced in ch01_intro).

    ``LLMSCRATCH_DEVICE`` wins; otherwise CUDA if available, then Apple's MPS, then the CPU. With
    ``LLMSCRATCH_REQUIRE_CUDA=1`` a machine without CUDA raises instead of falling back.
    """
    import torch

    settings = settings or get_settings()
    if settings.device is not None:
        device = torch.device(settings.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"LLMSCRATCH_DEVICE={settings.device!r} but PyTorch sees no CUDA GPU. "
                "Unset LLMSCRATCH_DEVICE to fall back to the CPU, or install a CUDA build of torch."
            )
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if settings.require_cuda and device.type != "cuda":
        raise RuntimeError(
            f"LLMSCRATCH_REQUIRE_CUDA=1 but the selected device is {device}. "
            "Run on a machine with a CUDA GPU or unset LLMSCRATCH_REQUIRE_CUDA."
        )
    return device
