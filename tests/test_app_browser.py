"""The web app in a real browser (issue 24): Playwright drives Debian's chromium against the page served on a free
port with a tiny random GPT and a tiny spam classifier trained here in seconds. It types, clicks and reads what a
learner reads: the answer and its model, the book's two messages as spam / não spam, the first tokens before the
answer is complete, a message in the page for an empty or a 100,000-character message, two users at once.

The browser: ``LLMSCRATCH_CHROMIUM`` (``.ci/run`` installs Debian's chromium and sets it), else
``/usr/bin/chromium``. Without it the tests skip, except in CI (``CI=true``), where a missing browser fails.
Set ``LLMSCRATCH_APP_SHOTS=DIR`` to save a screenshot of each tab there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch

from llmscratch.app_models import (RANDOM_TINY_LABEL, classify_message, served_chat, served_classifier,
                                   served_generator)
from llmscratch.classification import calc_loss_batch
from llmscratch.classification_data import load_spam_data
from llmscratch.classifier import prepare_classifier
from llmscratch.gpt import GPT_CONFIG_TINY, GPTModel
from llmscratch.gpt2_tokenizer import gpt2_tokenizer
from llmscratch.kv_cache import CachedDecoder

CHROMIUM = os.environ.get("LLMSCRATCH_CHROMIUM", "/usr/bin/chromium")
# Chromium in a closed network: no sandbox (containers), no GPU, and none of its own background connections
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BOOK_MESSAGES = {"spam": "You are a winner you have been specially selected to receive $1000 cash or a $2000 award.",
                 "não spam": "Hey, just wanted to check if we're still on for dinner tonight? Let me know!"}
CLASSIFIER_LABEL = "classificador de spam treinado no teste, GPT pequeno, pesos aleatórios — NÃO é o GPT-2"
TIMEOUT_MS = 20_000
# Gradio's queue (with pandas 3) warns about its own code, not ours
pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")


def _missing_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -r requirements.txt)"
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set LLMSCRATCH_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _missing_browser()
    if missing and os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI runs the browser tests: {missing}")
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def train_tiny_classifier():
    """A 2-layer GPT from random weights, every layer trained on the book's two messages and 40 others of the SMS
    Spam Collection until it classifies the two right, each with at least 75% (a few seconds)."""
    data = load_spam_data()
    short = data[data["Text"].str.len() < 120]
    rows = pd.concat([short[short["Label"] == "spam"][:20], short[short["Label"] == "ham"][:20]])
    texts = [*BOOK_MESSAGES.values(), *rows["Text"]]
    labels = [1, 0, *(rows["Label"] == "spam").astype(int)]
    tokenizer, max_length = gpt2_tokenizer(), 32
    ids = [tokenizer.encode(text)[:max_length] for text in texts]
    inputs = torch.tensor([row + [50256] * (max_length - len(row)) for row in ids])  # (42, 32)
    targets = torch.tensor(labels)
    torch.manual_seed(123)
    model = prepare_classifier(GPTModel({**GPT_CONFIG_TINY, "context_length": 64, "drop_rate": 0.0}),
                               trainable_layers="all")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    served = served_classifier(model, CLASSIFIER_LABEL, max_length=max_length)
    for epoch in range(30):
        model.train()
        for batch in torch.randperm(len(texts)).split(8):
            optimizer.zero_grad()
            calc_loss_batch(inputs[batch], targets[batch], model, "cpu").backward()
            optimizer.step()
        model.eval()
        if all(classify_message(served, text)[1][answer] >= 0.75 for answer, text in BOOK_MESSAGES.items()):
            return served  # both right, with a probability of at least 75%
    raise AssertionError("the tiny classifier did not learn the book's two messages in 30 epochs")


@pytest.fixture(scope="module")
def app_url():
    from llmscratch.app import launch_app
    from llmscratch.ports import free_port

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and immune to a busy machine
    torch.manual_seed(123)
    gpt = GPTModel({**GPT_CONFIG_TINY, "drop_rate": 0.0})
    models = {"generate": served_generator(gpt, RANDOM_TINY_LABEL), "classify": train_tiny_classifier(),
              "chat": served_chat(gpt, RANDOM_TINY_LABEL)}
    port = free_port()
    demo = launch_app(models, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    torch.set_num_threads(threads)


@pytest.fixture
def slow_tokens(monkeypatch):
    """Each token takes 40 ms, as on a slow CPU: the page has time to show the text while it grows."""
    step = CachedDecoder.next_token_logits

    def slow(self, idx):
        time.sleep(0.04)
        return step(self, idx)

    monkeypatch.setattr(CachedDecoder, "next_token_logits", slow)


def open_page(browser, url, tab=None):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    if tab:
        page.get_by_role("tab", name=tab).click()
    return page


def shot(page, name):
    folder = os.environ.get("LLMSCRATCH_APP_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def wait_text(page, selector, fragment):
    page.wait_for_function("([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)",
                           arg=[selector, fragment])
    return page.locator(selector).inner_text()


def test_generate_tab_answers_and_names_the_model(browser, app_url):
    page = open_page(browser, app_url)
    page.locator("#gen-prompt textarea").fill("Every effort moves you")
    page.locator("#gen-button").click()
    status = wait_text(page, "#gen-status", "Pronto")
    answer = page.locator("#gen-output textarea").input_value()
    assert answer.startswith("Every effort moves you") and len(answer) > len("Every effort moves you")
    assert "GPT pequeno, pesos aleatórios — NÃO é o GPT-2" in status
    shot(page, "1_gerar_texto")
    page.close()


def test_classifier_tab_answers_the_books_messages(browser, app_url):
    page = open_page(browser, app_url, "Classificar mensagem")
    for answer, message in BOOK_MESSAGES.items():
        page.locator("#cls-input textarea").fill(message)
        page.locator("#cls-button").click()
        verdict = wait_text(page, "#cls-verdict", f"Resposta: {answer} (")
        assert CLASSIFIER_LABEL in verdict
        assert page.locator("#cls-probs").inner_text().count("%") == 2  # both classes' probabilities
    shot(page, "2_classificar_mensagem")
    page.close()


def test_chat_streams_the_first_tokens_before_the_answer_is_complete(browser, app_url, slow_tokens):
    page = open_page(browser, app_url, "Conversar")
    tokens = page.locator("#chat-tokens input[type=number]")
    tokens.fill("40")
    tokens.press("Tab")
    page.locator("#chat-input textarea").fill("Name a color.")
    page.locator("#chat-button").click()
    seen = []
    page.wait_for_selector("#chat-box .bot")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while "Respondendo" in page.locator("#chat-status").inner_text() or not seen:
        seen.append(page.locator("#chat-box .bot").last.inner_text())
        assert time.monotonic() < deadline, seen[-3:]
        time.sleep(0.05)
    final = wait_text(page, "#chat-box", "NÃO é o GPT-2")
    final = page.locator("#chat-box .bot").last.inner_text()
    partial = [text for text in seen if text.strip() and len(text) < len(final)]
    assert partial, f"no partial answer was shown: {seen[:5]} ... {final!r}"
    assert "GPT pequeno, pesos aleatórios — NÃO é o GPT-2" in final
    shot(page, "3_conversar")
    page.close()


def test_bad_input_gets_a_message_and_the_server_goes_on(browser, app_url):
    page = open_page(browser, app_url)
    page.locator("#gen-prompt textarea").fill("")
    page.locator("#gen-button").click()
    assert "A mensagem está vazia" in wait_text(page, "#gen-status", "vazia")
    page.get_by_role("tab", name="Conversar").click()
    page.locator("#chat-input textarea").fill("x" * 100_000)
    page.locator("#chat-button").click()
    assert "até 4.000" in wait_text(page, "#chat-status", "100.000 caracteres")
    page.get_by_role("tab", name="Gerar texto").click()
    page.locator("#gen-prompt textarea").fill("Every effort moves you")
    page.locator("#gen-button").click()
    wait_text(page, "#gen-status", "Pronto")  # still serving
    page.close()


def test_two_users_at_once(browser, app_url, slow_tokens):
    pages = [open_page(browser, app_url) for _ in range(2)]
    for page in pages:
        tokens = page.locator("#gen-tokens input[type=number]")
        tokens.fill("20")
        tokens.press("Tab")
        page.locator("#gen-prompt textarea").fill("Every effort moves you")
    for page in pages:
        page.locator("#gen-button").click()
    answers = []
    for page in pages:
        wait_text(page, "#gen-status", "Pronto")
        answers.append(page.locator("#gen-output textarea").input_value())
        page.close()
    assert answers[0] == answers[1] and len(answers[0]) > len("Every effort moves you")  # greedy: the same text


@pytest.mark.slow  # a new Python process imports torch and Gradio
def test_the_command_line_serves_the_page(tmp_path):
    """``python -m llmscratch app`` with a file: the page answers on the port, the tab's label is printed."""
    from llmscratch.ports import free_port
    from llmscratch.checkpoints import save_checkpoint

    torch.manual_seed(123)
    config = {**GPT_CONFIG_TINY, "context_length": 64}
    checkpoint = save_checkpoint(tmp_path / "checkpoint.pt", GPTModel(config), None, config=config)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "llmscratch", "app", "--checkpoint", str(checkpoint), "--port",
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the app did not answer within 60 s"
                time.sleep(0.3)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert ("Gerar texto (text generation): checkpoint de pré-treinamento checkpoint.pt, GPT pequeno, "
            "pesos aleatórios — NÃO é o GPT-2") in output
