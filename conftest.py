"""pytest setup shared by the unit tests and the notebook checks (nbval).

- Notebook items run in smoke size: ``LLMSCRATCH_SMOKE=1`` is in the environment the nbval kernel inherits.
- ``cuda`` tests are skipped without a GPU; ``LLMSCRATCH_REQUIRE_CUDA=1`` turns that skip into a failure.
- The ``device`` fixture runs a test on the CPU and, when there is one, on CUDA.
- A notebook cell tagged ``cpu-only-output`` (beside nbval's ``nbval-check-output``) holds the book's CPU numbers:
  its output is compared only when the notebooks run on the CPU (``get_device()``), not on a GPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "shared"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))  # notebook_conventions, shared with the tests


# Thread pools that torch, numpy and tokenizers start, one per process unless told otherwise.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one thread per worker, and for the notebook kernels it starts (they copy this
    environment). Two workers with one thread each fill a 2-core machine; with a thread pool of 2 each, 4 busy
    OpenMP threads share 2 cores, and a thread that waits at a barrier for a descheduled sibling spins instead of
    working: some tests ran 100x slower (see tests/conftest.py, ``one_thread``)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in THREAD_VARIABLES:
            os.environ[name] = "1"
        import torch

        torch.set_num_threads(1)


def _is_notebook_item(item: pytest.Item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _require_cuda() -> bool:
    from llmscratch.settings import Settings

    return Settings.from_env().require_cuda  # the course's one reader of LLMSCRATCH_* variables


def _notebook_device_type() -> str:
    from llmscratch.settings import resolve_device

    return resolve_device().type  # what the notebooks' get_device() picks in this environment


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from notebook_conventions import output_is_checked_on

    device_type = None
    for item in items:
        if _is_notebook_item(item) and item.options.get("check"):
            device_type = device_type or _notebook_device_type()
            item.options["check"] = output_is_checked_on(item.cell.metadata.get("tags", []), device_type)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _is_notebook_item(item):
        # The kernel starts with the notebook's first cell and copies this environment.
        os.environ["LLMSCRATCH_SMOKE"] = "1"
        return
    if item.get_closest_marker("cuda") is not None and not _cuda_available():
        if _require_cuda():
            pytest.fail("LLMSCRATCH_REQUIRE_CUDA=1 but no CUDA GPU is available", pytrace=False)
        pytest.skip("needs a CUDA GPU")


def pytest_runtest_teardown(item: pytest.Item) -> None:
    if _is_notebook_item(item):
        os.environ.pop("LLMSCRATCH_SMOKE", None)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    """Run a test on the CPU and on CUDA (the CUDA run is skipped without a GPU)."""
    import torch

    return torch.device(request.param)
