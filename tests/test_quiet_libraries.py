"""Libraries' chatter stays out of the notebooks: our one error message says what happened and what to do."""

from __future__ import annotations

import logging

import huggingface_hub
import pytest
from huggingface_hub.utils import LocalEntryNotFoundError

from llmscratch.gpt2_download import GPT2DownloadError, download_gpt2


def test_huggingface_hub_retry_warnings_are_muted_during_a_download(monkeypatch, tmp_path, caplog):
    """huggingface_hub 1.x+ logs 'Retrying in 1s [Retry 1/5].' for every retry of a failed request: 11 stderr lines
    in a stored notebook output (ch07, offline). The download mutes them; its GPT2DownloadError remains."""
    def fake_download(*, filename, local_files_only, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    level = logging.getLogger("huggingface_hub").level
    with caplog.at_level(logging.DEBUG), pytest.raises(GPT2DownloadError, match="check the internet connection"):
        download_gpt2("124M", cache_dir=tmp_path)
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub")]
    assert logging.getLogger("huggingface_hub").level == level  # restored afterwards
