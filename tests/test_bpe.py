"""Tests of the from-scratch byte-level BPE tokenizer (llmscratch.bpe, ch02_text_data, beyond the book).

GPT-2 exactness tests compare with ``tiktoken.get_encoding("gpt2")`` and read GPT-2's files from tiktoken's
cache (``TIKTOKEN_CACHE_DIR``); corpus tests read the course texts through ``LLMSCRATCH_DATA_MIRROR``.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from llmscratch.bpe import ENDOFTEXT, BPETokenizer, count_pairs, merge_pair, most_frequent_pair
from llmscratch.bpe_gpt2 import bytes_to_unicode, find_gpt2_files

EDGE_CASES = [
    "",
    "Hello, world!",
    " leading space",
    "   multiple   spaces   inside",
    "trailing spaces   ",
    " ",
    "line one\nline two\n",
    "\n\n\n",
    "a\n\n\nb",
    "\ttabs\tand\t\ttabs\t",
    " \t \n mixed \r\n whitespace",
    "12345 678 9",
    "!!!???... ---",
    "Ação, coração, pão e maçã — você já viu?",
    "🙂🚀👍🏽",
    "'s 'll 've 're 'd 'm 't",
    "It's what we'll do, we've said, they're sure.",
    "你好，世界",
    "tokenization     \n    indentation\n\tdef f(x):\n\t\treturn x",
]

# One pre-token each, 16,000 characters long: encoding must stay fast (no quadratic merge loop) and exact.
LONG_PRE_TOKENS = {
    "letter a": "a" * 16_000,
    "two-byte é": "é" * 16_000,
    "four-byte emoji": "🙂" * 16_000,
    "spaces": " " * 16_000,
    "digits": "1234567890" * 1_600,
    "one digit": "7" * 16_000,
}
GENEROUS_SECONDS = 2.0  # about 0.3 s on a 2-core machine; the old quadratic loop took 10 s and more


# ----------------------------------------------------------------------------------------------- fixtures
def read_corpus(name: str) -> str:
    if not os.environ.get("LLMSCRATCH_DATA_MIRROR"):
        pytest.skip("LLMSCRATCH_DATA_MIRROR is not set: point it at a folder holding the course's data files")
    from llmscratch import get_data

    return get_data(name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def gpt2() -> BPETokenizer:
    try:
        encoder_json, vocab_bpe = find_gpt2_files()
    except FileNotFoundError as err:
        pytest.skip(f"GPT-2's tokenizer files are not available: {err}")
    return BPETokenizer.from_gpt2(encoder_json, vocab_bpe)


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    tiktoken = pytest.importorskip("tiktoken")
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # no cache and no internet
        pytest.skip(f"tiktoken cannot load 'gpt2' (set TIKTOKEN_CACHE_DIR to its cache folder): {err}")


@pytest.fixture(scope="module")
def verdict_tokenizer() -> BPETokenizer:
    tokenizer = BPETokenizer()
    tokenizer.train(read_corpus("the-verdict"), vocab_size=500)
    return tokenizer


# ------------------------------------------------------------------------------------ GPT-2 exactness
@pytest.mark.parametrize("text", EDGE_CASES)
def test_gpt2_matches_tiktoken_on_edge_cases(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode(text) == tiktoken_gpt2.encode(text)
    assert gpt2.decode(gpt2.encode(text)) == text


def test_gpt2_matches_tiktoken_with_endoftext(gpt2, tiktoken_gpt2):
    text = "First document.<|endoftext|>Second one<|endoftext|><|endoftext|> ends here"
    ids = gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert ids == tiktoken_gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert ids.count(50256) == 3
    assert gpt2.decode(ids) == text


def test_gpt2_matches_tiktoken_on_the_verdict(gpt2, tiktoken_gpt2):
    text = read_corpus("the-verdict")
    ids = gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert ids == tiktoken_gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert len(ids) == 5145
    assert gpt2.decode(ids) == text


@pytest.mark.slow
def test_gpt2_matches_tiktoken_on_all_of_tiny_shakespeare(gpt2, tiktoken_gpt2):
    text = read_corpus("tinyshakespeare")
    ids = gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert ids == tiktoken_gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert gpt2.decode(ids) == text


@pytest.mark.parametrize("name", LONG_PRE_TOKENS)
def test_gpt2_is_fast_and_exact_on_a_long_pre_token(gpt2, tiktoken_gpt2, name):
    text = LONG_PRE_TOKENS[name]
    start = time.perf_counter()
    ids = gpt2.encode(text)
    seconds = time.perf_counter() - start
    assert ids == tiktoken_gpt2.encode(text)
    assert seconds < GENEROUS_SECONDS, f"{name}: {seconds:.2f} s for 16,000 characters"


def naive_bpe(ranks: dict[bytes, int], piece: bytes) -> tuple[int, ...]:
    """The textbook O(n^2) encoding of one pre-token: rescan all pairs, merge the lowest rank (leftmost)."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    while True:
        candidates = [(ranks[a + b], i) for i, (a, b) in enumerate(zip(parts, parts[1:])) if a + b in ranks]
        if not candidates:
            return tuple(ranks[part] for part in parts)
        _, i = min(candidates)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


