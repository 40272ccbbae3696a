"""Talking to the LLM that judges the responses: the book's ``query_model`` and a check that a judge answers.

Introduced in ch07_finetune_instructions, 7.8. The book asks Llama 3 through Ollama's ``/api/chat``, which
streams one JSON object per line. ``query_model`` speaks the protocol its URL names:

- ``http://localhost:11434/api/chat`` (the default): Ollama, as the book, with ``seed`` 123, ``temperature`` 0
  and ``num_ctx`` 2048 in ``options``;
- any ``.../v1/chat/completions``: an OpenAI-compatible server (llama.cpp's ``llama-server``, vLLM, LM Studio,
  Ollama's own compatible endpoint), with ``temperature`` 0 and ``seed`` 123. We ask for one JSON reply and also
  read a streamed one (``data: {...}`` lines ending in ``data: [DONE]``).

A server that wants a key gets ``Authorization: Bearer <key>``, read from the environment at each call and never
stored or printed:

- ``LLMSCRATCH_JUDGE_API_KEY`` goes to the judge of either protocol (Ollama behind a proxy that checks keys, or an
  OpenAI-compatible server);
- ``OPENAI_API_KEY``, when ``LLMSCRATCH_JUDGE_API_KEY`` is not set, goes only to a ``.../chat/completions`` URL;
- neither goes over plain ``http://`` to another machine: a key set for such a URL is a ``ValueError`` that says
  to use ``https://`` (or to unset the variable); ``http://`` to this machine (``localhost``, ``127.0.0.1``,
  ``[::1]``) is fine.

``timeout`` is the whole request's deadline: connecting, the server's wait and every byte of the reply, so a
server that answers a byte at a time fails as surely as a silent one; a reply over 4 MiB is refused as well.

Failures raise a ``JudgeError`` whose message is one line: ``JudgeUnavailableError`` when nothing usable
answers (connection refused, time-out, an HTTP error such as a model that was never pulled), with what was
tried and what to start (``ollama serve``, ``ollama pull llama3``); ``JudgeResponseError`` when the reply is
broken (not JSON, cut off mid-stream). ``judge_available`` prints that line and returns ``False`` instead, so a
notebook can go on without a judge: ``if judge_available(): ...``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

OLLAMA_CHAT_URL = "http://localhost:11434/api/chat"  # the book's URL
DEFAULT_TIMEOUT = 120.0  # seconds for a whole request: the connection, the judge's thinking, the whole reply
MAX_REPLY_BYTES = 4 * 2**20  # a score is a few bytes; Ollama's stream spends about 150 per token
API_KEY_VARIABLE = "LLMSCRATCH_JUDGE_API_KEY"
OPENAI_API_KEY_VARIABLE = "OPENAI_API_KEY"  # the fallback for OpenAI-compatible servers


class JudgeError(RuntimeError):
    """The judge could not give an answer; the message is one line that says why (ch07_finetune_instructions,
    7.8). Introduced in ch07_finetune_instructions, 7.8."""


class JudgeUnavailableError(JudgeError):
    """No usable judge answered at the URL: refused, too slow, or an HTTP error; the message says what was
    tried and what to start. Introduced in ch07_finetune_instructions, 7.8."""


class JudgeResponseError(JudgeError):
    """The judge answered, but its reply is broken: not JSON, not the protocol's shape, or cut off
    mid-stream. Introduced in ch07_finetune_instructions, 7.8."""


def query_model(prompt, model="llama3", url=OLLAMA_CHAT_URL, *, timeout=DEFAULT_TIMEOUT):
    """The judge's reply to ``prompt``, as one string. Introduced in ch07_finetune_instructions, 7.8.

    The book's request to Ollama's ``/api/chat`` (a URL ending in ``/api/chat``), or, for a URL ending in
    ``/chat/completions``, the same request in the OpenAI protocol. ``timeout`` (seconds) bounds the whole
    request, from the connection to the reply's last byte. Raises ``JudgeUnavailableError`` or
    ``JudgeResponseError``; a bad ``url`` or ``timeout``, or an API key that would travel unencrypted, is a
    ``ValueError``.
    """
    if _is_openai(url):
        return _query_openai(prompt, model, url, timeout)
    data = {
        "model": model,
        "messages": [
            {"role": "user", "content": prompt}
        ],
        "options": {  # settings below are required for deterministic responses
            "seed": 123,
            "temperature": 0,
            "num_ctx": 2048
        }
    }
    response_data = ""
    done = False
    for line in _post(url, data, model, timeout).splitlines():  # one JSON object per line
        if line.strip():
            response_json = _parse_json(line, url)
            if _has_message(response_json):  # the book: if "message" in response_json (the last line has none)
                response_data += _field(response_json, url, "message", "content")
            done = response_json.get("done") is True
    if not done:
        raise JudgeResponseError(f"The judge at {url} closed its stream before the last message "
                                 f'("done": true); the reply so far was {response_data[:60]!r}')
    return response_data


def _has_message(response_json):
    """Whether a line of Ollama's stream carries a piece of the reply (or an error, or is not an object: then
    ``_field`` says what is wrong); its documented last line, ``{"done": true, ...}``, has no ``message``."""
    return not isinstance(response_json, dict) or "message" in response_json or "error" in response_json


def _query_openai(prompt, model, url, timeout):
    """``query_model`` for an OpenAI-compatible ``.../chat/completions`` URL; reads a JSON or an SSE reply."""
    data = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "temperature": 0, "seed": 123, "stream": False}
    body = _post(url, data, model, timeout)
    if not any(line.startswith("data:") for line in body.splitlines()):  # what we asked for: one JSON object
        return _field(_parse_json(body, url), url, "choices", 0, "message", "content") or ""
    reply, done = "", False
    for line in body.splitlines():  # a server that streams anyway (server-sent events)
        if not line.startswith("data:"):
            continue  # blank separators, ": keep-alive" comments, "event:" names
        payload = line[len("data:"):].strip()
        if payload == "[DONE]":
            done = True
            break
        for choice in _field(_parse_json(payload, url), url, "choices")[:1]:  # a last usage chunk has none
            reply += (choice.get("delta") or choice.get("message") or {}).get("content") or ""
            done = done or choice.get("finish_reason") is not None
    if not done:
        raise JudgeResponseError(f"The judge at {url} closed its event stream before its end (data: [DONE]); "
                                 f"the reply so far was {reply[:60]!r}")
    return reply


def judge_available(model="llama3", url=OLLAMA_CHAT_URL, *, timeout=5.0):
    """``True`` when a judge answers at ``url`` (for Ollama: with ``model`` pulled); otherwise print one line
    that says what was tried and what to start, and return ``False``. Introduced in ch07_finetune_instructions,
    7.8.

    For Ollama it asks ``/api/tags``, which lists the pulled models (``llama3`` matches ``llama3:latest``). For
    an OpenAI-compatible server it asks ``/v1/models`` and only checks that the server answers: llama.cpp's
    server, for one, answers to any model name.
    """
    _is_openai(url)  # a URL of neither protocol is an error, not a missing judge
    try:
        names = _list_models(url, model, timeout)
    except JudgeError as error:
        print(error)
        return False
    if _is_openai(url) or model in names or f"{model}:latest" in names:
        return True
    print(f"Ollama answers at {_base(url)} but has no model {model!r} (it has: {', '.join(names) or 'none'}): "
          f"run `ollama pull {model}`")
    return False


def _list_models(url, model, timeout):
    """The model names the server at ``url`` lists (Ollama's ``/api/tags``, OpenAI's ``/v1/models``)."""
    if _is_openai(url):
        reply = _parse_json(_get(url.rstrip("/")[: -len("/chat/completions")] + "/models", url, model, timeout), url)
        return [str(item.get("id")) for item in _field(reply, url, "data") if isinstance(item, dict)]
    reply = _parse_json(_get(_base(url) + "/api/tags", url, model, timeout), url)
    return [str(item.get("name")) for item in _field(reply, url, "models") if isinstance(item, dict)]


# --- HTTP ----------------------------------------------------------------------------------------------------


def _is_openai(url):
    """``True`` for an OpenAI-compatible URL, ``False`` for Ollama's; anything else is a ``ValueError``."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must be an http:// or https:// URL ending in /api/chat (Ollama) or /chat/completions "
                         f"(an OpenAI-compatible server), got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        return True
    if path.endswith("/api/chat"):
        return False
    raise ValueError(f"url must end in /api/chat (Ollama) or /chat/completions (an OpenAI-compatible server), "
                     f"got {url!r}")


