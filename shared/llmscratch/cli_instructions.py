"""The command line's instruction model: ``python -m llmscratch finetune-instructions | evaluate | chat``.

Introduced in ch07_finetune_instructions. ``finetune-instructions`` runs chapter 7 end to end with the package's
pieces: the instruction data split 85/10/5 as in the book (``llmscratch.instruction_data``), GPT-2 medium (or a
model from random weights; LoRA as in appendix E with ``--lora-rank``; exercise 7.1's prompt with ``--prompt-style
phi3``, exercise 7.2's masking with ``--mask-instructions``), chapter 5's loop (``train_model_resumable``: the
book's ``train_model_simple`` with a checkpoint after every epoch, so ``--resume`` goes on after an interruption;
:mod:`llmscratch.cli_finetune`, shared with ``finetune-classifier``) with the book's settings of 7.6 (AdamW,
lr 5e-5, weight decay 0.1, two epochs, evaluation every 5 steps on 5 batches), then the test set's responses of
7.7, batched with the KV cache. It writes, each file atomically, the model (LoRA adapters
merged in: a plain ``GPTModel``; ``llmscratch.instruction_run.save_instruction_model``), the test entries with a
``model_response`` key (the book's ``instruction-data-with-response.json``) and the loss plot. ``evaluate``
scores a responses file as 7.8 does, with an LLM judge or, when none answers, with ROUGE-L; ``chat`` answers
instructions typed in the terminal. The run of ``finetune-instructions`` lives in
:mod:`llmscratch.cli_instruction_finetune`.

As in the rest of the command line (:mod:`llmscratch.cli`): arguments are checked before any work, bad input is
one ``error: ...`` line with exit code 2, progress goes to stderr and results to stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from .cli_checks import MAX_NEW_TOKENS, UsageError, check_count
from .cli_finetune import interrupted_message
from .cli_instruction_finetune import (BOOK, FILES, MODEL, RESPONSE_KEY, RESPONSES, _load_model,
                                       add_finetune_parser, finetune_instructions)
from .files import write_json
from .gpt2_tokenizer import gpt2_tokenizer
from .instruction import INSTRUCTION_KEYS
from .instruction_run import instruction_responses
from .judge import OLLAMA_CHAT_URL, JudgeError, judge_available, rouge_l_scores, score_responses
from .settings import resolve_device

ROUGE_FORMAT = "llmscratch-rouge-l-scores/1"  # "format" of the ROUGE-L scores file of evaluate
QUIT_WORDS = ("quit", "exit")  # besides an empty line and the end of input, what ends chat
INTERRUPTED = {"finetune-instructions": interrupted_message(FILES),
               "evaluate": "interrupted: the scores so far are saved; run the same command again to go on",
               "chat": "interrupted"}


def add_instruction_commands(commands, device_help: str) -> None:
    """Add ``finetune-instructions``, ``evaluate`` and ``chat`` to the subparsers ``commands`` of the course's
    parser (introduced in ch07_finetune_instructions)."""
    add_finetune_parser(commands, device_help)
    evaluate_parser = commands.add_parser(
        "evaluate", help="score responses with an LLM judge (or ROUGE-L without one), as section 7.8",
        description="Score the responses in FILE (the instruction-data-with-response.json of finetune-instructions, "
                    "or any JSON list of {instruction, input, output} entries with a response) as section 7.8 does: "
                    "an LLM judge scores each response from 0 to 100 against the expected output. Each score is "
                    "saved at once in STEM-scores.json beside FILE, so a run that stops goes on where it was when "
                    "run again. When no judge answers, it says so in one line and prints the average ROUGE-L "
                    "instead (the response's overlap with the expected output, 0 to 100), saved in "
                    "STEM-rouge-l.json.")
    evaluate_parser.add_argument("--responses", type=Path, required=True, metavar="FILE",
                                 help=f"a JSON list of entries with a response, e.g. OUT/{RESPONSES}")
    evaluate_parser.add_argument("--judge-url", default=OLLAMA_CHAT_URL,
                                 help=f"Ollama's /api/chat or an OpenAI-compatible .../v1/chat/completions "
                                      f"(default: {OLLAMA_CHAT_URL}, the book's)")
    evaluate_parser.add_argument("--judge-model", default="llama3", help="the judge's model (default: llama3)")
    evaluate_parser.add_argument("--key", default=RESPONSE_KEY,
                                 help=f"the field of each entry that holds the response (default: {RESPONSE_KEY})")

    chat_parser = commands.add_parser(
        "chat", help="type instructions and read the answers of a model of finetune-instructions",
        description="A small terminal chat: type an instruction (one line) and press Enter; the model answers "
                    "greedily, with the KV cache, in its prompt style. An empty line, 'quit' or the end of input "
                    "(Ctrl+D) ends. With --with-input each instruction is followed by a line for its input (Enter "
                    "for none). Prompts go to stderr and answers to stdout, each followed by an empty line, so "
                    "`echo 'Name a color.' | python -m llmscratch chat --checkpoint FILE` prints just the answer.")
    chat_parser.add_argument("--checkpoint", type=Path, required=True, help=f"a {MODEL} of finetune-instructions")
    chat_parser.add_argument("--with-input", action="store_true",
                             help="after each instruction, read a line with its input (Enter for none)")
    chat_parser.add_argument("--max-new-tokens", type=int, default=BOOK["max_new_tokens"],
                             help="longest answer, in tokens (default: 256)")
    chat_parser.add_argument("--device", help=device_help)


# --- evaluate --------------------------------------------------------------------------------------------------


def _read_responses(path: Path, key: str) -> list[dict]:
    """The entries of a responses file, each with text fields instruction, input, output and ``key``."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--responses {path}: {what} (give the {RESPONSES} of finetune-instructions)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte order mark is not JSON
    except ValueError as error:  # not UTF-8 or not JSON
        raise UsageError(f"--responses {path} is not a JSON file ({error})") from None
    if not isinstance(entries, list) or not entries:
        what = "no entries" if isinstance(entries, list) else f"a JSON {type(entries).__name__}"
        raise UsageError(f"--responses {path} holds {what}, not a list of entries with a response")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UsageError(f"entry {i} of {path} is a JSON {type(entry).__name__}, not an object with the fields "
                             f"{', '.join(INSTRUCTION_KEYS)} and {key}")
        if key not in entry:
            raise UsageError(f"entry {i} of {path} has no field {key!r} (its fields: {', '.join(sorted(entry))}): "
                             "pass --key with the field that holds the response")
        missing = [name for name in INSTRUCTION_KEYS if name not in entry]
        if missing:
            raise UsageError(f"entry {i} of {path} has no {' and no '.join(missing)}: each response is scored "
                             "against its instruction, input and expected output")
        not_text = [name for name in (*INSTRUCTION_KEYS, key) if not isinstance(entry[name], str)]
        if not_text:
            raise UsageError(f"entry {i} of {path}: the field {not_text[0]!r} is not text")
    return entries


