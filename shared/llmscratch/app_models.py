"""The models behind the course's web app (``llmscratch.app``): loading them, labelling them, and answering one
request at a time, without Gradio (so the tests call the same functions the page does).

Introduced in ch05_pretraining (the app's "Gerar texto" tab), ch06_finetune_classification ("Classificar
mensagem") and ch07_finetune_instructions ("Conversar"), beyond the book: the book's repository builds one
Chainlit page per chapter; the course has one page with three tabs.

- ``ServedModel``: a model, the one-line Portuguese label every answer carries ("GPT pequeno, pesos aleatórios
  — NÃO é o GPT-2" where that is true) and what using it needs (the classifier's ``max_length``, the chat
  model's prompt style). ``served_generator`` / ``served_classifier`` / ``served_chat`` wrap a model of a
  notebook; ``load_served`` reads a file and says which tab it serves.
- ``stream_tokens``: the book's ``generate`` (top-k, temperature, ``eos_id``) with the KV cache, one token id
  at a time, so a page shows the text as it comes. Each request has its own cache and its own random generator:
  two users at once share only the weights, which are read, never written.
- ``generate_text`` / ``chat_reply`` (generators of partial answers) and ``classify_message``: the tabs'
  handlers. Bad input (empty, longer than ``MAX_MESSAGE_CHARS``, settings out of range) raises ``AppInputError``
  with a Portuguese message for the page.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .checkpoints import describe_kind, read_training_state
from .classification import TOKEN_POSITIONS, _check_review_args
from .classifier import CLASSIFIER_KIND, load_classifier
from .decoding import check_sampling_args
from .gpt import GPT2_CONFIGS, check_generation_args
from .gpt2_tokenizer import gpt2_tokenizer
from .gpt2_weights import load_pretrained_gpt2
from .instruction_run import INSTRUCTION_MODEL_KIND, SCRATCH_BASE, TINY_BASE, load_instruction_model
from .kv_cache import CachedDecoder
from .prompt_formats import PROMPT_STYLES, _check_prompt_style

TABS = ("generate", "classify", "chat")  # the app's tabs, in order: Gerar texto, Classificar mensagem, Conversar
NOT_GPT2 = "NÃO é o GPT-2"
RANDOM_TINY_LABEL = f"GPT pequeno, pesos aleatórios — {NOT_GPT2}"  # an untrained tiny GPT (the tests', a demo's)
MAX_MESSAGE_CHARS = 4_000  # longest message a page accepts: far beyond any context of the course's models
MAX_NEW_TOKENS = 1_024  # the page's largest token budget (GPT-2's whole context)
CLASS_LABELS = ("não spam", "spam")  # class 0 and 1 of chapter 6's classifier, as the page shows them


class AppInputError(ValueError):
    """Input the app cannot answer; the message (Portuguese) is what the page shows."""


@dataclass
class ServedModel:
    """A model the app serves: ``model`` in eval mode, the ``label`` every answer shows, and ``info`` (classifier:
    ``max_length``, ``pad_token_id``, ``token_position``; chat: ``prompt_style``)."""

    model: torch.nn.Module
    label: str
    info: dict = field(default_factory=dict)


def served_generator(model, label):
    """A model of a notebook for the "Gerar texto" tab; ``label`` says what it is (say NÃO é o GPT-2 when true)."""
    return ServedModel(model.eval(), _check_label(label))


def served_classifier(model, label, *, max_length, pad_token_id=GPT2_ENDOFTEXT_ID, token_position="last"):
    """A chapter-6 classifier of a notebook for "Classificar mensagem"; ``max_length`` as in ``classify_review``."""
    _check_review_args(model, max_length, token_position)
    return ServedModel(model.eval(), _check_label(label), {"max_length": max_length, "pad_token_id": pad_token_id,
                                                           "token_position": token_position})


def served_chat(model, label, *, prompt_style="alpaca"):
    """A chapter-7 instruction model of a notebook for "Conversar", with its prompt style."""
    _check_prompt_style(prompt_style)
    return ServedModel(model.eval(), _check_label(label), {"prompt_style": prompt_style})


def _check_label(label):
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"label must say which model answers (e.g. {RANDOM_TINY_LABEL!r}), got {label!r}")
    return label.strip()


GPT2_NAMES = {"124M": "GPT-2 pequeno (124M)", "355M": "GPT-2 médio (355M)", "774M": "GPT-2 grande (774M)",
              "1558M": "GPT-2 XL (1558M)"}  # the course's names (GLOSSARIO.md)


def _gpt2_size(config):
    """The GPT-2 size whose shapes ``config`` has, or None (a tiny or custom GPT)."""
    shape = ("emb_dim", "n_layers", "n_heads", "vocab_size")
    return next((size for size, cfg in GPT2_CONFIGS.items() if all(cfg[k] == config.get(k) for k in shape)), None)


def _shape_words(config):
    size = _gpt2_size(config)
    return f"arquitetura do {GPT2_NAMES[size]}" if size else RANDOM_TINY_LABEL  # no tiny GPT-2: trained from random


def load_served(path, device="cpu"):
    """``(tab, ServedModel)`` of a file: a classifier of ``finetune-classifier`` serves "classify", an instruction
    model of ``finetune-instructions`` "chat", anything ``load_pretrained_gpt2`` reads (a checkpoint of
    ``pretrain``, a GPTModel .pth, GPT-2 .safetensors) "generate". ``ValueError`` / ``FileNotFoundError`` with
    one line for a file of no use to the app."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    kind, state = None, None
    if path.is_file():
        with contextlib.suppress(ValueError):  # not a checkpoint of the package: load_pretrained_gpt2 says what
            state = read_training_state(path)
            kind = state.get("kind")
    if kind == CLASSIFIER_KIND:
        model, info = load_classifier(path, device)
        if info["num_classes"] != len(CLASS_LABELS):
            raise ValueError(f"{path} is a classifier of {info['num_classes']} classes, not chapter 6's spam "
                             "classifier (2 classes)")
        return "classify", ServedModel(model, f"classificador de spam {path.name}, "
                                              f"{_shape_words(info['config'])}", info)
    if kind == INSTRUCTION_MODEL_KIND:
        model, info = load_instruction_model(path, device)
        if info.get("gpt2_weights"):
            size = info["base"].removeprefix("gpt2-")
            label = f"{GPT2_NAMES.get(size, 'GPT-2 ' + size)} ajustado por instruções ({path.name})"
        else:
            shapes = "GPT pequeno" if info.get("base") == TINY_BASE else "arquitetura do GPT-2 médio (355M)"
            label = f"{shapes} ajustado por instruções a partir de pesos aleatórios ({path.name}) — {NOT_GPT2}"
            if info.get("base") not in (TINY_BASE, SCRATCH_BASE):
                label = f"modelo de instruções {path.name}"
        return "chat", ServedModel(model, label, {"prompt_style": info["prompt_style"]})
    if kind is not None:
        raise ValueError(f"{path} is {describe_kind(kind)}: the app serves a pretraining checkpoint, a classifier "
                         "of finetune-classifier or an instruction model of finetune-instructions")
    model = load_pretrained_gpt2(path).to(device).eval()  # ValueError for a file of no known format
    if state is not None and isinstance(state.get("config"), dict):
        label = f"checkpoint de pré-treinamento {path.name}, {_shape_words(state['config'])}"
    else:
        label = f"pesos de {path.name}"  # a state dict or GPT-2 weights: the file does not say where they came from
    return "generate", ServedModel(model, label)