def _base(url):
    """``http://host:port`` of ``url``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _headers(url):
    """The request's headers, with the API key when one is set for ``url``: never over plain http to another
    machine (``ValueError``)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    names = (API_KEY_VARIABLE, OPENAI_API_KEY_VARIABLE) if _is_openai(url) else (API_KEY_VARIABLE,)
    name = next((name for name in names if os.environ.get(name)), None)
    if name is None:
        return headers
    parts = urlsplit(url)
    if parts.scheme != "https" and not _is_loopback(parts.hostname):
        raise ValueError(f"refusing to send the API key of {name} unencrypted to {parts.hostname} (a plain http:// "
                         f"URL to another machine): use the judge's https:// URL, or unset {name} if it needs no key")
    headers["Authorization"] = f"Bearer {os.environ[name]}"
    return headers


def _is_loopback(host):
    """Whether ``host`` is this machine: ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _post(url, data, model, timeout):
    """POST ``data`` as JSON; the whole reply as text, all of it within ``timeout`` seconds."""
    return _request("POST", url, url, model, timeout, json=data)


def _get(address, url, model, timeout):
    return _request("GET", address, url, model, timeout)


def _request(method, address, url, model, timeout, **kwargs):
    """The reply's text; ``JudgeUnavailableError`` for a refused connection, an HTTP error or a reply that is
    not complete within ``timeout`` seconds (``requests``' own time-out bounds each read only, so a worker
    thread makes the request while this one waits at most ``timeout``), ``JudgeResponseError`` for a reply
    cut off mid-way or over ``MAX_REPLY_BYTES``. ``url`` (the chat URL) names the judge in messages."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    headers = _headers(url)
    deadline = time.monotonic() + timeout
    outcome = {}

    def fetch():
        try:
            outcome["text"] = _fetch(method, address, url, model, timeout, deadline, headers=headers, **kwargs)
        except BaseException as error:  # handed to the waiting thread
            outcome["error"] = error

    worker = threading.Thread(target=fetch, name="llmscratch-judge-request", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))  # the worker gives up by itself at its next read
    if "error" in outcome:
        raise outcome["error"]
    if "text" not in outcome:
        raise JudgeUnavailableError(_unreachable(url, model, f"no answer within {timeout:g} s"))
    return outcome["text"]


