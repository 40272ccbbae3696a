"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread(request):
    """Run on one CPU thread: as fast for the tiny models of the unit tests, and immune to stalls of torch's
    thread pool when other processes load the machine (2 threads on a busy 2-core CPU made some tests 100x
    slower). Tests marked ``slow`` (GPT-2 sized work) keep every thread. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    """GPT-2's BPE tokenizer (tiktoken; offline with TIKTOKEN_CACHE_DIR)."""
    import tiktoken

    return tiktoken.get_encoding("gpt2")