@pytest.mark.parametrize("tokenizer_name", ["gpt2", "verdict_tokenizer"])
def test_heap_encoding_equals_the_naive_merge_loop(tokenizer_name, request):
    tokenizer = request.getfixturevalue(tokenizer_name)
    ranks = {token: i for i, token in sorted(tokenizer.vocab.items(), reverse=True)  # lowest id wins
             if i not in tokenizer.special_tokens.values()}
    rng = random.Random(0)
    alphabets = ["ab", "aab ", "the", "é a", "🙂a", "01", "ção", " \n"]
    for _ in range(200):
        alphabet = rng.choice(alphabets)
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))).encode("utf-8")
        assert tokenizer._bpe(piece) == naive_bpe(ranks, piece), piece


def test_the_books_names_load_gpt2_into_the_tokenizer(tiktoken_gpt2, verdict_tokenizer):
    try:
        encoder_json, vocab_bpe = find_gpt2_files()
    except FileNotFoundError as err:
        pytest.skip(f"GPT-2's tokenizer files are not available: {err}")
    tokenizer = BPETokenizer()
    tokenizer.train(read_corpus("the-verdict"), vocab_size=300)
    tokenizer.encode("This is some text")  # fills the cache, which loading must empty
    assert tokenizer.load_vocab_and_merges_from_openai(vocab_path=encoder_json, bpe_merges_path=vocab_bpe) is None
    assert tokenizer.vocab_size == 50257 and len(tokenizer.bpe_merges) == 50000
    assert tokenizer.bpe_merges is tokenizer.merges
    assert tokenizer.encode("This is some text") == [1212, 318, 617, 2420]  # the book's own test
    text = "Ação, coração! It's 2024...   we'll see 🙂<|endoftext|>"
    ids = tokenizer.encode(text, allowed_special={ENDOFTEXT})
    assert ids == tiktoken_gpt2.encode(text, allowed_special={ENDOFTEXT})
    assert verdict_tokenizer.bpe_merges == verdict_tokenizer.merges


def test_gpt2_vocabulary_shape(gpt2):
    assert gpt2.vocab_size == 50257
    assert len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {ENDOFTEXT: 50256}
    assert gpt2.vocab[50256] == b"<|endoftext|>"
    assert gpt2.encode(" the") == [262] and gpt2.vocab[262] == b" the"
    first_pair = next(iter(gpt2.merges))  # vocab.bpe's first merge: "Ġ t" -> " t"
    assert gpt2.vocab[first_pair[0]] + gpt2.vocab[first_pair[1]] == b" t" == gpt2.vocab[256]


def test_gpt2_refuses_a_disallowed_special_token(gpt2):
    with pytest.raises(ValueError, match=r"<\|endoftext\|>.*allowed_special"):
        gpt2.encode("end of story<|endoftext|>")


def test_bytes_to_unicode_is_gpt2s_map():
    mapping = bytes_to_unicode()
    assert sorted(mapping) == list(range(256)) and len(set(mapping.values())) == 256
    assert mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ" and mapping[ord("a")] == "a"


# ------------------------------------------------------------------------------------------- helpers
def test_count_pairs_is_weighted_by_frequency():
    words = {tuple(b"hug"): 10, tuple(b"pug"): 5, tuple(b"hugs"): 2}
    counts = count_pairs(words)
    assert counts[(ord("u"), ord("g"))] == 17
    assert counts[(ord("h"), ord("u"))] == 12
    assert counts[(ord("g"), ord("s"))] == 2
    assert most_frequent_pair(counts) == (ord("u"), ord("g"))


def test_merge_pair_goes_left_to_right_without_overlap():
    a = ord("a")
    assert merge_pair((a, a, a, a, a), (a, a), 256) == (256, 256, a)
    assert merge_pair((1, 2, 3, 1, 2), (1, 2), 300) == (300, 3, 300)
    assert merge_pair((), (1, 2), 300) == ()


def test_most_frequent_pair_breaks_ties_by_smallest_ids():
    from collections import Counter

    assert most_frequent_pair(Counter({(5, 6): 3, (2, 9): 3, (2, 7): 3, (1, 1): 2})) == (2, 7)
    with pytest.raises(ValueError, match="too short"):
        most_frequent_pair(Counter())


