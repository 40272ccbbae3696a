"""The judge's HTTP side hardened (issue 20): Ollama's documented last stream line, a deadline for the whole
request, a cap on the reply's size, no API key over plain http to another machine, clear errors for bad
arguments. Against the fake judge of test_judge on 127.0.0.1; the slow servers here trickle bytes for a few
seconds at most, and the fixed code gives up after one.
"""

from __future__ import annotations

import json
import time

import pytest
import test_judge
from test_judge import ENTRIES, format_fn

from llmscratch import judge_http
from llmscratch.judge import (
    API_KEY_VARIABLE, OPENAI_API_KEY_VARIABLE, JudgeResponseError, JudgeUnavailableError, generate_model_scores,
    judge_available, query_model,
)

judge = test_judge.judge  # the fixture of the fake judge on 127.0.0.1
TRICKLE_FOR = 4.0  # seconds a trickling server keeps sending (the code before the fix waited all of it)


def write_head(handler, content_type="application/json"):
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.end_headers()
    handler.wfile.flush()


def trickle(data: bytes, handler, interval=0.2):
    """Send ``data`` a byte every ``interval`` seconds, for ``TRICKLE_FOR`` seconds at most or until the test
    ends (the server's ``release``)."""
    end = time.monotonic() + TRICKLE_FOR
    for byte in data:
        if handler.server.release.wait(interval) or time.monotonic() > end:
            return
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()


def trickled_body(handler):
    write_head(handler)
    text = test_judge.ollama_lines("85", "llama3") if handler.path == "/api/chat" else json.dumps(
        {"choices": [{"message": {"content": "85"}, "finish_reason": "stop"}]})
    trickle(text.encode(), handler)


def trickled_head(handler):
    trickle(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}", handler)


# --- item 1: Ollama's documented last line -----------------------------------------------------------------------


def test_ollama_last_line_without_message_is_the_end(judge):
    """Ollama's /api/chat documents its last streamed line as ``{"model": ..., "done": true, ...}``, with no
    ``message``; the book reads it with ``if "message" in response_json``."""
    def documented(handler):
        lines = [{"model": "llama3", "created_at": "2024-05-01T00:00:00Z",
                  "message": {"role": "assistant", "content": piece}, "done": False} for piece in "85"]
        lines.append({"model": "llama3", "created_at": "2024-05-01T00:00:01Z", "done": True, "done_reason": "stop",
                      "total_duration": 4883583458, "eval_count": 2})
        handler.send(200, "".join(json.dumps(line) + "\n" for line in lines))

    judge.replies = [documented]
    assert query_model("How good?", url=judge.ollama) == "85"


def test_ollama_error_line_is_still_an_error(judge):
    judge.replies = [lambda handler: handler.send(200, json.dumps({"model": "llama3", "message": {"content": "8"},
                                                                   "done": False}) + '\n{"error": "out of memory"}\n')]
    with pytest.raises(JudgeResponseError, match="sent an error: out of memory"):
        query_model("How good?", url=judge.ollama)


# --- item 2: one deadline for the whole request, a cap on the reply ----------------------------------------------


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
@pytest.mark.parametrize("reply", [trickled_body, trickled_head], ids=["body", "headers"])
def test_a_trickling_judge_times_out_in_time(judge, protocol, reply):
    judge.replies = [reply]
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailableError, match=r"\(no answer within 1 s\)"):
        query_model("How good?", url=getattr(judge, protocol), timeout=1)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
def test_judge_available_is_bounded_by_its_timeout(judge, capsys, protocol):
    judge.get_replies = [trickled_body]
    start = time.perf_counter()
    assert judge_available(url=getattr(judge, protocol), timeout=1) is False
    assert time.perf_counter() - start < 2.0
    assert "(no answer within 1 s)" in capsys.readouterr().out


def test_a_huge_reply_is_refused(judge):
    line = json.dumps({"model": "llama3", "message": {"content": "8" * 1000}, "done": False}) + "\n"
    body = line * (5 * 2**20 // len(line)) + json.dumps({"model": "llama3", "done": True}) + "\n"  # 5 MiB
    judge.replies = [lambda handler: handler.send(200, body)]
    with pytest.raises(JudgeResponseError, match=r"sent a reply of more than 4 MiB, which is no score"):
        query_model("How good?", url=judge.ollama)


def test_a_long_reply_is_echoed_cut(judge, capsys):
    judge.replies = ["blah " * 200_000] * 2  # 1 MB, twice: no score
    assert generate_model_scores(ENTRIES[:1], "model_response", url=judge.openai, format_fn=format_fn) == []
    out = capsys.readouterr().out
    assert out.startswith("Could not convert score: blah blah") and "... (1,000,000 characters in all)\n" in out
    assert len(out) < 400


# --- item 4: no API key over plain http to another machine ----------------------------------------------------


@pytest.mark.parametrize("variable, url", [
    (API_KEY_VARIABLE, "http://judge.invalid:11434/api/chat"),
    (API_KEY_VARIABLE, "http://judge.invalid/v1/chat/completions"),
    (OPENAI_API_KEY_VARIABLE, "http://192.0.2.7:8080/v1/chat/completions"),
])
def test_no_key_over_plain_http_to_another_machine(monkeypatch, variable, url):
    for name in (API_KEY_VARIABLE, OPENAI_API_KEY_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "secret")
    message = rf"refusing to send the API key of {variable} unencrypted to .*: use the judge's https:// URL, or unset"
    with pytest.raises(ValueError, match=message) as error:
        query_model("How good?", url=url, timeout=1)
    assert "secret" not in str(error.value)
    with pytest.raises(ValueError, match=message):
        judge_available(url=url, timeout=1)


def test_where_a_key_may_go(monkeypatch):
    monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
    monkeypatch.setenv(OPENAI_API_KEY_VARIABLE, "k2")
    for url in ("https://judge.example/v1/chat/completions", "http://localhost:8080/v1/chat/completions",
                "http://127.0.0.2:8080/v1/chat/completions", "http://[::1]:8080/v1/chat/completions"):
        assert judge_http._headers(url)["Authorization"] == "Bearer k2", url
    assert "Authorization" not in judge_http._headers("http://192.0.2.7:11434/api/chat")  # OpenAI's key: not Ollama's


# --- item 5: bad arguments are ValueErrors ----------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, 11434, "localhost:11434/api/chat", "ftp://judge.example/api/chat"])
def test_a_url_that_is_no_http_url_is_a_value_error(url):
    with pytest.raises(ValueError, match=r"url must be an http:// or https:// URL ending in /api/chat"):
        query_model("How good?", url=url)


@pytest.mark.parametrize("timeout", [None, 0, -1, float("nan"), float("inf"), "5"])
def test_a_timeout_that_is_no_number_of_seconds_is_a_value_error(judge, timeout):
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        query_model("How good?", url=judge.ollama, timeout=timeout)
    assert judge.requests == []
