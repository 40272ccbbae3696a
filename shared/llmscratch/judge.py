"""Scoring the fine-tuned model's responses: an LLM judge (the book's way) and ROUGE-L (no judge needed).

Introduced in ch07_finetune_instructions, 7.8. The book asks Llama 3, through Ollama, to score each response
of the test set from 0 to 100 against the expected output (``generate_model_scores``). Beyond the book:

- the judge can be any OpenAI-compatible server, and is checked first (``judge_available``; the protocols,
  API keys and errors live in ``llmscratch.judge_http`` and are re-exported here);
- a reply that is not an integer from 0 to 100 is asked once more, then recorded as unscored (``None``);
- with ``scores_path``, every score is saved at once (all or nothing), so a run that stops (Ctrl+C, the judge
  going away) loses nothing: running it again asks only the entries not scored yet;
- ``score_responses`` returns a ``ScoreReport``: the score of every entry (``None`` where unscored), how many
  were scored, their average;
- ``rouge_l_scores`` gives the chapter a number even where no judge runs.

This module imports neither torch nor the model: scoring needs only the responses.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .files import write_json
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
    same file does not ask again for the entries it holds. ``format_fn`` formats the instruction (the book's
    ``format_input``, Alpaca); ``report``, a ``ScoreReport``, receives every entry's score (``score_responses``
    returns one). ``JudgeError`` when the judge fails: what was scored is in ``scores_path``.
    """
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
    print(f"Could not convert score: {reply}")
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
    from rouge_score.rouge_scorer import RougeScorer  # imported here: it loads nltk

    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    return [100 * scorer.score(entry[reference_key], entry[json_key])["rougeL"].fmeasure for entry in json_data]


# --- the scores file -----------------------------------------------------------------------------------------


class ScoresFile:
    """The judge's scores saved so far (``path``: a JSON file, or ``None`` to keep them in memory only), so that a
    run stopped half-way loses nothing. Beyond the book; introduced in ch07_finetune_instructions, 7.8.

    An entry is found by its index and the sha256 of the judge's model name and the prompt, so a changed data
    set, response or judge is scored afresh. Every ``save`` rewrites the file all or nothing
    (``files.write_json``). A file that is not a scores file is a ``ValueError`` that says what to do.
    """

    def __init__(self, path, model, num_entries):
        self.path = None if path is None else Path(path)
        self.model = model
        self.saved = self._load(num_entries)  # {index: {"key", "score", "reply"}}

    def has(self, index, prompt) -> bool:
        """Whether the score of entry ``index`` for this ``prompt`` (and this judge) is saved."""
        return self.saved.get(index, {}).get("key") == self._key(prompt)

    def score(self, index) -> int | None:
        return self.saved[index]["score"]

    def save(self, index, prompt, score, reply):
        self.saved[index] = {"key": self._key(prompt), "score": score, "reply": reply[:200]}
        if self.path is not None:
            data = {"format": SCORES_FORMAT, "model": self.model,
                    "entries": {str(i): self.saved[i] for i in sorted(self.saved)}}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, data, indent=1)

    def _key(self, prompt):
        return hashlib.sha256(json.dumps([self.model, prompt]).encode("utf-8")).hexdigest()

    def _load(self, num_entries):
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
        return {index: record for index, record in entries.items() if index < num_entries}
