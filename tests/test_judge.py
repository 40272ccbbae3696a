"""Chapter 7's LLM judge (``llmscratch.judge``) against a fake judge on 127.0.0.1, and ROUGE-L on known values.

The fake server speaks Ollama's ``/api/chat`` (JSON lines) and the OpenAI protocol (one JSON reply, or
server-sent events), answers ``/api/tags`` and ``/v1/models``, records every request, and can misbehave on
demand: a reply that is not JSON, a stream that stops before its end, a body shorter than announced, an HTTP
error, an answer that comes too late; a reply given as a function ``reply(handler)`` writes the raw response
itself (tests/test_judge_http.py trickles bytes with it). No test waits for a real time-out longer than half a
second.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmscratch.judge import (
    API_KEY_VARIABLE, OPENAI_API_KEY_VARIABLE, JudgeResponseError, JudgeUnavailableError, ScoreReport,
    generate_model_scores, judge_available, query_model, query_score, rouge_l_scores, score_responses,
)
from llmscratch.settings import PACKAGE_DIR

# what the fake judge does instead of answering (any other string is the reply's text)
NOT_JSON, NO_END, SHORT_BODY, SLOW, SERVER_ERROR = "<not json>", "<no end>", "<short body>", "<slow>", "<500>"

ENTRIES = [  # in the book's format: instruction, input, expected output, and a model's response
    {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
     "output": "The car is as fast as lightning.", "model_response": "The car is as fast as a bullet."},
    {"instruction": "What type of cloud is typically associated with thunderstorms?", "input": "",
     "output": "The type of cloud typically associated with thunderstorms is cumulonimbus.",
     "model_response": "The type of cloud associated with thunderstorms is a cumulus cloud."},
    {"instruction": "Name the author of 'Pride and Prejudice'.", "input": "",
     "output": "Jane Austen.", "model_response": "The author of 'Pride and Prejudice' is Jane Austen."},
    {"instruction": "Convert 45 kilometers to meters.", "input": "",
     "output": "45 kilometers is 45000 meters.", "model_response": "45 kilometers is 45000 meters."},
    {"instruction": "Give a synonym for 'happy'.", "input": "", "output": "Joyful.", "model_response": "Glad."},
]


def format_fn(entry):
    """A stand-in for the book's Alpaca template: the prompt's construction is what these tests check."""
    return f"{entry['instruction']} | {entry['input']}"


class FakeJudge(ThreadingHTTPServer):
    """A judge on 127.0.0.1 (a free port) that answers ``replies`` in order, then ``default``."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        base = f"http://127.0.0.1:{self.server_address[1]}"
        self.ollama, self.openai = f"{base}/api/chat", f"{base}/v1/chat/completions"
        self.replies: list[str | tuple[int, dict]] = []
        self.default = "50"
        self.sse = False  # answer the OpenAI protocol with server-sent events although we ask for JSON
        self.models = ["llama3:latest"]
        self.requests: list[dict] = []  # {"path", "headers", "body"} of each request
        self.get_replies: list = []  # functions that answer the next GET requests instead of the model lists
        self.release = threading.Event()  # lets a SLOW answer go (at teardown)

    def prompts(self):
        return [request["body"]["messages"][0]["content"] for request in self.requests if request["body"]]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection; a body without a length ends when it closes

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
        if self.server.get_replies:
            self.server.get_replies.pop(0)(self)
        elif self.path == "/api/tags":
            self.send(200, json.dumps({"models": [{"name": name, "model": name} for name in self.server.models]}))
        elif self.path == "/v1/models":
            self.send(200, json.dumps({"object": "list", "data": [{"id": name} for name in self.server.models]}))
        else:
            self.send(404, "404 page not found")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        reply = self.server.replies.pop(0) if self.server.replies else self.server.default
        if reply == SLOW:
            self.server.release.wait(10)
            reply = self.server.default
        if callable(reply):
            reply(self)
        elif isinstance(reply, tuple):
            self.send(reply[0], json.dumps(reply[1]))
        elif reply == SERVER_ERROR:
            self.send(500, json.dumps({"error": "the judge ran out of memory"}))
        elif reply == SHORT_BODY:
            self.send(200, '{"message": {"content": "8', length=1000)
        elif self.path == "/api/chat":
            self.send(200, ollama_lines(reply, body["model"]))
        elif self.server.sse:
            self.send(200, sse_events(reply), content_type="text/event-stream")
        else:
            self.send(200, NOT_JSON if reply == NOT_JSON else json.dumps({
                "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                             "finish_reason": "stop"}]}))

    def send(self, status, text, *, content_type="application/json", length=None):
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(data)


def ollama_lines(reply, model):
    """Ollama's stream: the reply one character per line, then the last message, ``"done": true``."""
    if reply == NOT_JSON:
        return '{"model": "llama3", "message": {"content": "8"}, "done": false}\n{"message": {"content": "5"\n'
    lines = [{"model": model, "message": {"role": "assistant", "content": piece}, "done": False} for piece in reply]
    if reply != NO_END:
        lines.append({"model": model, "message": {"role": "assistant", "content": ""}, "done": True,
                      "done_reason": "stop"})
    return "".join(json.dumps(line) + "\n" for line in lines)


def sse_events(reply):
    """The OpenAI protocol's event stream: a role, the reply in pieces, a finish reason, a usage chunk without
    choices (vLLM's and OpenAI's with ``include_usage``), ``[DONE]``."""
    if reply == NOT_JSON:
        return 'data: {"choices": [{"delta": {"content": "8"\n\n'
    chunk = lambda delta, finish=None: {"object": "chat.completion.chunk",  # noqa: E731
                                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    events = [chunk({"role": "assistant"})] + [chunk({"content": piece}) for piece in reply]
    text = ": keep-alive\n\n" + "".join(f"data: {json.dumps(event)}\n\n" for event in events)
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"completion_tokens": len(reply)}}
    end = f"data: {json.dumps(chunk({}, 'stop'))}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
    return text if reply == NO_END else text + end


@pytest.fixture
def judge(monkeypatch):
    for name in (API_KEY_VARIABLE, OPENAI_API_KEY_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # a proxy of the machine must not see the fake judge
    with serving(FakeJudge()) as server:
        yield server


@contextlib.contextmanager
def serving(server):
    """``server`` answering in a thread for the ``with`` block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url(path="/api/chat"):
    """A URL on 127.0.0.1 where nothing listens (a port that was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def book_prompt(entry):
    return (f"Given the input `{format_fn(entry)}` and correct output `{entry['output']}`, score the model "
            f"response `{entry['model_response']}` on a scale from 0 to 100, where 100 is the best score. "
            f"Respond with the integer number only.")


# --- the protocols ---------------------------------------------------------------------------------------------


def test_ollama_request_is_the_books_and_the_stream_is_joined(judge):
    judge.replies = ["85"]
    assert query_model("How good?", url=judge.ollama) == "85"
    [request] = judge.requests
    assert request["path"] == "/api/chat" and "Authorization" not in request["headers"]
    assert request["body"] == {"model": "llama3", "messages": [{"role": "user", "content": "How good?"}],
                               "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}}


@pytest.mark.parametrize("sse", [False, True], ids=["json", "event-stream"])
def test_openai_compatible_json_or_event_stream(judge, sse):
    judge.sse, judge.replies = sse, ["100"]
    assert query_model("How good?", "qwen", judge.openai) == "100"
    assert judge.requests[0]["body"] == {"model": "qwen", "messages": [{"role": "user", "content": "How good?"}],
                                         "temperature": 0, "seed": 123, "stream": False}


@pytest.mark.parametrize("variables, protocol, expected", [
    ({API_KEY_VARIABLE: "k1"}, "ollama", "Bearer k1"),
    ({API_KEY_VARIABLE: "k1"}, "openai", "Bearer k1"),
    ({OPENAI_API_KEY_VARIABLE: "k2"}, "openai", "Bearer k2"),
    ({OPENAI_API_KEY_VARIABLE: "k2"}, "ollama", None),  # OpenAI's key is not sent to Ollama
    ({API_KEY_VARIABLE: "k1", OPENAI_API_KEY_VARIABLE: "k2"}, "openai", "Bearer k1"),
])
def test_api_key_from_the_environment(judge, monkeypatch, variables, protocol, expected):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    query_model("How good?", url=getattr(judge, protocol))
    assert judge.requests[0]["headers"].get("Authorization") == expected


@pytest.mark.parametrize("protocol, sse, fault, message", [
    (protocol, sse, fault, message)
    for protocol, sse in (("ollama", False), ("openai", False), ("openai", True))
    for fault, message in ((NOT_JSON, "sent something that is not JSON"),
                           (NO_END, "closed its (event )?stream before"),
                           (SHORT_BODY, "closed the connection in the middle of its reply"),
                           ((200, {"error": "model is loading"}), "sent an error: model is loading"))
    if not (fault == NO_END and protocol == "openai" and not sse)  # one JSON reply: a short body is its cut
])
def test_broken_replies(judge, protocol, sse, fault, message):
    judge.sse, judge.replies = sse, [fault]
    with pytest.raises(JudgeResponseError, match=message) as error:
        query_model("How good?", url=getattr(judge, protocol))
    assert "\n" not in str(error.value)


def test_slow_judge_times_out(judge):
    judge.replies = [SLOW]
    start = time.perf_counter()
    with pytest.raises(JudgeUnavailableError, match=r"answered at .*/api/chat \(no answer within 0.5 s\)"):
        query_model("How good?", url=judge.ollama, timeout=0.5)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_no_judge_is_one_line_that_says_what_to_start(capsys, path):
    url = closed_port_url(path)
    with pytest.raises(JudgeUnavailableError) as error:
        query_model("How good?", url=url)
    line = str(error.value)
    assert line.startswith(f"No LLM judge answered at {url} (") and "refused" in line
    assert "`ollama serve`, then `ollama pull llama3`" in line and "\n" not in line
    assert judge_available(url=url, timeout=1) is False
    assert capsys.readouterr().out == line + "\n"


def test_judge_available_checks_the_pulled_models(judge, capsys):
    assert judge_available(url=judge.ollama) is True  # "llama3" is "llama3:latest"
    assert judge_available("llama3:8b", judge.ollama) is False
    assert capsys.readouterr().out == (f"Ollama answers at {judge.ollama[:-len('/api/chat')]} but has no model "
                                       "'llama3:8b' (it has: llama3:latest): run `ollama pull llama3:8b`\n")
    assert judge_available("any name", judge.openai) is True  # llama.cpp's server answers to any model name
    assert [request["path"] for request in judge.requests] == ["/api/tags", "/api/tags", "/v1/models"]


def test_http_errors_say_what_to_do(judge):
    judge.replies = [(404, {"error": "model 'llama3' not found, try pulling it first"}),
                     (401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})]
    with pytest.raises(JudgeUnavailableError, match=r"HTTP 404 Not Found: model 'llama3' not found, try pulling it "
                                                    r"first\. Run `ollama pull llama3`"):
        query_model("How good?", url=judge.ollama)
    with pytest.raises(JudgeUnavailableError, match=f"HTTP 401 Unauthorized: Invalid API key. Set {API_KEY_VARIABLE}"):
        query_model("How good?", url=judge.openai)


def test_a_url_of_neither_protocol_is_an_error():
    with pytest.raises(ValueError, match=r"url must end in /api/chat \(Ollama\) or /chat/completions"):
        query_model("How good?", url="http://localhost:11434/api/generate")


# --- scoring ---------------------------------------------------------------------------------------------------


def test_generate_model_scores_asks_the_books_prompt(judge, capsys):
    judge.replies = ["85", " 40\n", "100", "0", "7"]
    scores = generate_model_scores(ENTRIES, "model_response", url=judge.ollama, format_fn=format_fn)
    assert scores == [85, 40, 100, 0, 7]
    assert judge.prompts()[1] == (
        "Given the input `What type of cloud is typically associated with thunderstorms? | ` and correct output "
        "`The type of cloud typically associated with thunderstorms is cumulonimbus.`, score the model response "
        "`The type of cloud associated with thunderstorms is a cumulus cloud.` on a scale from 0 to 100, where "
        "100 is the best score. Respond with the integer number only.")
    assert judge.prompts() == [book_prompt(entry) for entry in ENTRIES]
    assert capsys.readouterr().out == "Scored 5 of 5 entries\n"


def test_a_reply_that_is_no_score_is_asked_again_then_left_unscored(judge, capsys):
    judge.replies = ["Score: 90", "Score: 90", "eighty", "80", "101", "100", "-5", "5.5", "60"]
    report = score_responses(ENTRIES, "model_response", "llama3", judge.openai, format_fn=format_fn)
    assert report.per_entry == [None, 80, 100, None, 60]
    assert (report.scores, report.num_scored, report.num_entries, report.average) == ([80, 100, 60], 3, 5, 80.0)
    prompts = judge.prompts()
    assert prompts == [book_prompt(ENTRIES[i]) for i in (0, 0, 1, 1, 2, 2, 3, 3, 4)]  # one retry, no more
    assert capsys.readouterr().out == ("Could not convert score: Score: 90\nCould not convert score: 5.5\n"
                                       "Scored 3 of 5 entries (2 replies were not an integer from 0 to 100)\n")
    assert ScoreReport().average is None
    with pytest.raises(ValueError, match="tries must be an integer >= 1"):
        query_score("How good?", url=judge.ollama, tries=0)


def test_an_interrupted_run_resumes_where_it_stopped(judge, tmp_path, capsys):
    path = tmp_path / "scores" / "model1.json"
    judge.replies = ["10", "nope", "nope", SERVER_ERROR]  # the judge fails on the third entry
    with pytest.raises(JudgeUnavailableError, match="HTTP 500 .*: the judge ran out of memory"):
        generate_model_scores(ENTRIES, "model_response", url=judge.ollama, scores_path=path, format_fn=format_fn)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model1.json"]  # no temporary file left
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert [(index, entry["score"]) for index, entry in saved["entries"].items()] == [("0", 10), ("1", None)]

    judge.requests.clear()
    judge.replies = ["20", "30", "40", "50"]
    report = score_responses(ENTRIES, "model_response", url=judge.ollama, scores_path=path, format_fn=format_fn)
    assert judge.prompts() == [book_prompt(entry) for entry in ENTRIES[1:]]  # entry 0 not asked again, 1 is
    assert (report.per_entry, report.resumed) == ([10, 20, 30, 40, 50], 1)
    assert capsys.readouterr().out.endswith("Scored 5 of 5 entries; 1 came from the scores file\n")

    judge.requests.clear()
    changed = [dict(entry) for entry in ENTRIES[:4]]
    changed[3]["model_response"] = "45,000 meters."
    assert generate_model_scores(changed, "model_response", url=judge.ollama, scores_path=path,
                                 format_fn=format_fn) == [10, 20, 30, 50]  # default reply "50" for the changed one
    assert judge.prompts() == [book_prompt(changed[3])]
    judge.requests.clear()
    generate_model_scores(changed, "model_response", "llama3:70b", judge.ollama, scores_path=path,
                          format_fn=format_fn)
    assert len(judge.prompts()) == 4  # another judge scores everything afresh
    assert sorted(p.name for p in path.parent.iterdir()) == ["model1.json"]


def test_a_foreign_scores_file_is_refused(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text('{"accuracy": 0.9}', encoding="utf-8")
    with pytest.raises(ValueError, match="is not a scores file of generate_model_scores: delete it"):
        generate_model_scores(ENTRIES, "model_response", url=closed_port_url(), scores_path=path,
                              format_fn=format_fn)


def test_the_default_template_is_the_books(judge):
    pytest.importorskip("llmscratch.instruction", reason="chapter 7's instruction module is not written yet")
    generate_model_scores(ENTRIES[:1], "model_response", url=judge.ollama)
    assert judge.prompts()[0].startswith(
        "Given the input `Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nRewrite the sentence using a simile.\n\n### Input:\n"
        "The car is very fast.` and correct output `The car is as fast as lightning.`")


# --- ROUGE-L and the module's weight -----------------------------------------------------------------------------


def test_rouge_l_known_values():
    data = [
        {"output": "The car is as fast as lightning.", "response": "The car is as fast as lightning."},
        {"output": "Jane Austen.", "response": "Charles Dickens!"},
        # LCS of the words "the cat sat on the mat" / "the cat lay on the rug": "the cat on the", 4 of 6 each way
        {"output": "The cat sat on the mat.", "response": "the cat lay on the rug"},
        {"output": "He jumped quickly.", "response": "He jumps quickly."},  # the stemmer makes both "jump"
    ]
    assert rouge_l_scores(data, "response") == pytest.approx([100.0, 0.0, 200 / 3, 100.0])
    assert rouge_l_scores(data[:1], "output", reference_key="response") == pytest.approx([100.0])


def test_the_judge_imports_no_torch():
    """Scoring needs only the responses: the judge's modules load without torch (the package's own __init__,
    which brings the models, is bypassed)."""
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('llmscratch'); package.__path__ = [{str(PACKAGE_DIR)!r}]\n"
        "sys.modules['llmscratch'] = package\n"
        "import llmscratch.judge\n"
        "assert llmscratch.judge.generate_model_scores and 'torch' not in sys.modules, sorted(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