def served_gpt2(size, device="cpu"):
    """OpenAI's GPT-2 of ``size`` for "Gerar texto" (downloaded once and cached)."""
    return ServedModel(load_pretrained_gpt2(size).to(device).eval(), f"{GPT2_NAMES[size]}, pesos da OpenAI")


# --- one token at a time ---------------------------------------------------------------------------------------


def stream_tokens(model, idx, max_new_tokens, temperature=0.0, top_k=None, eos_id=None, generator=None):
    """Yield the ids ``generate(model, idx, ..., use_cache=True)`` appends, one at a time, for one prompt ``idx``
    (1, n_tokens); stop at ``eos_id`` (not yielded). ``generator``: the ``torch.Generator`` sampling draws from
    (default: torch's global one, as ``generate``: the same seed gives the same tokens). Beyond the book."""
    context_size = model.pos_emb.num_embeddings
    check_generation_args(model, idx, max_new_tokens, context_size)
    check_sampling_args(temperature, top_k, model.tok_emb.num_embeddings, eos_id)
    if idx.shape[0] != 1:
        raise ValueError(f"stream_tokens answers one prompt: idx must be (1, n_tokens), got {tuple(idx.shape)}")
    decoder = CachedDecoder.for_generation(model, idx, max_new_tokens, context_size)
    for _ in range(max_new_tokens):
        logits = decoder.next_token_logits(idx)  # (1, vocab_size); no grad, no state across a yield
        if top_k is not None:
            top_logits, _ = torch.topk(logits, top_k)
            logits = torch.where(logits < top_logits[:, -1:], torch.tensor(float("-inf"), device=logits.device), logits)
        if temperature > 0.0:
            logits = logits / temperature
            logits = logits - logits.max(dim=-1, keepdim=True).values
            idx_next = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator)  # (1, 1)
        else:
            idx_next = torch.argmax(logits, dim=-1, keepdim=True)  # (1, 1)
        if eos_id is not None and int(idx_next) == eos_id:
            return
        idx = torch.cat((idx, idx_next), dim=1)  # (1, n_tokens + 1)
        yield int(idx_next)


# --- the tabs' handlers ------------------------------------------------------------------------------------------


def _number(value):
    return f"{value:,}".replace(",", ".")  # 100.000, as Brazilian Portuguese writes it