def _fetch(method, address, url, model, timeout, deadline, **kwargs):
    """``_request``'s work, in its worker thread."""
    try:
        with requests.request(method, address, timeout=timeout, stream=True, **kwargs) as response:
            if response.status_code >= 400:
                raise JudgeUnavailableError(_http_error(response, _read(response, deadline), address, url, model))
            body = _read(response, deadline)
    except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError) as error:
        raise JudgeResponseError(f"The judge at {url} closed the connection in the middle of its reply "
                                 f"({_root(error)})") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        waited = isinstance(error, (requests.Timeout, urllib3.exceptions.TimeoutError))
        waited = waited or "timed out" in str(_root(error)).lower()
        reason = f"no answer within {timeout:g} s" if waited else str(_root(error))
        raise JudgeUnavailableError(_unreachable(url, model, reason)) from None
    if len(body) > MAX_REPLY_BYTES:
        raise JudgeResponseError(f"The judge at {url} sent a reply of more than {MAX_REPLY_BYTES // 2**20} MiB, "
                                 f"which is no score: check the URL and the model")
    return body.decode("utf-8", errors="replace")


def _read(response, deadline):
    """The body of ``response`` as it comes, up to ``MAX_REPLY_BYTES`` + 1 bytes; ``requests.Timeout`` once
    ``deadline`` has passed (read1: one read of the socket at a time, so a server sending a byte at a time cannot
    hold it longer)."""
    raw = response.raw
    if hasattr(raw, "read1"):  # urllib3 >= 2.3
        pieces = iter(lambda: raw.read1(65536, decode_content=True), b"")
    else:
        pieces = response.iter_content(chunk_size=65536)
    body = bytearray()
    for piece in pieces:
        body += piece
        if time.monotonic() > deadline:  # never a partial reply, even if the waiting thread has not said so yet
            raise requests.Timeout("the whole reply took too long")
        if len(body) > MAX_REPLY_BYTES:
            break  # the caller says so
    return bytes(body)


def _unreachable(url, model, reason):
    """The one line that says what was tried and what to start."""
    return (f"No LLM judge answered at {url} ({reason}). Start one: `ollama serve`, then `ollama pull {model}` "
            f"(or pass url= of an OpenAI-compatible server, .../v1/chat/completions).")


def _http_error(response, body, address, url, model):
    """One line for an HTTP error, with the server's own ``error`` message when its ``body`` has one."""
    detail = ""
    try:
        detail = json.loads(body).get("error", "")
        detail = detail.get("message", "") if isinstance(detail, dict) else str(detail)
    except (ValueError, AttributeError):
        pass
    line = f"The judge at {address} answered HTTP {response.status_code} {response.reason}"
    line += f": {' '.join(detail.split())[:200]}" if detail else ""
    if response.status_code in (401, 403):
        return f"{line}. Set {API_KEY_VARIABLE} (or {OPENAI_API_KEY_VARIABLE}) to the server's API key."
    if response.status_code == 404 and address == url and not _is_openai(url):
        return f"{line}. Run `ollama pull {model}`, or check the URL."
    return f"{line}."


def _root(error):
    """The innermost cause of ``error``: requests wraps urllib3's errors (``MaxRetryError.reason``, or the first
    argument), which wrap the socket's (``[Errno 111] Connection refused``)."""
    for _ in range(10):
        inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException):
            inner = error.args[0] if error.args and isinstance(error.args[0], BaseException) else error.__cause__
        if inner is None:
            break
        error = inner
    return str(error) or type(error).__name__


def _parse_json(text, url):
    try:
        return json.loads(text)
    except ValueError:
        raise JudgeResponseError(f"The judge at {url} sent something that is not JSON: {text.strip()[:80]!r}") \
            from None


def _field(value, url, *keys):
    """``value[keys[0]][keys[1]]...``, or a ``JudgeResponseError`` that shows the server's ``error`` field."""
    found = value
    try:
        for key in keys:
            found = found[key]
    except (KeyError, IndexError, TypeError):
        error = value.get("error") if isinstance(value, dict) else None
        detail = error.get("message", error) if isinstance(error, dict) else error
        what = f"an error: {detail}" if detail else f"no {'/'.join(map(str, keys))}: {json.dumps(value)[:80]}"
        raise JudgeResponseError(f"The judge at {url} sent {what}") from None
    return found
