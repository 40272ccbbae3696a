"""Run-time settings of the course, read once from environment variables.

Introduced in ch01_intro (setup). This module is the one reader of the ``LLMSCRATCH_*`` variables: the
notebooks (``SMOKE = get_settings().smoke`` in their parameters cell), the command line, the benchmarks and
the test configuration all ask it, so one variable changes the behaviour of the whole course:

======================= ==================================================================================
variable                meaning
======================= ==================================================================================
LLMSCRATCH_SMOKE        ``1``/``true``/``yes``/``on``: tiny configs, few steps, small subsets (what CI runs);
                        ``0``/``false``/``no``/``off`` or unset: the full run. Anything else is an error.
LLMSCRATCH_DEVICE       ``cpu``, ``cuda``, ``cuda:1``, ``mps``...; unset: cuda > mps > cpu
LLMSCRATCH_DATA_DIR     where downloads are cached (default: the repository's ``data/`` folder)
LLMSCRATCH_DATA_MIRROR  a folder holding the course's data files, used instead of the internet
LLMSCRATCH_REQUIRE_CUDA ``1``: fail (instead of skip or fall back) when no CUDA GPU is present
======================= ==================================================================================
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

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
DEVICE_TYPES = ("cpu", "cuda", "mps")  # what the course runs on


class SettingsError(ValueError):
    """A setting (environment variable or device name) that the course cannot use; the message says what to do."""


def parse_flag(name: str, value: str | None) -> bool:
    """The boolean value of the variable ``name``; unset or empty is ``False``, an unknown word an error."""
    if value is None:
        return False
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise SettingsError(
        f"{name}={value!r} is not a yes/no value: use 1, true, yes or on to turn it on, "
        f"and 0, false, no or off (or unset it) to turn it off"
    )


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
        """Read the ``LLMSCRATCH_*`` variables of ``env`` (default: ``os.environ``); bad values raise
        ``SettingsError`` naming the variable."""
        env = os.environ if env is None else env
        data_dir = env.get("LLMSCRATCH_DATA_DIR")
        mirror = env.get("LLMSCRATCH_DATA_MIRROR")
        device = env.get("LLMSCRATCH_DEVICE")
        if device and device.strip():
            check_device_name(device.strip(), "LLMSCRATCH_DEVICE")
        return cls(
            smoke=parse_flag("LLMSCRATCH_SMOKE", env.get("LLMSCRATCH_SMOKE")),
            device=device.strip() if device and device.strip() else None,
            data_dir=Path(data_dir).expanduser().resolve() if data_dir else default_data_dir(),
            data_mirror=Path(mirror).expanduser().resolve() if mirror else None,
            require_cuda=parse_flag("LLMSCRATCH_REQUIRE_CUDA", env.get("LLMSCRATCH_REQUIRE_CUDA")),
        )


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment the first time they are asked for."""
    return Settings.from_env()


def check_device_name(name: str, source: str = "device"):
    """``torch.device(name)`` for one of the course's device types, else a ``SettingsError`` naming ``source``."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise SettingsError(
            f"{source}={name!r} is not a device the course runs on: use cpu, cuda, cuda:N or mps "
            "(or leave it unset to pick cuda > mps > cpu)"
        )
    return device


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str | None = None, settings: Settings | None = None):
    """The ``torch.device`` to run on: ``name`` if given (e.g. a ``--device`` option), else ``LLMSCRATCH_DEVICE``,
    else CUDA if available, then Apple's MPS, then the CPU (introduced in ch01_intro).

    A device that this machine lacks (``cuda`` without a CUDA GPU, ``cuda:3`` on a one-GPU machine, ``mps``
    off a Mac) raises ``SettingsError`` instead of failing later inside PyTorch. With
    ``LLMSCRATCH_REQUIRE_CUDA=1`` a device other than CUDA is an error too.
    """
    import torch

    settings = settings or get_settings()
    source, name = ("device", name) if name is not None else ("LLMSCRATCH_DEVICE", settings.device)
    if name is not None:
        device = check_device_name(name, source)
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise SettingsError(f"{source}={name!r} but PyTorch sees no CUDA GPU: use cpu, or install a "
                                    "CUDA build of torch on a machine with an NVIDIA GPU")
            if device.index is not None and device.index >= count:
                raise SettingsError(f"{source}={name!r} but this machine has {count} CUDA GPU(s), "
                                    f"cuda:0 to cuda:{count - 1}")
        if device.type == "mps" and not _mps_available():
            raise SettingsError(f"{source}={name!r} but Apple's MPS is not available here: use cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif _mps_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if settings.require_cuda and device.type != "cuda":
        raise SettingsError(
            f"LLMSCRATCH_REQUIRE_CUDA=1 but the selected device is {device}. "
            "Run on a machine with a CUDA GPU or unset LLMSCRATCH_REQUIRE_CUDA."
        )
    return device


def get_device(settings: Settings | None = None):
    """The ``torch.device`` the course runs on (introduced in ch01_intro): ``resolve_device()`` without a name.

    ``LLMSCRATCH_DEVICE`` wins; otherwise CUDA if available, then Apple's MPS, then the CPU.
    """
    return resolve_device(None, settings)
