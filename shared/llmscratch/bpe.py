"""A byte-level BPE tokenizer written from scratch: training, encoding, decoding.

Introduced in ch02_text_data (beyond the book: BPE from scratch). The book uses ``tiktoken`` for GPT-2's
tokenizer; this module rebuilds the same algorithm in plain Python so that it can be read and trained:

1. the text is cut into *pre-tokens* with GPT-2's regular expression (words with their leading space,
   numbers, punctuation runs, whitespace), so merges never cross a word boundary;
2. every pre-token becomes its UTF-8 bytes, and each of the 256 byte values is a token (ids 0-255);
3. training repeatedly merges the most frequent adjacent pair of tokens into a new token;
4. encoding repeats, inside each pre-token, the merge whose result has the lowest rank (id); a heap of
   candidate pairs keeps this O(n log n) even for a pre-token of thousands of bytes.

``BPETokenizer.from_gpt2`` (reading files with :mod:`llmscratch.bpe_gpt2`) loads GPT-2's own files and encodes
exactly like ``tiktoken.get_encoding("gpt2")``. The book's bonus material names the same things
``load_vocab_and_merges_from_openai`` and ``bpe_merges``; both names work here too.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import regex

# GPT-2's pre-tokenization pattern (tiktoken's ``r50k_pat_str`` is an equivalent, faster spelling of it).
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
_SPLIT_RE = regex.compile(GPT2_SPLIT_PATTERN)

Pair = tuple[int, int]


def count_pairs(words: dict[tuple[int, ...], int]) -> Counter[Pair]:
    """Count adjacent token pairs over ``words`` (token tuple -> frequency), weighted by frequency.

    Introduced in ch02_text_data (beyond the book: BPE from scratch).
    """
    counts: Counter[Pair] = Counter()
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return counts


def merge_pair(ids: Iterable[int], pair: Pair, new_id: int) -> tuple[int, ...]:
    """Replace every occurrence of ``pair`` in ``ids`` (left to right, no overlaps) with ``new_id``.

    Introduced in ch02_text_data (beyond the book: BPE from scratch).
    """
    ids = tuple(ids)
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def most_frequent_pair(counts: Counter[Pair]) -> Pair:
    """The pair with the highest count; ties go to the smallest pair of ids, so training is deterministic.

    Introduced in ch02_text_data (beyond the book: BPE from scratch).
    """
    if not counts:
        raise ValueError("no pairs left to merge: the training text is too short for this vocab_size")
    return max(counts, key=lambda pair: (counts[pair], -pair[0], -pair[1]))


def _special_regex(specials: Iterable[str]) -> regex.Pattern | None:
    alternatives = sorted(specials, key=len, reverse=True)  # longest first, like tiktoken
    return regex.compile("|".join(regex.escape(s) for s in alternatives)) if alternatives else None


def _as_set(tokens: Iterable[str]) -> set[str]:
    """``{tokens}`` for a single string (not its characters), else ``set(tokens)``."""
    return {tokens} if isinstance(tokens, str) else set(tokens)


def split_on_specials(text: str, specials: Iterable[str]) -> list[str]:
    """Split ``text`` around the special tokens in ``specials``, keeping them as separate items.

    Introduced in ch02_text_data (beyond the book: BPE from scratch).
    """
    pattern = _special_regex(specials)
    if pattern is None:
        return [text] if text else []
    parts: list[str] = []
    start = 0
    for match in pattern.finditer(text):
        parts += [text[start : match.start()], match.group()]
        start = match.end()
    parts.append(text[start:])
    return [part for part in parts if part]


class BPETokenizer:
    """A byte-level BPE tokenizer: train it on a text or load GPT-2's merges, then encode and decode.

    Introduced in ch02_text_data (beyond the book: BPE from scratch).

    ``vocab`` maps each id to its bytes, ``merges`` maps each learned pair of ids to the id of the merged
    token (in learning order), and ``special_tokens`` maps special token strings to their ids.
    """

    def __init__(self) -> None:
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        self.merges: dict[Pair, int] = {}
        self.special_tokens: dict[str, int] = {}
        self._ranks: dict[bytes, int] = {}
        self._cache: dict[str, tuple[int, ...]] = {}
        self._rebuild_ranks()

    # ------------------------------------------------------------------ state
    @property
    def vocab_size(self) -> int:
        """The number of ids, special tokens included.

        Introduced in ch02_text_data (beyond the book: BPE from scratch).
        """
        return len(self.vocab)

    def _rebuild_ranks(self) -> None:
        """Rank of each mergeable token's bytes = its id (the lowest id if two tokens share bytes)."""
        specials = set(self.special_tokens.values())
        self._ranks = {}
        for i in sorted(self.vocab):
            if i not in specials:
                self._ranks.setdefault(self.vocab[i], i)
        self._cache = {}

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, specials={self.special_tokens})"

    # --------------------------------------------------------------- training
    def train(self, text: str, vocab_size: int, allowed_special: Iterable[str] = frozenset({ENDOFTEXT})) -> None:
        """Learn ``vocab_size - 256 - len(allowed_special)`` merges from ``text``; specials get the last ids.

        Introduced in ch02_text_data (beyond the book: BPE from scratch). Pairs are counted over the unique
        pre-tokens weighted by their frequency, and updated incrementally after each merge (only the
        pre-tokens that contain the merged pair are recounted). Special token strings in ``text`` are cut
        out before counting, so no merge crosses them.
        """
        specials = sorted(_as_set(allowed_special))
        n_merges = vocab_size - 256 - len(specials)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: it must be at least 256 (bytes) + "
                f"{len(specials)} (special tokens) = {256 + len(specials)}"
            )
        words, freqs = self._unique_pre_tokens(text, specials)
        counts: Counter[Pair] = Counter()
        where: defaultdict[Pair, set[int]] = defaultdict(set)  # pair -> indices of words holding it
        for index, word in enumerate(words):
            self._add_word_pairs(word, freqs[index], index, counts, where)

        vocab = {i: bytes([i]) for i in range(256)}
        merges: dict[Pair, int] = {}
        for new_id in range(256, 256 + n_merges):
            pair = most_frequent_pair(counts)
            merges[pair] = new_id
            vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
            for index in list(where.pop(pair, ())):
                old = words[index]
                self._add_word_pairs(old, -freqs[index], None, counts, where)
                words[index] = merge_pair(old, pair, new_id)
                self._add_word_pairs(words[index], freqs[index], index, counts, where)
        for offset, special in enumerate(specials):
            vocab[256 + n_merges + offset] = special.encode("utf-8")
        self.vocab, self.merges = vocab, merges
        self.special_tokens = {s: 256 + n_merges + k for k, s in enumerate(specials)}
        self._rebuild_ranks()

    @staticmethod
    def _unique_pre_tokens(text: str, specials: list[str]) -> tuple[list[tuple[int, ...]], list[int]]:
        """The distinct pre-tokens of ``text`` as byte tuples, and how often each occurs."""
        counter: Counter[str] = Counter()
        for part in split_on_specials(text, specials):
            if part not in specials:
                counter.update(_SPLIT_RE.findall(part))
        words = [tuple(piece.encode("utf-8")) for piece in counter]
        return words, list(counter.values())

    @staticmethod
    def _add_word_pairs(word: tuple[int, ...], freq: int, index: int | None, counts: Counter[Pair],
                        where: defaultdict[Pair, set[int]]) -> None:
        """Add ``freq`` (negative: remove) for each adjacent pair of ``word``; record ``index`` for new pairs."""
        for pair in zip(word, word[1:]):
            counts[pair] += freq
            if counts[pair] == 0:
                del counts[pair]
            if index is not None:
                where[pair].add(index)

    # ------------------------------------------------------- encode / decode
    def _bpe(self, piece: bytes) -> tuple[int, ...]:
        """Encode one pre-token: merge the adjacent parts whose concatenation has the lowest rank, repeat.

        This is tiktoken's rule (ties go to the leftmost pair); a whole pre-token that is a token is
        returned at once.

        Rescanning every pair after each merge would cost O(n^2) for a pre-token of n bytes (a run of
        16,000 identical letters takes seconds), so the parts are kept in a structure that makes each merge
        cheap, for O(n log n) in all:

        * a part is named by the offset where it starts in ``piece``; ``part_end[start]`` is where it ends
          (which is where the next part starts) and ``part_before[start]`` is where the part before it
          starts: a doubly linked list over the bytes, so merging two parts is changing a few entries;
        * every adjacent pair of parts whose concatenation is a token waits in a min-heap as
          ``(rank, left_start, right_start, right_end)``; the smallest entry is the lowest rank and, among
          equal ranks, the leftmost pair: exactly the merge tiktoken makes next;
        * a merge changes only the pairs on each side of the new part, which are pushed again; the entries
          of pairs that no longer exist stay in the heap and are skipped when popped (lazy deletion): an
          entry is current only if both of its parts still start and end where they did when it was pushed.
        """
        ranks = self._ranks
        if piece in ranks:
            return (ranks[piece],)
        n = len(piece)
        merged_away = -1  # part_end value of a part that was merged into the part on its left
        part_end = list(range(1, n + 1))  # at first every byte is a part
        part_before = list(range(-1, n - 1))  # -1: there is no part before the first one
        heap: list[tuple[int, int, int, int]] = []  # (rank, left_start, right_start, right_end)
        for start in range(n - 1):  # the adjacent pairs of single bytes that are tokens
            rank = ranks.get(piece[start : start + 2])
            if rank is not None:
                heap.append((rank, start, start + 1, start + 2))
        heapq.heapify(heap)

        def push_if_token(left_start: int, right_start: int, right_end: int) -> None:
            rank = ranks.get(piece[left_start:right_end])
            if rank is not None:
                heapq.heappush(heap, (rank, left_start, right_start, right_end))

        while heap:
            _, left_start, right_start, right_end = heapq.heappop(heap)
            if part_end[left_start] != right_start or part_end[right_start] != right_end:
                continue  # stale: one of the two parts has been merged since this entry was pushed
            part_end[left_start], part_end[right_start] = right_end, merged_away
            if right_end < n:  # the new part and the part after it
                part_before[right_end] = left_start
                push_if_token(left_start, right_end, part_end[right_end])
            if left_start > 0:  # the part before it and the new part
                push_if_token(part_before[left_start], left_start, right_end)
        ids: list[int] = []
        start = 0
        while start < n:
            ids.append(ranks[piece[start : part_end[start]]])
            start = part_end[start]
        return tuple(ids)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` with no special-token handling at all (special strings are plain text).

        Introduced in ch02_text_data (beyond the book: BPE from scratch). Each distinct pre-token is
        encoded once and cached.
        """
        ids: list[int] = []
        for piece in _SPLIT_RE.findall(text):
            cached = self._cache.get(piece)
            if cached is None:
                cached = self._cache[piece] = self._bpe(piece.encode("utf-8"))
            ids.extend(cached)
        return ids

    def encode(self, text: str, allowed_special: Iterable[str] = frozenset()) -> list[int]:
        """Encode ``text`` to ids; special tokens in ``allowed_special`` become their ids.

        Introduced in ch02_text_data (beyond the book: BPE from scratch). Like tiktoken, a special token
        string that appears in ``text`` but is not allowed raises ``ValueError`` (it could be an injection);
        ``allowed_special="all"`` allows every special token.
        """
        allowed = set(self.special_tokens) if allowed_special == "all" else _as_set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special has tokens this tokenizer does not know: {sorted(unknown)}; "
                             f"its special tokens are {sorted(self.special_tokens)}")
        disallowed = _special_regex(set(self.special_tokens) - allowed)
        match = disallowed.search(text) if disallowed else None
        if match:
            raise ValueError(
                f"the text contains the special token {match.group()!r}, which is not allowed; pass "
                f"allowed_special={{{match.group()!r}}} to encode it as a special token"
            )
        ids: list[int] = []
        for part in split_on_specials(text, allowed):
            ids.extend([self.special_tokens[part]] if part in allowed else self.encode_ordinary(part))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Join the bytes of ``ids`` and decode them as UTF-8 (invalid sequences become U+FFFD).

        Introduced in ch02_text_data (beyond the book: BPE from scratch).
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of ``ids`` (a single token's bytes may be an incomplete UTF-8 character).

        Introduced in ch02_text_data (beyond the book: BPE from scratch).
        """
        try:
            return b"".join(self.vocab[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(f"id {err.args[0]} is not in the vocabulary (0..{self.vocab_size - 1})") from None

    # ------------------------------------------------------------- GPT-2
    @classmethod
    def from_gpt2(cls, encoder_json_path: str | Path, vocab_bpe_path: str | Path) -> "BPETokenizer":
        """Load GPT-2's ``encoder.json`` and ``vocab.bpe``; encodes exactly like ``tiktoken`` ("gpt2").

        Introduced in ch02_text_data (beyond the book: BPE from scratch). ``<|endoftext|>`` is id 50256;
        pass ``allowed_special={"<|endoftext|>"}`` to ``encode`` to use it.
        """
        tokenizer = cls()
        tokenizer.load_vocab_and_merges_from_openai(encoder_json_path, vocab_bpe_path)
        return tokenizer

    def load_vocab_and_merges_from_openai(self, vocab_path: str | Path, bpe_merges_path: str | Path) -> None:
        """The book's name for loading GPT-2's files into this tokenizer (``vocab_path`` is ``encoder.json``).

        Introduced in ch02_text_data (beyond the book: BPE from scratch). As in the book's
        ``BPETokenizerSimple``, it fills ``self`` (replacing what it had learned) and returns nothing;
        ``BPETokenizer.from_gpt2`` does the same on a new tokenizer. Encodes exactly like ``tiktoken`` ("gpt2").
        """
        from .bpe_gpt2 import load_gpt2_vocab_and_merges

        self.vocab, self.merges, self.special_tokens = load_gpt2_vocab_and_merges(vocab_path, bpe_merges_path)
        self._rebuild_ranks()

    @property
    def bpe_merges(self) -> dict[Pair, int]:
        """The book's name for ``merges`` (the same dict: pair of ids -> id of the merged token).

        Introduced in ch02_text_data (beyond the book: BPE from scratch).
        """
        return self.merges
