"""The judge's scores file hardened (issue 20): runs that share one file lose no score, unscored entries are asked
again, a score outside 0 to 100 in the file counts as unscored, clear errors for entries without a key, and
``evaluate`` says the scores are saved only when they are. Against the fake judge of test_judge on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import pytest
import test_judge
from test_judge import ENTRIES, SERVER_ERROR, SLOW, FakeJudge, book_prompt, format_fn, serving

from llmscratch import judge as judge_module
from llmscratch.judge import (
    JudgeUnavailableError, ScoresFile, generate_model_scores, rouge_l_scores, score_responses,
)
from llmscratch.run_lock import lock_run_folder

judge = test_judge.judge  # the fixture of the fake judge on 127.0.0.1


@pytest.fixture
def second_judge(judge):
    """Another fake judge, for a second run at the same time (``judge`` clears the proxy variables)."""
    with serving(FakeJudge()) as server:
        yield server


def saved_scores(path):
    return {int(index): entry["score"] for index, entry in json.loads(path.read_text("utf-8"))["entries"].items()}


# --- item 3: two runs on one scores file ------------------------------------------------------------------------


def test_two_runs_on_one_file_lose_no_score(judge, second_judge, tmp_path):
    """Run B scores entries 0 and 1 and waits for the judge; run A, meanwhile, scores 2 to 4 (0 and 1 come from
    the file); then B saves entry 2. Before the fix B rewrote the file from its memory (entries 0 to 2: A's 3 and
    4 were lost) and went on asking for 3, where its judge fails. Now B merges what A saved and asks no more."""
    path = tmp_path / "scores.json"
    second_judge.replies = ["11", "12", SLOW, SERVER_ERROR]  # run B: the third reply waits for `release`
    second_judge.default = "13"
    outcome = []

    def run_b():
        try:
            outcome.append(score_responses(ENTRIES, "model_response", url=second_judge.ollama, scores_path=path,
                                           format_fn=format_fn))
        except JudgeUnavailableError as error:
            outcome.append(error)

    b = threading.Thread(target=run_b)
    b.start()
    for _ in range(500):  # B waits for its third reply
        if len(second_judge.requests) == 3:
            break
        time.sleep(0.01)
    judge.replies = ["22", "23", "24"]
    report = score_responses(ENTRIES, "model_response", url=judge.ollama, scores_path=path, format_fn=format_fn)
    assert (report.per_entry, report.resumed) == ([11, 12, 22, 23, 24], 2)
    second_judge.release.set()
    b.join(10)
    assert saved_scores(path) == {0: 11, 1: 12, 2: 13, 3: 23, 4: 24}  # B's later score of entry 2 replaced A's
    [b_report] = outcome
    assert (b_report.per_entry, b_report.resumed) == ([11, 12, 13, 23, 24], 2)
    assert len(second_judge.requests) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]  # no lock or temporary file left


def test_concurrent_saves_are_merged(tmp_path):
    """Two threads save 40 scores each into one file as fast as they can: all 80 are in it."""
    path = tmp_path / "scores.json"
    errors = []

    def run(first):
        try:
            scores_file = ScoresFile(path, "llama3", 80)
            for index in range(first, 80, 2):
                scores_file.save(index, f"prompt {index}", index, str(index))
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=run, args=(first,)) for first in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert saved_scores(path) == {index: index for index in range(80)}
    scores_file = ScoresFile(path, "llama3", 80)
    assert all(scores_file.has(index, f"prompt {index}") for index in range(80))


def test_a_save_waits_for_the_lock_then_says_who_holds_it(tmp_path, monkeypatch):
    monkeypatch.setattr(judge_module, "LOCK_WAIT", 0.3)
    path = tmp_path / "scores.json"
    scores_file = ScoresFile(path, "llama3", 5)
    with lock_run_folder(tmp_path):  # another run, saving (here: this process on another file descriptor)
        start = time.perf_counter()
        with pytest.raises(TimeoutError, match=r"The last score was not saved: process id \d+ has held the lock of "
                                               r".* for over 0.3 s \(wait for it to end\)"):
            scores_file.save(0, "prompt", 50, "50")
        assert time.perf_counter() - start < 2
    assert not path.exists()
    scores_file.save(0, "prompt", 50, "50")  # free again
    assert saved_scores(path) == {0: 50}


# --- item 6: unscored entries are asked again ------------------------------------------------------------------


def test_unscored_entries_are_asked_again(judge, tmp_path, capsys):
    path = tmp_path / "scores.json"
    judge.replies = ["no idea", "still no idea", "20", "30"]
    assert generate_model_scores(ENTRIES[:3], "model_response", url=judge.ollama, scores_path=path,
                                 format_fn=format_fn) == [20, 30]
    assert saved_scores(path) == {0: None, 1: 20, 2: 30}
    judge.requests.clear()
    judge.replies = ["10"]
    report = score_responses(ENTRIES[:3], "model_response", url=judge.ollama, scores_path=path, format_fn=format_fn)
    assert judge.prompts() == [book_prompt(ENTRIES[0])]  # the unscored entry only
    assert (report.per_entry, report.resumed) == ([10, 20, 30], 2)
    assert saved_scores(path) == {0: 10, 1: 20, 2: 30}


def test_an_unscored_reply_does_not_replace_a_score_of_another_run(tmp_path):
    path = tmp_path / "scores.json"
    late = ScoresFile(path, "llama3", 1)  # loaded before the other run saved
    ScoresFile(path, "llama3", 1).save(0, "prompt", 70, "70")
    late.save(0, "prompt", None, "no idea")
    assert saved_scores(path) == {0: 70} and late.score(0) == 70


# --- item 5: weak spots -----------------------------------------------------------------------------------------


def test_scores_outside_0_to_100_in_the_file_are_asked_again(judge, tmp_path, capsys):
    path = tmp_path / "scores.json"
    generate_model_scores(ENTRIES, "model_response", url=judge.ollama, scores_path=path, format_fn=format_fn)
    data = json.loads(path.read_text("utf-8"))
    for index, value in (("1", 150), ("2", "abc"), ("3", True), ("4", 12.5)):
        data["entries"][index]["score"] = value
    path.write_text(json.dumps(data), encoding="utf-8")
    capsys.readouterr()
    judge.requests.clear()
    judge.replies = ["61", "62", "63", "64"]
    report = score_responses(ENTRIES, "model_response", url=judge.ollama, scores_path=path, format_fn=format_fn)
    assert judge.prompts() == [book_prompt(entry) for entry in ENTRIES[1:]]
    assert report.per_entry == [50, 61, 62, 63, 64] and report.average == 60
    assert capsys.readouterr().out.splitlines()[0] == (
        f"note: {path} holds scores that are not integers from 0 to 100 (entry 1: 150, entry 2: 'abc', entry 3: "
        "True, entry 4: 12.5): they count as unscored and the judge is asked again")
    assert saved_scores(path) == {0: 50, 1: 61, 2: 62, 3: 63, 4: 64}


@pytest.mark.parametrize("entries, message", [
    ([ENTRIES[0], {k: v for k, v in ENTRIES[1].items() if k != "output"}],
     r"json_data\[1\] has no key 'output' \(its keys: 'instruction', 'input', 'model_response'\)"),
    ([{k: v for k, v in ENTRIES[0].items() if k != "model_response"}], r"json_data\[0\] has no key 'model_response'"),
    ([ENTRIES[0], ENTRIES[1], {**ENTRIES[2], "model_response": None}],
     r"json_data\[2\]\['model_response'\] is a NoneType, not text"),
    ([ENTRIES[0], "an entry"], r"json_data\[1\] is a str, not an entry \(a dict\)"),
    ({"0": ENTRIES[0]}, r"json_data must be a list of entries \(dicts\), got a dict"),
    ([{k: v for k, v in ENTRIES[0].items() if k != "instruction"}],
     r"json_data\[0\] cannot be formatted by format_fn \(KeyError: 'instruction'\)"),
])
def test_entries_without_a_key_are_a_value_error_naming_it(judge, entries, message):
    with pytest.raises(ValueError, match=message):
        generate_model_scores(entries, "model_response", url=judge.ollama, format_fn=format_fn)
    assert judge.requests == []  # checked before the judge is asked anything


def test_rouge_l_entries_without_a_key_are_a_value_error_naming_it():
    data = [{"output": "Jane Austen.", "response": "Jane Austen."}, {"response": "Charles Dickens."}]
    with pytest.raises(ValueError, match=r"json_data\[1\] has no key 'output' \(its keys: 'response'\)"):
        rouge_l_scores(data, "response")
    with pytest.raises(ValueError, match=r"json_data\[0\] has no key 'answer'"):
        rouge_l_scores(data, "answer")


def test_evaluate_says_scores_are_saved_only_when_they_are(judge, tmp_path):
    cli_instructions = pytest.importorskip("llmscratch.cli_instructions")
    from llmscratch.cli_checks import UsageError

    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps(ENTRIES), encoding="utf-8")
    args = argparse.Namespace(responses=responses, judge_url=judge.ollama, judge_model="llama3", key="model_response")
    judge.replies = [SERVER_ERROR]  # the first entry: nothing is saved
    with pytest.raises(UsageError) as error:
        cli_instructions.evaluate(args)
    assert not (tmp_path / "responses-scores.json").exists()
    assert "answered HTTP 500" in str(error.value) and "saved" not in str(error.value)
    assert str(error.value).endswith("Nothing was scored yet: run the same command again once the judge answers")
    judge.replies = ["80", SERVER_ERROR]
    with pytest.raises(UsageError, match=r"The scores so far are saved in .*responses-scores.json: run the same "
                                         r"command again to go on"):
        cli_instructions.evaluate(args)


def test_a_file_deleted_during_a_run_is_written_again_whole(tmp_path):
    path = tmp_path / "scores.json"
    scores_file = ScoresFile(path, "llama3", 3)
    scores_file.save(0, "prompt 0", 10, "10")
    path.unlink()
    scores_file.save(1, "prompt 1", 20, "20")
    assert saved_scores(path) == {0: 10, 1: 20}
