"""Chapter 6's book names beyond the package loader: ``download_and_unzip_spam_data`` (listing 6.1) under the
book's name and signature, backed by the data registry's verified fetch (offline mirror, sha256 check)."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

from llmscratch.classification_data import download_and_unzip_spam_data, load_spam_data
from llmscratch.data import DATA_FILES, DataChecksumError, DataDownloadError, sha256_of
from llmscratch.settings import get_settings
from local_http import server, zipped  # noqa: F401 (server is a fixture)

BOOK_URL = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
SPAM = DATA_FILES["sms-spam-collection"]


def mirror_file() -> Path:
    mirror = os.environ.get("LLMSCRATCH_DATA_MIRROR")
    if not mirror or not (Path(mirror) / SPAM.filename).is_file():
        pytest.skip("LLMSCRATCH_DATA_MIRROR does not hold the SMS Spam Collection (CI sets it)")
    return Path(mirror) / SPAM.filename


@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    """A fresh data folder; each test sets or unsets the mirror, then the settings are read again."""
    monkeypatch.setenv("LLMSCRATCH_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def book_paths(folder: Path) -> tuple[Path, Path, Path]:
    """The book's zip_path, extracted_path and data_file_path, inside ``folder``."""
    extracted_path = folder / "sms_spam_collection"
    return folder / "sms_spam_collection.zip", extracted_path, extracted_path / "SMSSpamCollection.tsv"


def test_the_book_signature():
    assert list(inspect.signature(download_and_unzip_spam_data).parameters) == [
        "url", "zip_path", "extracted_path", "data_file_path"]


def test_from_the_offline_mirror_same_file_and_rows_as_the_package_loader(settings_env, tmp_path, capsys):
    source = mirror_file()
    settings_env.setenv("LLMSCRATCH_DATA_MIRROR", str(source.parent))
    zip_path, extracted_path, data_file_path = book_paths(tmp_path)

    download_and_unzip_spam_data(BOOK_URL, zip_path, extracted_path, data_file_path)
    assert "copied from the offline mirror" in capsys.readouterr().out
    assert sha256_of(data_file_path) == SPAM.sha256
    assert data_file_path.read_bytes() == source.read_bytes()
    assert not zip_path.exists()
    df = load_spam_data(data_file_path)  # the book's read_csv
    assert df.equals(load_spam_data()) and len(df) == 5572
    assert df["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}
    assert [p.name for p in extracted_path.iterdir()] == [data_file_path.name]  # no staging left behind

    download_and_unzip_spam_data(BOOK_URL, zip_path, extracted_path, data_file_path)  # the book's second call
    assert "already exists. Skipping download and extraction." in capsys.readouterr().out


def test_downloads_from_the_url_and_saves_where_asked(settings_env, tmp_path, server, capsys):
    source = mirror_file()
    content = source.read_bytes()
    settings_env.delenv("LLMSCRATCH_DATA_MIRROR", raising=False)
    server.routes["/sms+spam+collection.zip"] = [(200, zipped(SPAM.zip_member, content), None)]
    zip_path, extracted_path, _ = book_paths(tmp_path)
    data_file_path = tmp_path / "elsewhere" / "spam.tsv"  # any name: the book renames the member

    download_and_unzip_spam_data(f"{server.url}/sms+spam+collection.zip", zip_path, extracted_path, data_file_path)
    assert "File downloaded and saved as" in capsys.readouterr().out
    assert data_file_path.read_bytes() == content
    assert load_spam_data(data_file_path).equals(load_spam_data(source))


def test_a_damaged_file_is_fetched_again(settings_env, tmp_path, capsys):
    source = mirror_file()
    settings_env.setenv("LLMSCRATCH_DATA_MIRROR", str(source.parent))
    zip_path, extracted_path, data_file_path = book_paths(tmp_path)
    data_file_path.parent.mkdir(parents=True)
    data_file_path.write_text("ham\ttruncated\n")

    download_and_unzip_spam_data(BOOK_URL, zip_path, extracted_path, data_file_path)
    assert "Skipping" not in capsys.readouterr().out
    assert sha256_of(data_file_path) == SPAM.sha256


def test_a_bad_url_fails_clearly_and_keeps_nothing(settings_env, tmp_path, server):
    settings_env.delenv("LLMSCRATCH_DATA_MIRROR", raising=False)
    zip_path, extracted_path, data_file_path = book_paths(tmp_path)
    bad_url = f"{server.url}/no-such-file.zip"

    with pytest.raises(DataDownloadError) as error:
        download_and_unzip_spam_data(bad_url, zip_path, extracted_path, data_file_path)
    message = str(error.value)
    assert bad_url in message and "HTTP 404" in message and "LLMSCRATCH_DATA_MIRROR" in message
    assert not data_file_path.exists() and not zip_path.exists()
    assert not any(extracted_path.iterdir())


def test_a_url_serving_another_file_fails_on_the_sha256(settings_env, tmp_path, server):
    settings_env.delenv("LLMSCRATCH_DATA_MIRROR", raising=False)
    server.routes["/other.zip"] = [(200, zipped(SPAM.zip_member, b"ham\tnot the collection\n"), None)]
    zip_path, extracted_path, data_file_path = book_paths(tmp_path)

    with pytest.raises(DataChecksumError, match="sha256 mismatch"):
        download_and_unzip_spam_data(f"{server.url}/other.zip", zip_path, extracted_path, data_file_path)
    assert not data_file_path.exists()
