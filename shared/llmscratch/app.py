"""The course's web app: one page, three tabs, for the models of chapters 5, 6 and 7 (beyond the book).

Introduced in ch05_pretraining ("Gerar texto": continue a text with a pretrained GPT or GPT-2), and used again in
ch06_finetune_classification ("Classificar mensagem": spam or não spam, with both probabilities) and
ch07_finetune_instructions ("Conversar": instructions to a finetuned model, the answer streamed token by token
with the KV cache). Every answer names the model that made it. The book's repository builds one Chainlit app per
chapter, which runs as its own server; Gradio's page also renders inside a notebook (JupyterLab, and Colab through
its port proxy), so the course uses Gradio.

- ``build_app(models)``: the ``gr.Blocks`` (for tests, or to launch yourself); ``models`` maps a tab
  (``"generate"``, ``"classify"``, ``"chat"``) to a ``ServedModel`` (``llmscratch.app_models``); a tab without a
  model says how to get one.
- ``show_app(generator=..., classifier=..., chat=...)``: the page inside a notebook, on 127.0.0.1 and a free port.
- ``launch_app(models, host, port)``: the page of ``python -m llmscratch app`` (``llmscratch.cli_app``).

The handlers are ``llmscratch.app_models``' (tested without a browser). Requests wait in Gradio's queue, two at a
time; each has its own KV cache and random generator, so two users at once share only the (read-only) weights.
Gradio runs offline: no analytics, no share links, system fonts.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before Gradio is imported: it never calls home
import gradio as gr  # noqa: E402

from .ports import free_port  # noqa: E402
from .app_models import (MAX_MESSAGE_CHARS, MAX_NEW_TOKENS, TABS, AppInputError, ServedModel, chat_reply,  # noqa: E402
                         classify_message, generate_text, load_served)

TAB_NAMES = {"generate": "Gerar texto", "classify": "Classificar mensagem", "chat": "Conversar"}
# The book's two messages of 6.8: spam, and not spam
BOOK_MESSAGES = ("You are a winner you have been specially selected to receive $1000 cash or a $2000 award.",
                 "Hey, just wanted to check if we're still on for dinner tonight? Let me know!")
NO_MODEL = {
    "generate": "um checkpoint de pré-treinamento (capítulo 5): `python -m llmscratch pretrain`, depois "
                "`python -m llmscratch app --checkpoint runs/pretrain/checkpoint.pt` (ou `--gpt2 124M`)",
    "classify": "um classificador do capítulo 6: `python -m llmscratch finetune-classifier`, depois "
                "`python -m llmscratch app --checkpoint runs/classifier/classifier.pt`",
    "chat": "um modelo ajustado por instruções (capítulo 7): `python -m llmscratch finetune-instructions`, depois "
            "`python -m llmscratch app --checkpoint` com o arquivo `.pth` que ele salvou",
}
WARNING = "⚠️ "
THEME = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts


def _controls(prefix, tokens, temperature):
    with gr.Row():
        max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=tokens, step=1, label="Máximo de tokens novos",
                               elem_id=f"{prefix}-tokens")
        temp = gr.Slider(0.0, 2.0, value=temperature, step=0.05, label="Temperatura (0: sempre o mais provável)",
                         elem_id=f"{prefix}-temperature")
        top_k = gr.Number(value=0, minimum=0, precision=0, label="Top-k (0: sem filtro)", elem_id=f"{prefix}-top-k")
    return max_tokens, temp, top_k


def _generate_tab(served):
    gr.Markdown(f"Continua um texto, um token por vez (o `generate` do capítulo 5, com KV cache). "
                f"**Modelo:** {served.label}")
    prompt = gr.Textbox(label=f"Início do texto (até {MAX_MESSAGE_CHARS:,} caracteres)".replace(",", "."),
                        value="Every effort moves you", lines=2, elem_id="gen-prompt")
    max_tokens, temp, top_k = _controls("gen", 50, 0.0)
    button = gr.Button("Gerar", variant="primary", elem_id="gen-button")
    output = gr.Textbox(label="Texto gerado", lines=6, interactive=False, elem_id="gen-output")
    status = gr.Markdown(elem_id="gen-status")

    def run(text, tokens, temperature, k):
        start, made, partial = time.perf_counter(), f"*Modelo: {served.label}*", ""
        try:
            for partial in generate_text(served, text, tokens, temperature, k):
                yield partial, f"Gerando… {made}"
        except AppInputError as error:
            yield "", WARNING + str(error)
            return
        yield partial, f"Pronto em {time.perf_counter() - start:.1f} s. {made}".replace(".", ",", 1)

    inputs = [prompt, max_tokens, temp, top_k]
    button.click(run, inputs, [output, status], concurrency_id="model")
    prompt.submit(run, inputs, [output, status], concurrency_id="model")


def _classify_tab(served):
    gr.Markdown(f"Diz se uma mensagem é spam, com a probabilidade de cada classe (o `classify_review` do capítulo 6). "
                f"**Modelo:** {served.label}")
    text = gr.Textbox(label="Mensagem", lines=3, elem_id="cls-input")
    gr.Examples([[message] for message in BOOK_MESSAGES], inputs=text, label="As duas mensagens do livro")
    button = gr.Button("Classificar", variant="primary", elem_id="cls-button")
    verdict = gr.Markdown(elem_id="cls-verdict")
    probabilities = gr.Label(label="Probabilidades", num_top_classes=2, elem_id="cls-probs")

    def run(message):
        try:
            answer, probs = classify_message(served, message)
        except AppInputError as error:
            return WARNING + str(error), None
        percent = f"{probs['spam'] * 100:.1f}".replace(".", ",")
        return f"Resposta: **{answer}** (probabilidade de spam: {percent}%). *Modelo: {served.label}*", probs

    button.click(run, text, [verdict, probabilities], concurrency_id="model")
    text.submit(run, text, [verdict, probabilities], concurrency_id="model")


def _chat_tab(served):
    gr.Markdown("Escreva uma instrução e o modelo responde, token por token (o formato de prompt do capítulo 7, com "
                "KV cache). Cada mensagem é uma instrução nova: o modelo não lembra das anteriores. Os modelos do "
                f"livro foram ajustados em inglês. **Modelo:** {served.label}")
    chatbot = gr.Chatbot(label="Conversa", height=320, elem_id="chat-box", feedback_options=None,
                         buttons=["copy", "copy_all"])
    message = gr.Textbox(label="Sua instrução", placeholder="Ex.: Rewrite the sentence using a simile: "
                         "The car is very fast.", elem_id="chat-input")
    button = gr.Button("Enviar", variant="primary", elem_id="chat-button")
    max_tokens, temp, top_k = _controls("chat", 256, 0.0)
    status = gr.Markdown(elem_id="chat-status")

    def run(text, history, tokens, temperature, k):
        history = list(history or [])
        signed = f"\n\n*— {served.label}*"
        try:
            replies = chat_reply(served, text, tokens, temperature, k)
            first = next(replies, "")  # the input is checked before anything enters the conversation
        except AppInputError as error:
            yield history, text, WARNING + str(error)
            return
        history += [{"role": "user", "content": text.strip()}, {"role": "assistant", "content": first + signed}]
        yield history, "", "Respondendo…"
        reply = first
        for reply in replies:
            history[-1] = {"role": "assistant", "content": reply + signed}
            yield history, "", "Respondendo…"
        if not reply:
            history[-1] = {"role": "assistant", "content": "(resposta vazia)" + signed}
        yield history, "", ""

    inputs = [message, chatbot, max_tokens, temp, top_k]
    button.click(run, inputs, [chatbot, message, status], concurrency_id="model")
    message.submit(run, inputs, [chatbot, message, status], concurrency_id="model")


def build_app(models: dict, tab: str | None = None) -> gr.Blocks:
    """The page's ``gr.Blocks``: a tab per entry of ``models`` (``{"generate" | "classify" | "chat":
    ServedModel}``), the others saying how to get a model; ``tab`` is the one open first (default: the first with
    a model). Queue: two requests at a time, the rest wait (introduced in ch05_pretraining)."""
    unknown = sorted(set(models) - set(TABS))
    if unknown or not models or not all(isinstance(m, ServedModel) for m in models.values()):
        raise ValueError(f"models must map some of {list(TABS)} to ServedModel (llmscratch.app_models), got "
                         f"{ {k: type(v).__name__ for k, v in models.items()} }")
    tab = tab or next(name for name in TABS if name in models)
    if tab not in TABS:
        raise ValueError(f"tab must be one of {list(TABS)}, got {tab!r}")
    with gr.Blocks(title="LLMs do zero: experimente o modelo", analytics_enabled=False) as demo:
        gr.Markdown("## Experimente o modelo\nCada resposta diz qual modelo a fez.")
        with gr.Tabs(selected=tab):
            for name, build in (("generate", _generate_tab), ("classify", _classify_tab), ("chat", _chat_tab)):
                with gr.Tab(TAB_NAMES[name], id=name):
                    if name in models:
                        build(models[name])
                    else:
                        gr.Markdown(f"Nenhum modelo nesta aba. Para usá-la, treine {NO_MODEL[name]}.")
    demo.queue(default_concurrency_limit=2, max_size=32)
    return demo


def _served(value, tab):
    if isinstance(value, ServedModel):
        return value
    found, served = load_served(value)  # a path
    if found != tab:
        raise ValueError(f"{value} serves the tab {TAB_NAMES[found]!r}, not {TAB_NAMES[tab]!r}")
    return served


def show_app(generator=None, classifier=None, chat=None, *, tab=None, height=640):
    """Start the page on 127.0.0.1 (a free port) and show it in the notebook, for as long as the kernel runs;
    returns the ``gr.Blocks`` (``.close()`` stops it). Each argument is a ``ServedModel`` (``served_generator``,
    ``served_classifier``, ``served_chat`` of ``llmscratch.app_models``) or a file for that tab. On Colab the page
    comes through Colab's port proxy; nothing is shared on the internet (introduced in ch05_pretraining)."""
    given = {"generate": generator, "classify": classifier, "chat": chat}
    models = {name: _served(value, name) for name, value in given.items() if value is not None}
    demo = build_app(models, tab)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), share=False, inline=True, inbrowser=False,
                prevent_thread_lock=True, quiet=True, height=height, ssr_mode=False, theme=THEME,
                footer_links=[])  # no English footer (API, Gradio, settings)
    return demo


def launch_app(models: dict, host: str = "127.0.0.1", port: int = 7860, *, block: bool = True) -> gr.Blocks:
    """Serve the page on ``host:port`` (the command line's ``app``); ``block=False`` returns at once with the
    server running (tests)."""
    demo = build_app(models)
    demo.launch(server_name=host, server_port=port, share=False, inline=False, inbrowser=False,
                prevent_thread_lock=True, quiet=True, ssr_mode=False, theme=THEME,
                footer_links=[])  # no English footer (API, Gradio, settings)
    print(f"the app is at http://{host}:{port}/ (Ctrl+C stops it)", flush=True)
    if block:
        demo.block_thread()  # until Ctrl+C
    return demo
