"""The book's names for its download and Ollama listings (7.2, 7.8), backed by the course's verified code."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from llmscratch.book_downloads import download_and_load_file, fetch_url, registry_entry
from llmscratch.data import DATA_FILES
from llmscratch.instruction_data import load_instruction_data
from llmscratch.judge_book import check_if_running, query_model
from llmscratch.settings import get_settings

BOOK_URL = ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/"
            "instruction-data.json")  # the address the book's 7.2 passes


@pytest.fixture
def mirror_only(tmp_path, monkeypatch):
    """The course's offline mirror and an empty data folder (no network is needed)."""
    if not get_settings().data_mirror:
        pytest.skip("needs LLMSCRATCH_DATA_MIRROR (the course's data, offline)")
    monkeypatch.setenv("LLMSCRATCH_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_download_and_load_file_is_the_books_call(mirror_only):
    file_path = mirror_only / "instruction-data.json"
    data = download_and_load_file(file_path, BOOK_URL)
    assert len(data) == 1100 and data == load_instruction_data()
    assert file_path.is_file() and registry_entry(BOOK_URL) is DATA_FILES["instruction-data"]


def test_a_damaged_cached_file_is_replaced_not_trusted(mirror_only):
    file_path = mirror_only / "instruction-data.json"
    file_path.write_text("[]", encoding="utf-8")  # the book's loader would return []
    assert len(download_and_load_file(file_path, BOOK_URL)) == 1100


def test_unknown_urls_and_names_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="(?s)not one of the course's data files.*instruction-data: https"):
        fetch_url("https://example.com/data.json", tmp_path / "data.json")
    with pytest.raises(ValueError, match="ending in instruction-data.json"):
        fetch_url(BOOK_URL, tmp_path / "my-data.json")


def test_check_if_running_finds_this_process():
    assert check_if_running(psutil.Process(os.getpid()).name())
    assert not check_if_running("no-such-process-llmscratch")


class _Ollama(BaseHTTPRequestHandler):
    """Ollama's /api/chat, streamed: one JSON object a line, the last without a message (Ollama's docs)."""

    def do_POST(self):
        self.server.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        lines = [{"message": {"role": "assistant", "content": "Hay"}, "done": False},
                 {"message": {"role": "assistant", "content": " and grass."}, "done": False},
                 {"model": "llama3", "done": True, "total_duration": 123}]
        self.send_response(200)
        self.end_headers()
        for line in lines:
            self.wfile.write((json.dumps(line) + "\n").encode())

    def log_message(self, *args):
        pass


def test_query_model_sends_the_books_request_and_joins_the_stream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ollama)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        answer = query_model("What do Llamas eat?", url=f"http://127.0.0.1:{server.server_address[1]}/api/chat")
    finally:
        server.shutdown()
        server.server_close()
    assert answer == "Hay and grass."
    (request,) = server.requests
    assert request["model"] == "llama3" and request["messages"] == [{"role": "user", "content": "What do Llamas eat?"}]
    assert request["options"] == {"seed": 123, "temperature": 0, "num_ctx": 2048}