def _judge_scores(entries, args, scores_path: Path) -> None:
    """Score with the LLM judge (resumable through ``scores_path``) and print the book's two lines."""
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the judge's progress and notes
            report = score_responses(entries, args.key, args.judge_model, args.judge_url, scores_path=scores_path)
    except (JudgeError, TimeoutError) as error:  # TimeoutError: another run held the scores file's lock too long
        went_on = (f"The scores so far are saved in {scores_path}: run the same command again to go on"
                   if scores_path.exists() else "Nothing was scored yet: run the same command again once the judge "
                   "answers")
        raise UsageError(f"{error} {went_on}") from None
    except ValueError:  # a scores file the judge's code cannot read
        raise UsageError(f"{scores_path} is not a scores file of evaluate: move it away and run again") from None
    print(f"Number of scores: {report.num_scored} of {report.num_entries}")
    if report.average is None:
        print("Average score: none (no reply of the judge was an integer from 0 to 100)")
    else:
        print(f"Average score: {report.average:.2f} (LLM judge {args.judge_model} at {args.judge_url}, 0 to 100)")
    print(f"scores: {scores_path}")


def _rouge_scores(entries, args, scores_path: Path) -> None:
    """ROUGE-L of every response against its expected output, written all or nothing, and its average."""
    scores = rouge_l_scores(entries, args.key)
    average = sum(scores) / len(scores)
    write_json(scores_path, {"format": ROUGE_FORMAT, "responses": args.responses.name, "key": args.key,
                              "reference_key": "output", "average": average, "scores": scores}, indent=1)
    print(f"Number of scores: {len(scores)} of {len(entries)}")
    print(f"Average ROUGE-L score: {average:.2f} (0 to 100, each response's overlap with the expected output: no "
          "LLM judge answered, so this is not the judge's score)")
    print(f"scores: {scores_path}")


def evaluate(args) -> None:
    """``python -m llmscratch evaluate``: the judge's average score of a responses file, or ROUGE-L's without a
    judge (introduced in ch07_finetune_instructions, 7.8)."""
    if not args.judge_model.strip():
        raise UsageError("--judge-model is empty: name the judge's model, e.g. llama3")
    entries = _read_responses(args.responses, args.key)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # without a judge: its one line, a note
            available = judge_available(args.judge_model, args.judge_url)
    except ValueError as error:  # a URL of neither protocol
        raise UsageError(f"--judge-url: {error}") from None
    stem = args.responses.with_suffix("").name
    if available:
        _judge_scores(entries, args, args.responses.with_name(f"{stem}-scores.json"))
    else:
        _rouge_scores(entries, args, args.responses.with_name(f"{stem}-rouge-l.json"))


# --- chat ------------------------------------------------------------------------------------------------------


def _read_line(prompt: str) -> str | None:
    """One line of stdin without its line break, after ``prompt`` on stderr; ``None`` at the end of input."""
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    return None if line == "" else line.rstrip("\r\n")


def chat(args) -> None:
    """``python -m llmscratch chat``: answer instructions read from the terminal (introduced in
    ch07_finetune_instructions, 7.7)."""
    check_count("max_new_tokens", args.max_new_tokens, MAX_NEW_TOKENS)
    device = resolve_device(args.device)
    model, info = _load_model(args.checkpoint, device)
    tokenizer = gpt2_tokenizer()
    extra = "; after each instruction, its input (Enter for none)" if args.with_input else ""
    print(f"{args.checkpoint}: {info['description']}, prompt style {info['prompt_style']}.\nType an instruction "
          f"and press Enter{extra}; an empty line, 'quit' or Ctrl+D ends.", file=sys.stderr)
    while True:
        instruction = _read_line("Instruction: ")
        if instruction is None or not instruction.strip() or instruction.strip().lower() in QUIT_WORDS:
            return
        text_input = (_read_line("Input: ") or "") if args.with_input else ""
        entry = {"instruction": instruction.strip(), "input": text_input.strip()}
        [response] = instruction_responses(model, tokenizer, [entry], prompt_style=info["prompt_style"],
                                           max_new_tokens=args.max_new_tokens, batch_size=1, progress=False)
        print(response + "\n", flush=True)


COMMANDS = {"finetune-instructions": finetune_instructions, "evaluate": evaluate, "chat": chat}
