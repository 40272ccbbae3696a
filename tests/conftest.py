"""Fixtures shared by the test modules."""

from __future__ import annotations

import signal

import pytest
import torch


@pytest.fixture(autouse=True)
def signal_handlers_kept():
    """Give back SIGTERM's and SIGINT's handlers after each test. ``pretrain`` under torchrun ignores SIGTERM once it
    is on its way out with an error (llmscratch.distributed.stop_on_sigterm): right for a worker process, but a
    test that calls ``cli.main`` in-process would leave this pytest process ignoring SIGTERM, and every process it
    starts later inherits that (a ``terminate()``-d app server then never stopped: a CI run hung on it)."""
    kept = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in kept.items():
        if signal.getsignal(number) is not handler:
            signal.signal(number, handler)


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
