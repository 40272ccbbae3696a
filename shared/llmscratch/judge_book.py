"""The book's Ollama helpers of section 7.8, as the chapter prints them.

``check_if_running`` looks for a process by name (the book uses it to check that ``ollama serve`` runs) and
``query_model`` sends one prompt to Ollama's ``/api/chat`` endpoint with ``urllib`` and joins the streamed reply.
The request asks for reproducible answers: ``seed`` 123, ``temperature`` 0 and a 2,048-token context
(``num_ctx``). These are the book's listings; the course's judge client beyond the book
(:func:`llmscratch.judge_http.query_model`: time-outs, OpenAI-compatible servers, clear errors) is what
:mod:`llmscratch.judge` and the ``evaluate`` command use. Introduced in ch07_finetune_instructions, 7.8.
"""

from __future__ import annotations

import json
import urllib.request

import psutil

__all__ = ["check_if_running", "query_model"]


def check_if_running(process_name):
    """Whether a process whose name contains ``process_name`` runs on this machine (the book's listing, 7.8)."""
    running = False
    for proc in psutil.process_iter(["name"]):
        if process_name in proc.info["name"]:
            running = True
            break
    return running


def query_model(
    prompt,
    model="llama3",
    url="http://localhost:11434/api/chat"
):
    """Ask an Ollama model ``prompt`` and return its whole answer (the book's listing, 7.8).

    Ollama streams one JSON object per line; each holds a piece of the answer in ``message.content``, and the
    last one (``"done": true``) may hold no message. There is no time-out: with no server this raises
    ``URLError``, and a server that never answers blocks (the course's client in :mod:`llmscratch.judge_http`
    has a deadline).
    """
    # Create the data payload as a dictionary
    data = {
        "model": model,
        "messages": [
            {"role": "user", "content": prompt}
        ],
        "options": {     # Settings below are required for deterministic responses
            "seed": 123,
            "temperature": 0,
            "num_ctx": 2048
        }
    }

    # Convert the dictionary to a JSON formatted string and encode it to bytes
    payload = json.dumps(data).encode("utf-8")

    # Create a request object, setting the method to POST and adding necessary headers
    request = urllib.request.Request(
        url,
        data=payload,
        method="POST"
    )
    request.add_header("Content-Type", "application/json")

    # Send the request and capture the response
    response_data = ""
    with urllib.request.urlopen(request) as response:
        # Read and decode the response
        while True:
            line = response.readline().decode("utf-8")
            if not line:
                break
            response_json = json.loads(line)
            if "message" in response_json:
                response_data += response_json["message"]["content"]

    return response_data
