"""Tests of llmscratch.data: cache, mirror, download (from a local HTTP server), errors."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pooch
import pytest

from llmscratch import data
from llmscratch.data import DATA_FILES, DataChecksumError, DataDownloadError, DataFile, fetch, get_data, sha256_of
from llmscratch.settings import get_settings
from local_http import server, zipped  # noqa: F401 (server is a fixture)

CONTENT = b"I HAD always thought Jack Gisburn rather a cheap genius.\n" * 50
FAST = {"timeout": 2, "retries": 0, "progress": False, "backoff": 0.0}


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def entry(url: str, content: bytes = CONTENT, *, filename: str = "tiny.txt", member: str | None = None) -> DataFile:
    return DataFile("tiny", filename, url, sha(content), "a small test file", zip_member=member)


@pytest.fixture
def closed_url() -> str:
    """A URL on a local port nobody listens on: any attempt to use the network fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/tiny.txt"


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --- registry ----------------------------------------------------------------------------------------------


def test_registry_names_and_filenames() -> None:
    assert {name: e.filename for name, e in DATA_FILES.items()} == {
        "the-verdict": "the-verdict.txt",
        "sms-spam-collection": "SMSSpamCollection.tsv",
        "instruction-data": "instruction-data.json",
        "instruction-data-with-preference": "instruction-data-with-preference.json",
        "tinyshakespeare": "tinyshakespeare.txt",
        "alpaca-52k": "alpaca_data.json",
    }
    pinned = {name for name, e in DATA_FILES.items() if e.sha256 is not None}
    assert pinned == set(DATA_FILES) - {"alpaca-52k"}  # Alpaca's sha256 could not be taken offline
    assert all(name == e.name and len(e.sha256) == 64 for name, e in DATA_FILES.items() if name in pinned)
    assert DATA_FILES["alpaca-52k"].verify is not None and DATA_FILES["alpaca-52k"].optional
    assert not any(e.optional for name, e in DATA_FILES.items() if name != "alpaca-52k")
    assert DATA_FILES["sms-spam-collection"].zip_member == "SMSSpamCollection"


def test_registry_matches_the_mirror() -> None:
    mirror = os.environ.get("LLMSCRATCH_DATA_MIRROR")
    if not mirror:
        pytest.skip("LLMSCRATCH_DATA_MIRROR is not set (CI sets it to the offline copy of the data files)")
    for e in DATA_FILES.values():
        if e.sha256 is None:  # not pinned (Alpaca 52k, optional): the mirror need not hold it
            continue
        assert sha256_of(Path(mirror) / e.filename) == e.sha256, e.filename


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="the-verdict"):
        get_data("the-verdicts")


# --- cache and mirror --------------------------------------------------------------------------------------


def test_cached_file_is_used_without_network(tmp_path: Path, closed_url: str) -> None:
    cached = tmp_path / "tiny.txt"
    cached.write_bytes(CONTENT)
    os.utime(cached, ns=(1_000_000_000, 1_000_000_000))
    assert fetch(entry(closed_url), tmp_path, **FAST) == cached
    assert cached.stat().st_mtime_ns == 1_000_000_000


def test_cached_file_with_wrong_hash_is_replaced(tmp_path: Path, closed_url: str) -> None:
    (mirror := tmp_path / "mirror").mkdir()
    (mirror / "tiny.txt").write_bytes(CONTENT)
    (data_dir := tmp_path / "data").mkdir()
    (data_dir / "tiny.txt").write_bytes(b"stale")
    path = fetch(entry(closed_url), data_dir, mirror, **FAST)
    assert path.read_bytes() == CONTENT


def test_mirror_copy(tmp_path: Path, closed_url: str) -> None:
    (mirror := tmp_path / "mirror").mkdir()
    (mirror / "tiny.txt").write_bytes(CONTENT)
    path = fetch(entry(closed_url), tmp_path / "new" / "data", mirror, **FAST)  # data dir is created
    assert path == tmp_path / "new" / "data" / "tiny.txt"
    assert sha256_of(path) == sha(CONTENT)
    assert os.listdir(path.parent) == ["tiny.txt"]