# ------------------------------------------------------------------------------------------- training
def test_first_merges_on_a_hand_checkable_text():
    # "aaabdaaabac" (Wikipedia's example) is one pre-token; pairs: aa 4, ab 2, bd 1, da 1, ba 1, ac 1.
    tokenizer = BPETokenizer()
    tokenizer.train("aaabdaaabac", vocab_size=256 + 2 + 1)
    a, b = ord("a"), ord("b")
    # after "aa" -> 256, the pairs (97, 98) "ab" and (256, 97) "aa"+"a" tie at 2: the smaller ids win
    assert list(tokenizer.merges.items()) == [((a, a), 256), ((a, b), 257)]
    assert tokenizer.vocab[256] == b"aa" and tokenizer.vocab[257] == b"ab"
    assert tokenizer.special_tokens == {ENDOFTEXT: 258}
    assert tokenizer.encode("aaabdaaabac") == [256, 257, ord("d"), 256, 257, a, ord("c")]


def test_merges_never_cross_pre_tokens_or_special_tokens():
    tokenizer = BPETokenizer()
    # pre-tokens: "ab" x2 and " ab" x2; "b<|" or "b a" are never counted as pairs
    tokenizer.train("ab ab ab<|endoftext|>ab", vocab_size=256 + 2 + 1)
    learned = [tokenizer.vocab[i] for i in tokenizer.merges.values()]
    assert learned == [b"ab", b" ab"]
    assert not any(b"<" in token or b"|" in token for token in learned)


def test_trained_tokenizer_round_trips_and_has_exactly_vocab_size_ids(verdict_tokenizer):
    text = read_corpus("the-verdict")
    assert verdict_tokenizer.vocab_size == 500
    assert sorted(verdict_tokenizer.vocab) == list(range(500))
    assert verdict_tokenizer.special_tokens == {ENDOFTEXT: 499}
    ids = verdict_tokenizer.encode(text)
    assert verdict_tokenizer.decode(ids) == text
    assert max(ids) < 499 and len(ids) < len(text.encode("utf-8")) / 2  # merges compress the text
    for sample in EDGE_CASES:
        assert verdict_tokenizer.decode(verdict_tokenizer.encode(sample)) == sample


def test_trained_special_token_gets_its_id(verdict_tokenizer):
    ids = verdict_tokenizer.encode("The end.<|endoftext|>", allowed_special={ENDOFTEXT})
    assert ids[-1] == 499 and ids.count(499) == 1
    assert verdict_tokenizer.decode(ids) == "The end.<|endoftext|>"


def test_trained_tokenizer_refuses_a_disallowed_special_token(verdict_tokenizer):
    with pytest.raises(ValueError, match=r"<\|endoftext\|>.*allowed_special"):
        verdict_tokenizer.encode("The end.<|endoftext|>")
    with pytest.raises(ValueError, match="does not know"):
        verdict_tokenizer.encode("hi", allowed_special={"<|unknown|>"})


def test_training_is_deterministic_and_specials_take_the_last_ids():
    text = "the cat and the hat sat on the mat, the end"
    first, second = BPETokenizer(), BPETokenizer()
    first.train(text, vocab_size=270, allowed_special={"<|pad|>", ENDOFTEXT})
    second.train(text, vocab_size=270, allowed_special={ENDOFTEXT, "<|pad|>"})
    assert first.merges == second.merges and first.vocab == second.vocab
    assert sorted(first.special_tokens.values()) == [268, 269] and first.vocab_size == 270


@pytest.mark.parametrize("vocab_size", [0, 255, 256])
def test_too_small_vocab_size_raises(vocab_size):
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer().train("some text", vocab_size=vocab_size)
    BPETokenizer().train("some text", vocab_size=256, allowed_special=())  # bytes only is allowed


def test_too_short_text_raises():
    with pytest.raises(ValueError, match="too short"):
        BPETokenizer().train("ab", vocab_size=300)


def test_untrained_tokenizer_is_bytes_only():
    tokenizer = BPETokenizer()
    assert tokenizer.vocab_size == 256
    assert tokenizer.encode("pão") == list("pão".encode("utf-8")) == [112, 195, 163, 111]


def test_decode_replaces_broken_utf8_and_rejects_unknown_ids():
    tokenizer = BPETokenizer()
    assert tokenizer.decode([112, 195]) == "p\ufffd"  # half of "ã"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.decode([256])


def test_allowed_special_accepts_a_single_string_and_all(verdict_tokenizer):
    text = "a<|endoftext|>b"
    expected = verdict_tokenizer.encode(text, allowed_special={ENDOFTEXT})
    assert verdict_tokenizer.encode(text, allowed_special=ENDOFTEXT) == expected
    assert verdict_tokenizer.encode(text, allowed_special="all") == expected
