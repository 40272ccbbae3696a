"""Scoring the fine-tuned model's responses: an LLM judge (the book's way) and ROUGE-L (no judge needed).

Introduced in ch07_finetune_instructions, 7.8. The book asks Llama 3, through Ollama, to score each response
of the test set from 0 to 100 against the expected output (``generate_model_scores``). Beyond the book:

- the judge can be any OpenAI-compatible server, and is checked first (``judge_available``; the protocols,
  API keys and errors live in ``llmscratch.judge_http`` and are re-exported here);
- a reply that is not an integer from 0 to 100 is asked once more, then recorded as unscored (``None``);
- with ``scores_path``, every score is saved at once (all or nothing), so a run that stops (Ctrl+C, the judge
  going away) loses nothing: running it again asks only the entries not scored yet, the unscored ones included;
  runs that share the file at the same time merge their scores into it (``ScoresFile``);
- ``score_responses`` returns a ``ScoreReport``: the score of every entry (``None`` where unscored), how many
  were scored, their average;
- ``rouge_l_scores`` gives the chapter a number even where no judge runs.

This module imports neither torch nor the model: scoring needs only the responses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .files import write_json
from .run_lock import RunFolderLocked, lock_run_folder
from .judge_http import (
    API_KEY_VARIABLE, DEFAULT_TIMEOUT, OLLAMA_CHAT_URL, OPENAI_API_KEY_VARIABLE, JudgeError, JudgeResponseError,
    JudgeUnavailableError, judge_available, query_model,
)
from .prompt_formats import format_input

__all__ = [
    "API_KEY_VARIABLE", "DEFAULT_TIMEOUT", "OLLAMA_CHAT_URL", "OPENAI_API_KEY_VARIABLE", "JudgeError",
    "JudgeResponseError", "JudgeUnavailableError", "ScoreReport", "ScoresFile", "generate_model_scores",
    "judge_available", "query_model", "query_score", "rouge_l_scores", "score_responses",
]

TRIES = 2  # a reply that is not an integer from 0 to 100 is asked once more
SCORES_FORMAT = "llmscratch-judge-scores/1"  # "format" of a scores file
LOCK_WAIT = 60.0  # seconds a save waits for another run that is saving in the same folder
ECHOED = 200  # characters of a reply that are printed or saved
_SCORE = re.compile(r"\s*(\d{1,3})\s*")  # what the book's int(score) accepts, less signs and underscores


@dataclass
class ScoreReport:
    """The judge's score of every entry, in order: an int from 0 to 100, or ``None`` where the judge's reply
    was not one (twice). Introduced in ch07_finetune_instructions, 7.8.

    ``scores`` is what ``generate_model_scores`` returns (the scored entries only, as the book); ``resumed``
    counts the entries taken from ``scores_path`` instead of asking the judge again.
    """

    per_entry: list[int | None] = field(default_factory=list)
    resumed: int = 0

    @property
    def scores(self) -> list[int]:
        return [score for score in self.per_entry if score is not None]

    @property
    def num_scored(self) -> int:
        return len(self.scores)

    @property
    def num_entries(self) -> int:
        return len(self.per_entry)

    @property
    def average(self) -> float | None:
        """The mean of ``scores``; ``None`` when nothing was scored."""
        return sum(self.scores) / self.num_scored if self.num_scored else None

    def __str__(self) -> str:
        unscored = self.num_entries - self.num_scored
        line = f"Scored {self.num_scored} of {self.num_entries} entries"
        if unscored:
            line += f" ({unscored} replies were not an integer from 0 to 100)"
        return line + (f"; {self.resumed} came from the scores file" if self.resumed else "")


def generate_model_scores(json_data, json_key, model="llama3", url=OLLAMA_CHAT_URL, *, format_fn=format_input,
                          scores_path=None, timeout=DEFAULT_TIMEOUT, report=None):
    """The judge's scores (0 to 100) of the responses ``entry[json_key]``, for the entries it scored, as the
    book. Introduced in ch07_finetune_instructions, 7.8.

    The book's prompt and loop, with these additions: ``url`` picks the judge (``query_model``); a reply that is
    not an integer from 0 to 100 gets one retry, then the entry is left unscored (the book's "Could not convert
    score" line, ``query_score``); one line at the end says how many were scored. With ``scores_path`` (a JSON
    file, ``ScoresFile``) each score is saved as soon as it is known, all or nothing, and a later run with the
    same file does not ask again for the entries it holds a score of (unscored ones are asked again); runs that
    share the file at the same time merge their scores. ``format_fn`` formats the instruction (the book's
    ``format_input``, Alpaca); ``report``, a ``ScoreReport``, receives every entry's score (``score_responses``
    returns one). ``JudgeError`` when the judge fails: what was scored is in ``scores_path``.
    """
    _check_entries(json_data, (json_key, "output"), format_fn)  # beyond the book: a clear error for a missing key
    scores_file = ScoresFile(scores_path, model, len(json_data))  # beyond the book: resume a stopped run
    report = ScoreReport() if report is None else report  # beyond the book: every entry's score, or None
    for index, entry in enumerate(tqdm(json_data, desc="Scoring entries")):
        prompt = (
            f"Given the input `{format_fn(entry)}` "
            f"and correct output `{entry['output']}`, "
            f"score the model response `{entry[json_key]}`"
            f" on a scale from 0 to 100, where 100 is the best score. "
            f"Respond with the integer number only."
        )
        if scores_file.has(index, prompt):  # scored by an earlier run with this file
            report.resumed += 1
        else:
            score, reply = query_score(prompt, model, url, timeout=timeout)  # the book: int(query_model(prompt))
            scores_file.save(index, prompt, score, reply)
        report.per_entry.append(scores_file.score(index))
    print(report)
    return report.scores


def score_responses(json_data, json_key, model="llama3", url=OLLAMA_CHAT_URL, *, format_fn=format_input,
                    scores_path=None, timeout=DEFAULT_TIMEOUT):
    """``generate_model_scores``, returning a ``ScoreReport``: every entry's score (``None`` where unscored), the
    number scored and the average. Introduced in ch07_finetune_instructions, 7.8."""
    report = ScoreReport()
    generate_model_scores(json_data, json_key, model, url, format_fn=format_fn, scores_path=scores_path,
                          timeout=timeout, report=report)
    return report


def query_score(prompt, model="llama3", url=OLLAMA_CHAT_URL, *, timeout=DEFAULT_TIMEOUT, tries=TRIES):
    """``(score, reply)``: the judge's reply to ``prompt`` as an int from 0 to 100, asking up to ``tries``
    times, and the last reply; ``(None, reply)`` after printing the book's "Could not convert score" line when
    no reply was one. Introduced in ch07_finetune_instructions, 7.8."""
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
        raise ValueError(f"tries must be an integer >= 1, got {tries!r}")
    for _ in range(tries):
        reply = query_model(prompt, model, url, timeout=timeout)
        match = _SCORE.fullmatch(reply)
        if match and int(match[1]) <= 100:
            return int(match[1]), reply
    print(f"Could not convert score: {_excerpt(reply)}")
    return None, reply


def rouge_l_scores(json_data, json_key, reference_key="output"):
    """ROUGE-L of each response ``entry[json_key]`` against the expected ``entry[reference_key]``, scaled to 0
    to 100: a score without a judge. Introduced in ch07_finetune_instructions, 7.8.

    ROUGE-L (``rouge-score``'s ``RougeScorer(["rougeL"], use_stemmer=True)``, its F-measure) finds the longest
    common subsequence of words of the two texts, in order but not necessarily adjacent, after lowercasing,
    dropping punctuation and stemming ("jumped" and "jumping" count as one word). Precision is its length over
    the response's length, recall over the reference's; F is their harmonic mean. Identical texts score 100,
    texts with no word in common 0.

    It measures how much of the reference's wording the response repeats, in order, and misses what an LLM
    judge sees: a correct paraphrase or synonym scores low, a fluent response that copies the reference's words
    but changes one that matters ("is" for "is not", a wrong number) scores high; it knows nothing of facts,
    grammar or whether the instruction was followed. Its tokenizer keeps only the letters a to z and digits,
    so it suits English (the book's data set), not accented words.
    """
    _check_entries(json_data, (json_key, reference_key))
    from rouge_score.rouge_scorer import RougeScorer  # imported here: it loads nltk

    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    return [100 * scorer.score(entry[reference_key], entry[json_key])["rougeL"].fmeasure for entry in json_data]


def _check_entries(json_data, keys, format_fn=None):
    """A ``ValueError`` naming the entry and the key, for an entry that is not a dict with text in ``keys`` (or
    that ``format_fn`` cannot format), instead of a ``KeyError`` half-way through the judge's work."""
    if isinstance(json_data, (str, bytes, dict)) or not hasattr(json_data, "__len__"):
        raise ValueError(f"json_data must be a list of entries (dicts), got a {type(json_data).__name__}")
    for index, entry in enumerate(json_data):
        if not isinstance(entry, dict):
            raise ValueError(f"json_data[{index}] is a {type(entry).__name__}, not an entry (a dict)")
        for key in keys:
            if key not in entry:
                raise ValueError(f"json_data[{index}] has no key {key!r} (its keys: {', '.join(map(repr, entry))})")
            if not isinstance(entry[key], str):
                raise ValueError(f"json_data[{index}][{key!r}] is a {type(entry[key]).__name__}, not text")
        if format_fn is not None:
            try:
                format_fn(entry)
            except (KeyError, ValueError, TypeError) as error:
                name = getattr(format_fn, "__name__", "format_fn")
                raise ValueError(f"json_data[{index}] cannot be formatted by {name} ({type(error).__name__}: "
                                 f"{error})") from None


def _excerpt(text, limit=ECHOED):
    """``text``, cut after ``limit`` characters with a note of its length: a judge may send megabytes."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters in all)"


# --- the scores file -----------------------------------------------------------------------------------------


class ScoresFile:
    """The judge's scores saved so far (``path``: a JSON file, or ``None`` to keep them in memory only), so that a
    run stopped half-way loses nothing. Beyond the book; introduced in ch07_finetune_instructions, 7.8.

    An entry is found by its index and the sha256 of the judge's model name and the prompt, so a changed data
    set, response or judge is scored afresh; so is an entry saved unscored (``None``), when a later run asks for
    it. Every ``save`` holds the lock of the file's folder (``run_lock.lock_run_folder``), reads the file again,
    adds its score to what other runs saved meanwhile and rewrites it all or nothing (``files.write_json``): two
    runs on one file lose no score. A file that is not a scores file is a ``ValueError`` that says what to do; a
    saved score that is not an integer from 0 to 100 counts as unscored, with a note.
    """

    def __init__(self, path, model, num_entries):
        self.path = None if path is None else Path(path)
        self.model = model
        self.num_entries = num_entries  # the file may hold more entries: kept for the run that has them
        self.saved = self._load(note=True)  # {index: {"key", "score", "reply"}}

    def has(self, index, prompt) -> bool:
        """Whether a score of entry ``index`` for this ``prompt`` (and this judge) is saved; an unscored entry
        (``None``) is asked again."""
        record = self.saved.get(index, {})
        return record.get("key") == self._key(prompt) and record.get("score") is not None

    def score(self, index) -> int | None:
        return self.saved[index]["score"]

    def save(self, index, prompt, score, reply):
        record = {"key": self._key(prompt), "score": score, "reply": reply[:ECHOED]}
        if self.path is None:
            self.saved[index] = record
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self.saved = {**self.saved, **self._load()}  # what other runs saved meanwhile wins over our memory
            kept = self.saved.get(index, {})
            if score is not None or kept.get("key") != record["key"] or kept.get("score") is None:
                self.saved[index] = record  # an unscored reply does not replace another run's score
            data = {"format": SCORES_FORMAT, "model": self.model,
                    "entries": {str(i): self.saved[i] for i in sorted(self.saved)}}
            write_json(self.path, data, indent=1)

    @contextlib.contextmanager
    def _locked(self):
        """The lock of the file's folder, waiting up to ``LOCK_WAIT`` seconds for another run's save."""
        deadline = time.monotonic() + LOCK_WAIT
        with contextlib.ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(lock_run_folder(self.path.parent))
                    break
                except RunFolderLocked as error:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"The last score was not saved: process id {error.pid or '(unknown)'} "
                                           f"has held the lock of {error.folder} for over {LOCK_WAIT:g} s (wait for "
                                           "it to end).") from None
                    time.sleep(0.02)
            yield

    def _key(self, prompt):
        return hashlib.sha256(json.dumps([self.model, prompt]).encode("utf-8")).hexdigest()

    def _load(self, note=False):
        """The file's entries (all of them: a run with more entries may share it), ``{}`` if there is none."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = {int(index): record for index, record in data["entries"].items()}
            valid = data["format"] == SCORES_FORMAT and all(
                isinstance(record, dict) and {"key", "score"} <= record.keys() for record in entries.values())
        except (ValueError, KeyError, TypeError, AttributeError):
            valid = False
        if not valid:
            raise ValueError(f"{self.path} is not a scores file of generate_model_scores: delete it or pass "
                             f"another scores_path")
        bad = {index: record["score"] for index, record in sorted(entries.items()) if not _is_score(record["score"])}
        if bad and note:
            shown = ", ".join(f"entry {i}: {_excerpt(repr(v), 20)}" for i, v in list(bad.items())[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            print(f"note: {self.path} holds scores that are not integers from 0 to 100 ({shown}{more}): they count "
                  "as unscored and the judge is asked again")
        return {index: {**record, "score": None} if index in bad else record for index, record in entries.items()}


def _is_score(value):
    """Whether a saved score is one: ``None`` (unscored) or an int from 0 to 100."""
    return value is None or (type(value) is int and 0 <= value <= 100)