def test_bad_mirror_file_is_an_error_and_keeps_nothing(tmp_path: Path, closed_url: str) -> None:
    (mirror := tmp_path / "mirror").mkdir()
    (mirror / "tiny.txt").write_bytes(b"not the file")
    data_dir = tmp_path / "data"
    with pytest.raises(DataChecksumError) as info:
        fetch(entry(closed_url), data_dir, mirror, **FAST)
    message = str(info.value)
    assert str(mirror / "tiny.txt") in message and sha(CONTENT) in message and sha(b"not the file") in message
    assert os.listdir(data_dir) == []


def test_missing_mirror_folder_is_an_error_at_once(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/tiny.txt"] = [(200, CONTENT, None)]
    with pytest.raises(DataDownloadError, match="LLMSCRATCH_DATA_MIRROR .*does not exist"):
        fetch(entry(server.url + "/tiny.txt"), tmp_path / "data", tmp_path / "no-such-mirror", **FAST)
    assert server.requests == []  # no download hides the misconfiguration
    assert os.listdir(tmp_path / "data") == []


def test_mirror_folder_in_place_of_the_file_is_an_error(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/tiny.txt"] = [(200, CONTENT, None)]
    (tmp_path / "mirror" / "tiny.txt").mkdir(parents=True)
    with pytest.raises(DataDownloadError, match="not a file") as info:
        fetch(entry(server.url + "/tiny.txt"), tmp_path / "data", tmp_path / "mirror", **FAST)
    assert str(tmp_path / "mirror" / "tiny.txt") in str(info.value)
    assert server.requests == []


def test_unreadable_mirror_file_is_an_error(tmp_path: Path, server: ThreadingHTTPServer, monkeypatch) -> None:
    (mirror := tmp_path / "mirror").mkdir()
    (mirror / "tiny.txt").write_bytes(CONTENT)
    real_open = Path.open

    def no_permission(self: Path, *args, **kwargs):  # chmod 000 does not stop root, who may run the tests
        if self == mirror / "tiny.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", no_permission)
    with pytest.raises(DataDownloadError, match="Cannot read the mirror file .*Permission denied"):
        fetch(entry(server.url + "/tiny.txt"), tmp_path / "data", mirror, **FAST)
    assert server.requests == [] and os.listdir(tmp_path / "data") == []


def test_mirror_without_the_file_falls_through_to_the_download(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/tiny.txt"] = [(200, CONTENT, None)]
    (mirror := tmp_path / "mirror").mkdir()
    path = fetch(entry(server.url + "/tiny.txt"), tmp_path / "data", mirror, **FAST)
    assert path.read_bytes() == CONTENT and len(server.requests) == 1


def test_offline_with_a_mirror_that_lacks_the_file_says_so(tmp_path: Path, closed_url: str) -> None:
    (mirror := tmp_path / "mirror").mkdir()
    with pytest.raises(DataDownloadError, match="lacks it") as info:
        fetch(entry(closed_url), tmp_path / "data", mirror, **FAST)
    assert str(mirror) in str(info.value) and "LLMSCRATCH_DATA_MIRROR" in str(info.value)


def test_stale_staging_files_are_removed_before_fetching(tmp_path: Path, closed_url: str) -> None:
    (mirror := tmp_path / "mirror").mkdir()
    (mirror / "tiny.txt").write_bytes(CONTENT)
    (data_dir := tmp_path / "data").mkdir()
    stale, fresh, other = data_dir / ".tiny.txt.k3j9x_2a.part", data_dir / ".tiny.txt.p0q1r2s3.part", data_dir / ".x"
    for path in (stale, fresh, other):
        path.write_bytes(b"left by a killed download")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    fetch(entry(closed_url), data_dir, mirror, **FAST)
    assert sorted(os.listdir(data_dir)) == sorted([fresh.name, other.name, "tiny.txt"])  # a fresh one may be live


# --- download ----------------------------------------------------------------------------------------------


def test_download(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/tiny.txt"] = [(200, CONTENT, None)]
    path = fetch(entry(server.url + "/tiny.txt"), tmp_path, **FAST)
    assert path.read_bytes() == CONTENT
    assert os.listdir(tmp_path) == ["tiny.txt"]
    assert "llmscratch" in server.requests[0][1]  # User-Agent


def test_download_zip_member(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/spam.zip"] = [(200, zipped("SMSSpamCollection", CONTENT), None)]
    e = entry(server.url + "/spam.zip", filename="spam.tsv", member="SMSSpamCollection")
    path = fetch(e, tmp_path, **FAST)
    assert path.read_bytes() == CONTENT
    assert os.listdir(tmp_path) == ["spam.tsv"]  # neither the zip nor a .part is left


def test_zip_without_member_keeps_nothing(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/spam.zip"] = [(200, zipped("other", CONTENT), None)]
    e = entry(server.url + "/spam.zip", filename="spam.tsv", member="SMSSpamCollection")
    with pytest.raises(DataDownloadError, match="SMSSpamCollection"):
        fetch(e, tmp_path, **FAST)
    assert os.listdir(tmp_path) == []


def test_truncated_download_keeps_nothing(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/tiny.txt"] = [(200, CONTENT[: len(CONTENT) // 2], len(CONTENT))]
    with pytest.raises(DataDownloadError, match="2 attempt"):
        fetch(entry(server.url + "/tiny.txt"), tmp_path, **{**FAST, "retries": 1})
    assert len(server.requests) == 2
    assert os.listdir(tmp_path) == []


def test_wrong_bytes_raise_checksum_error(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/tiny.txt"] = [(200, b"something else entirely", None)]
    with pytest.raises(DataChecksumError, match="Nothing was kept") as info:
        fetch(entry(server.url + "/tiny.txt"), tmp_path, **FAST)
    assert sha(CONTENT) in str(info.value) and sha(b"something else entirely") in str(info.value)
    assert os.listdir(tmp_path) == []


def test_offline_without_mirror_says_what_to_do(tmp_path: Path, closed_url: str) -> None:
    with pytest.raises(DataDownloadError) as info:
        fetch(entry(closed_url), tmp_path, **{**FAST, "retries": 1})
    assert not isinstance(info.value, DataChecksumError)
    message = str(info.value)
    assert "LLMSCRATCH_DATA_MIRROR" in message and closed_url in message and str(tmp_path / "tiny.txt") in message
    assert os.listdir(tmp_path) == []


def test_a_failed_download_prints_no_empty_progress_bar(tmp_path: Path, closed_url: str, capsys) -> None:
    with pytest.raises(DataDownloadError):
        fetch(entry(closed_url), tmp_path, **{**FAST, "retries": 2, "progress": True})
    assert capsys.readouterr().err == ""  # was "tiny.txt: 0.00B [00:00, ?B/s]" once per attempt


def test_a_slow_download_shows_its_progress_bar(tmp_path: Path, server: ThreadingHTTPServer, capsys,
                                                 monkeypatch) -> None:
    monkeypatch.setattr(data, "PROGRESS_DELAY_S", 0.0)  # as if the transfer had outlasted the delay
    server.routes["/tiny.txt"] = [(200, CONTENT, None)]
    fetch(entry(server.url + "/tiny.txt"), tmp_path, **{**FAST, "progress": True})
    assert "tiny.txt" in capsys.readouterr().err


def test_retry_after_503(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    server.routes["/tiny.txt"] = [(503, b"busy", None), (200, CONTENT, None)]
    path = fetch(entry(server.url + "/tiny.txt"), tmp_path, **{**FAST, "retries": 2})
    assert path.read_bytes() == CONTENT
    assert len(server.requests) == 2


def test_404_is_not_retried(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    with pytest.raises(DataDownloadError, match="HTTP 404"):
        fetch(entry(server.url + "/missing.txt"), tmp_path, **{**FAST, "retries": 3})
    assert len(server.requests) == 1


def test_downloads_go_through_pooch(tmp_path: Path, server: ThreadingHTTPServer, monkeypatch) -> None:
    downloads, retrieves = [], []
    http_call, retrieve = pooch.HTTPDownloader.__call__, pooch.retrieve

    def counting_call(self, url, output_file, pooch_instance, check_only=False):
        downloads.append(url)
        return http_call(self, url, output_file, pooch_instance, check_only)

    def counting_retrieve(url, *args, **kwargs):
        retrieves.append(kwargs.get("path"))
        return retrieve(url, *args, **kwargs)

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", counting_call)
    monkeypatch.setattr(pooch, "retrieve", counting_retrieve)
    server.routes["/tiny.txt"] = [(503, b"busy", None), (200, CONTENT, None)]
    path = fetch(entry(server.url + "/tiny.txt"), tmp_path, **{**FAST, "retries": 1})
    assert path.read_bytes() == CONTENT
    assert downloads == [server.url + "/tiny.txt"] * 2 == [server.url + p for p, _ in server.requests]
    assert len(retrieves) == 2 and all(Path(stage).parent == tmp_path for stage in retrieves)  # staged in data_dir
    assert os.listdir(tmp_path) == ["tiny.txt"]  # and the staging folder is gone


def test_pooch_info_lines_are_muted(tmp_path: Path, server: ThreadingHTTPServer) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = pooch.get_logger()
    level = logger.level
    logger.addHandler(handler)
    try:
        server.routes["/tiny.txt"] = [(200, CONTENT, None)]
        fetch(entry(server.url + "/tiny.txt"), tmp_path, **FAST)
    finally:
        logger.removeHandler(handler)
    assert records == []  # pooch's INFO lines would name our staging folder and suggest a known_hash
    assert logger.level == level  # and pooch's level is put back


# --- get_data and main read the settings -------------------------------------------------------------------


def test_get_data_uses_settings(tmp_path: Path, closed_url: str, monkeypatch, fresh_settings) -> None:
    (mirror := tmp_path / "mirror").mkdir()
    (mirror / "tiny.txt").write_bytes(CONTENT)
    monkeypatch.setitem(DATA_FILES, "tiny", entry(closed_url))
    monkeypatch.setenv("LLMSCRATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLMSCRATCH_DATA_MIRROR", str(mirror))
    assert get_data("tiny") == tmp_path / "data" / "tiny.txt"
    assert (tmp_path / "data" / "tiny.txt").read_bytes() == CONTENT


def test_main_prints_one_line_per_file(tmp_path: Path, closed_url: str, monkeypatch, fresh_settings, capsys) -> None:
    (mirror := tmp_path / "mirror").mkdir()
    (mirror / "tiny.txt").write_bytes(CONTENT)
    monkeypatch.setattr(data, "DATA_FILES", {"tiny": entry(closed_url)})
    monkeypatch.setenv("LLMSCRATCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LLMSCRATCH_DATA_MIRROR", str(mirror))
    monkeypatch.chdir(tmp_path)
    data.main()
    assert capsys.readouterr().out.split() == ["tiny", os.path.join("data", "tiny.txt")]


def test_main_raises_one_error_naming_the_failed_files(monkeypatch, capsys, tmp_path: Path) -> None:
    def fake_get_data(name: str) -> Path:
        if name == "bad":
            raise DataDownloadError("offline")
        return tmp_path / f"{name}.txt"

    entry = DATA_FILES["the-verdict"]  # any entry: get_data is faked
    monkeypatch.setattr(data, "DATA_FILES", {"good": entry, "bad": entry})
    monkeypatch.setattr(data, "get_data", fake_get_data)
    with pytest.raises(DataDownloadError, match=r"^1 of 2 data files could not be fetched: bad$"):
        data.main()
    out, err = capsys.readouterr()
    assert out.split() == ["good", str(tmp_path / "good.txt")]
    assert err == "bad: FAILED: offline\n"


def test_download_all_skips_the_optional_files(monkeypatch, capsys) -> None:
    """``python -m llmscratch download`` with no names leaves Alpaca 52k (22 MB, exercise 7.3) until it is named."""
    import llmscratch.data as data

    fetched = []
    monkeypatch.setattr(data, "get_data", lambda name: fetched.append(name) or Path(name))
    data.main()
    assert fetched == [name for name in DATA_FILES if name != "alpaca-52k"]
    data.main(["alpaca-52k"])
    assert fetched[-1] == "alpaca-52k"
