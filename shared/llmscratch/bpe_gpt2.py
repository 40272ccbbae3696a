"""Reading GPT-2's tokenizer files (``encoder.json`` and ``vocab.bpe``) for :class:`llmscratch.bpe.BPETokenizer`.

Introduced in ch02_text_data (beyond the book: BPE from scratch). GPT-2 stores tokens as printable strings:
each byte is shown as one Unicode character (``bytes_to_unicode``), so a space is ``Ġ`` and a newline ``Ċ``.
``encoder.json`` maps those strings to ids, and ``vocab.bpe`` lists the 50,000 merges in the order they were
learned: merge number ``k`` (from 0) created the token with id ``256 + k``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

GPT2_ENCODER_JSON_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"
GPT2_VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
GPT2_ENDOFTEXT_ID = 50256


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte (0-255) to a printable Unicode character.

    Introduced in ch02_text_data (beyond the book: BPE from scratch). Printable Latin-1 bytes map to
    themselves; the other 68 bytes (control characters, space...) map to ``chr(256 + n)`` in order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


def load_gpt2_vocab_and_merges(
    encoder_json_path: str | Path, vocab_bpe_path: str | Path
) -> tuple[dict[int, bytes], dict[tuple[int, int], int], dict[str, int]]:
    """Read GPT-2's files into ``(vocab, merges, special_tokens)`` as :class:`BPETokenizer` stores them.

    Introduced in ch02_text_data (beyond the book: BPE from scratch). Checks that the two files agree:
    the 256 single bytes are ids 0-255 and merge number ``k`` of ``vocab.bpe`` is id ``256 + k``.
    """
    byte_decoder = {char: b for b, char in bytes_to_unicode().items()}
    encoder: dict[str, int] = json.loads(Path(encoder_json_path).read_text(encoding="utf-8"))
    if encoder.get("<|endoftext|>") != GPT2_ENDOFTEXT_ID:
        raise ValueError(f"{encoder_json_path} does not look like GPT-2's encoder.json: "
                         f"'<|endoftext|>' should have id {GPT2_ENDOFTEXT_ID}")
    specials = {"<|endoftext|>": encoder.pop("<|endoftext|>")}
    try:
        vocab = {i: bytes(byte_decoder[char] for char in token) for token, i in encoder.items()}
    except KeyError as err:
        raise ValueError(f"{encoder_json_path} has a character outside GPT-2's byte map: {err.args[0]!r}") from None
    if {vocab.get(b) for b in range(256)} != {bytes([b]) for b in range(256)}:
        raise ValueError(f"{encoder_json_path}: ids 0-255 should be the 256 single bytes")

    lines = Path(vocab_bpe_path).read_text(encoding="utf-8").split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError(f"{vocab_bpe_path} does not look like GPT-2's vocab.bpe (no '#version' first line)")
    merges: dict[tuple[int, int], int] = {}
    for rank, line in enumerate(line for line in lines[1:] if line):
        first, second = line.split(" ")
        new_id = encoder.get(first + second)
        if new_id != 256 + rank:
            raise ValueError(f"vocab.bpe merge {rank} ({line!r}) should create id {256 + rank} in encoder.json, "
                             f"found {new_id}: the two files do not belong together")
        merges[(encoder[first], encoder[second])] = new_id
    vocab[GPT2_ENDOFTEXT_ID] = b"<|endoftext|>"
    return vocab, merges, specials


def tiktoken_cache_dir() -> Path:
    """The folder where tiktoken caches downloads, as tiktoken itself chooses it.

    Introduced in ch02_text_data (beyond the book: BPE from scratch). ``TIKTOKEN_CACHE_DIR``, else
    ``DATA_GYM_CACHE_DIR``, else ``<temp dir>/data-gym-cache``.
    """
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def find_gpt2_files(cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe`` inside tiktoken's cache (named by sha1 of URL).

    Introduced in ch02_text_data (beyond the book: BPE from scratch). Raises ``FileNotFoundError`` with
    what to do when they are missing.
    """
    folder = Path(cache_dir) if cache_dir is not None else tiktoken_cache_dir()
    paths = tuple(folder / hashlib.sha1(url.encode()).hexdigest()
                  for url in (GPT2_ENCODER_JSON_URL, GPT2_VOCAB_BPE_URL))
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"GPT-2's tokenizer files are not in tiktoken's cache folder {folder} (missing {missing}). "
            "Run tiktoken.get_encoding('gpt2') once with internet access, or set TIKTOKEN_CACHE_DIR to a "
            "folder that holds them."
        )
    return paths[0], paths[1]