def check_message(text, what="mensagem"):
    """The text of a request, stripped; ``AppInputError`` for an empty one or one over ``MAX_MESSAGE_CHARS``."""
    text = (text or "").strip()
    if not text:
        raise AppInputError(f"A {what} está vazia: escreva um texto e envie de novo.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise AppInputError(f"A {what} tem {_number(len(text))} caracteres; esta página aceita até "
                            f"{_number(MAX_MESSAGE_CHARS)}. Encurte o texto e envie de novo.")
    return text


def _settings(model, max_new_tokens, temperature, top_k):
    """The controls' values as ``stream_tokens`` takes them; ``AppInputError`` for values out of range."""
    try:
        max_new_tokens, temperature = int(max_new_tokens), float(temperature)
        top_k = None if top_k in (None, "", 0) else int(top_k)
    except (TypeError, ValueError):
        raise AppInputError("Os controles precisam de números: tokens, temperatura e top-k.") from None
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise AppInputError(f"O limite de tokens vai de 1 a {_number(MAX_NEW_TOKENS)}; recebi {max_new_tokens}.")
    if not 0.0 <= temperature <= 5.0:
        raise AppInputError(f"A temperatura vai de 0 (a escolha mais provável) a 5; recebi {temperature:g}.")
    vocab = model.tok_emb.num_embeddings
    if top_k is not None and not 1 <= top_k <= vocab:
        raise AppInputError(f"O top-k vai de 1 a {_number(vocab)} (0: sem filtro); recebi {top_k}.")
    return max_new_tokens, temperature, top_k


def _prompt_ids(model, text):
    ids = gpt2_tokenizer().encode(text)
    context = model.pos_emb.num_embeddings
    if max(ids) >= model.tok_emb.num_embeddings:
        raise AppInputError("O texto tem tokens que o vocabulário deste modelo não conhece.")
    return torch.tensor(ids[-context:], device=model.tok_emb.weight.device).unsqueeze(0)  # (1, n): the last tokens


def _request_generator(model, seed):
    generator = torch.Generator(device=model.tok_emb.weight.device)
    generator.manual_seed(int(seed) if seed is not None else torch.seed())
    return generator


def generate_text(served, prompt, max_new_tokens=50, temperature=0.0, top_k=None, seed=None):
    """Yield the prompt and its continuation so far, as the tokens come (the "Gerar texto" tab)."""
    prompt = check_message(prompt, "mensagem")
    settings = _settings(served.model, max_new_tokens, temperature, top_k)
    idx = _prompt_ids(served.model, prompt)
    eos_id = GPT2_ENDOFTEXT_ID if GPT2_ENDOFTEXT_ID < served.model.tok_emb.num_embeddings else None
    tokenizer, new_ids = gpt2_tokenizer(), []
    yield prompt
    for token in stream_tokens(served.model, idx, *settings, eos_id=eos_id,
                               generator=_request_generator(served.model, seed)):
        new_ids.append(token)
        yield prompt + tokenizer.decode(new_ids).rstrip("\ufffd")  # half a UTF-8 character waits for the rest


def chat_reply(served, message, max_new_tokens=256, temperature=0.0, top_k=None, seed=None):
    """Yield the response so far to one instruction, in the model's prompt style (the "Conversar" tab): the
    prompt of chapter 7 (``format_input``), the text after it without the response header, as ``chat``."""
    message = check_message(message, "mensagem")
    settings = _settings(served.model, max_new_tokens, temperature, top_k)
    style = PROMPT_STYLES[served.info.get("prompt_style", "alpaca")]
    idx = _prompt_ids(served.model, style.format_input({"instruction": message, "input": ""}))
    tokenizer, new_ids = gpt2_tokenizer(), []
    header = style.response_header
    for token in stream_tokens(served.model, idx, *settings, eos_id=GPT2_ENDOFTEXT_ID,
                               generator=_request_generator(served.model, seed)):
        new_ids.append(token)
        text = tokenizer.decode(new_ids).rstrip("\ufffd").lstrip()
        yield "" if header.startswith(text) else text.replace(header, "").strip()  # as extract_response


def spam_probability(served, text):
    """The classifier's probability of spam for ``text``: ``classify_review``'s input (truncated, padded to
    ``max_length``), the softmax of the two logits instead of the argmax."""
    model, info = served.model, served.info
    ids = gpt2_tokenizer().encode(text)[:min(info["max_length"], model.pos_emb.weight.shape[0])]
    ids += [info["pad_token_id"]] * (info["max_length"] - len(ids))
    with torch.no_grad():
        logits = model(torch.tensor(ids, device=model.pos_emb.weight.device).unsqueeze(0))  # (1, n, 2)
    return float(torch.softmax(logits[0, TOKEN_POSITIONS[info["token_position"]]].float(), dim=-1)[1])


def classify_message(served, text):
    """``(answer, probabilities)`` for a message (the "Classificar mensagem" tab): "spam" or "não spam", as
    ``classify_review`` decides, and each class's probability."""
    text = check_message(text, "mensagem")
    spam = spam_probability(served, text)
    return CLASS_LABELS[int(spam > 0.5)], {CLASS_LABELS[1]: spam, CLASS_LABELS[0]: 1.0 - spam}
