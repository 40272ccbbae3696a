"""The command line's instruction model: ``python -m llmscratch finetune-instructions | evaluate | chat``.

Introduced in ch07_finetune_instructions. ``finetune-instructions`` runs chapter 7 end to end with the package's
pieces: the instruction data split 85/10/5 as in the book (``llmscratch.instruction_data``), GPT-2 medium (or a
model from random weights; LoRA as in appendix E with ``--lora-rank``; exercise 7.1's prompt with ``--prompt-style
phi3``, exercise 7.2's masking with ``--mask-instructions``), chapter 5's ``train_model_simple`` with the book's
settings of 7.6 (AdamW, lr 5e-5, weight decay 0.1, two epochs, evaluation every 5 steps on 5 batches), then the
test set's responses of 7.7, batched with the KV cache. It writes, each file atomically, the model (LoRA adapters
merged in: a plain ``GPTModel``; ``llmscratch.instruction_run.save_instruction_model``), the test entries with a
``model_response`` key (the book's ``instruction-data-with-response.json``) and the loss plot. ``evaluate``
scores a responses file as 7.8 does, with an LLM judge or, when none answers, with ROUGE-L; ``chat`` answers
instructions typed in the terminal.

As in the rest of the command line (:mod:`llmscratch.cli`): arguments are checked before any work, bad input is
one ``error: ...`` line with exit code 2, progress goes to stderr and results to stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import tiktoken
import torch

from .classifier import count_trainable_parameters
from .cli_checks import (SIZES, UsageError, check_count, check_out_folder, check_real, check_seed,
                         claimed_out_folder)
from .files import save_png, write_json
from .instruction import INSTRUCTION_KEYS, PROMPT_STYLES
from .instruction_data import (ALPACA_DATA, INSTRUCTION_DATA, create_instruction_loaders, load_alpaca_data,
                               load_instruction_data, split_instruction_data)
from .instruction_run import (SCRATCH_BASE, TINY_BASE, build_instruction_model, instruction_responses,
                              load_instruction_model, save_instruction_model)
from .judge import OLLAMA_CHAT_URL, JudgeError, judge_available, rouge_l_scores, score_responses
from .lora import merge_lora
from .pretraining import plot_losses, train_model_simple
from .settings import get_settings, resolve_device

MODEL, RESPONSES, PLOT = "instruction_model.pt", "instruction-data-with-response.json", "loss.png"
OUTPUTS = (MODEL, RESPONSES, PLOT)
BOOK = {"gpt2": "355M", "epochs": 2, "batch_size": 8, "seed": 123, "weight_decay": 0.1, "eval_freq": 5,
        "eval_iter": 5, "max_new_tokens": 256}  # the book's settings of 7.5 to 7.7
LR = {"gpt2": 5e-5, "scratch": 1e-3}  # the book's for GPT-2; random weights learn nothing at 5e-5 in two epochs
DATA_SETS = {INSTRUCTION_DATA: load_instruction_data, ALPACA_DATA: load_alpaca_data}  # --data's registry names
RESPONSE_KEY = "model_response"  # the book's key of the responses (7.7)
ROUGE_FORMAT = "llmscratch-rouge-l-scores/1"  # "format" of the ROUGE-L scores file of evaluate
QUIT_WORDS = ("quit", "exit")  # besides an empty line and the end of input, what ends chat
INTERRUPTED = {"finetune-instructions": "interrupted: every file written so far is complete",
               "evaluate": "interrupted: the scores so far are saved; run the same command again to go on",
               "chat": "interrupted"}


def add_instruction_commands(commands, device_help: str) -> None:
    """Add ``finetune-instructions``, ``evaluate`` and ``chat`` to the subparsers ``commands`` of the course's
    parser (introduced in ch07_finetune_instructions)."""
    _add_finetune(commands, device_help)
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


def _add_finetune(commands, device_help: str) -> None:
    finetune = commands.add_parser(
        "finetune-instructions", help="finetune GPT-2 (or a model from scratch) to follow instructions (chapter 7)",
        description="Chapter 7 end to end: split the instruction data 85/10/5 as the book does, finetune GPT-2 "
                    "medium with chapter 5's train_model_simple and the book's settings, and answer the test "
                    f"entries (greedy, batched with the KV cache). Writes OUT/{MODEL} (the model, LoRA adapters "
                    f"merged in, with what made it), OUT/{RESPONSES} (the test entries with a '{RESPONSE_KEY}' "
                    f"key, as the book's file) and OUT/{PLOT}.")
    base = finetune.add_mutually_exclusive_group()
    base.add_argument("--gpt2", choices=SIZES, help="start from OpenAI's GPT-2 of this size (default: 355M, the "
                      "book's)")
    base.add_argument("--from-scratch", action="store_true",
                      help="GPT-2 355M's architecture with random weights (the result is not GPT-2)")
    base.add_argument("--tiny", action="store_true", help="a tiny GPT from random weights, for quick checks "
                      "(the default when LLMSCRATCH_SMOKE=1)")
    finetune.add_argument("--prompt-style", choices=sorted(PROMPT_STYLES), default="alpaca",
                          help="the book's Alpaca prompt or exercise 7.1's Phi-3 prompt (default: alpaca)")
    finetune.add_argument("--mask-instructions", action="store_true",
                          help="no loss on the prompt's tokens, only on the response (exercise 7.2)")
    finetune.add_argument("--lora-rank", type=int, help="LoRA as in appendix E: freeze every weight and train "
                          "adapters of this rank on every linear layer (the book: 16); they are merged into the "
                          "saved model")
    finetune.add_argument("--lora-alpha", type=float, help="scale of the LoRA adapters (default: the rank; the "
                          "book: 16 with rank 16)")
    finetune.add_argument("--data", default=INSTRUCTION_DATA,
                          help=f"{INSTRUCTION_DATA} (the book's 1,100 entries), {ALPACA_DATA} (exercise 7.3, "
                               "downloaded once, 22 MB) or a path to a JSON file holding a list of {instruction, "
                               f"input, output}} entries (default: {INSTRUCTION_DATA})")
    finetune.add_argument("--limit", type=int, metavar="N",
                          help="use only the first N entries of the data, before the 85/10/5 split, for quick "
                               "runs (e.g. 20: 17 training, 1 validation and 2 test entries)")
    finetune.add_argument("--epochs", type=int, default=BOOK["epochs"], help="default: 2, the book's")
    finetune.add_argument("--lr", type=float, help="AdamW learning rate (default: 5e-5 for GPT-2, the book's; "
                          "1e-3 with --tiny or --from-scratch, as random weights learn next to nothing at 5e-5)")
    finetune.add_argument("--batch-size", type=int, default=BOOK["batch_size"], help="default: 8")
    finetune.add_argument("--seed", type=int, default=BOOK["seed"], help="default: 123, the book's")
    finetune.add_argument("--max-new-tokens", type=int, default=BOOK["max_new_tokens"],
                          help="longest response to each test entry, in tokens (default: 256, the book's)")
    finetune.add_argument("--device", help=device_help)
    finetune.add_argument("--out", type=Path, default=Path("runs/instructions"),
                          help="output folder (default: runs/instructions)")


# --- finetune-instructions -------------------------------------------------------------------------------------


def check_finetune_args(args) -> None:
    """The numbers and option combinations of ``finetune-instructions``, checked before any work
    (introduced in ch07_finetune_instructions, 7.6)."""
    for name in ("epochs", "batch_size", "lora_rank", "limit", "max_new_tokens"):
        check_count(name, getattr(args, name))
    check_real("lora_alpha", args.lora_alpha, zero_ok=False)
    check_real("lr", args.lr, zero_ok=False, why=" (a learning rate of 0 trains nothing)")
    check_seed(args.seed)
    if args.lora_alpha is not None and args.lora_rank is None:
        raise UsageError("--lora-alpha needs --lora-rank: it scales the LoRA adapters")


def _base(args) -> str:
    """What the model starts from: ``gpt2-SIZE``, ``from-scratch`` or ``tiny from scratch``."""
    if args.tiny or (args.gpt2 is None and not args.from_scratch and get_settings().smoke):
        return TINY_BASE
    return SCRATCH_BASE if args.from_scratch else f"gpt2-{args.gpt2 or BOOK['gpt2']}"


def _read_data(name: str) -> tuple[list[dict], str]:
    """``(entries, setting)``: a registry data set or a JSON file's entries, checked; ``setting`` is the
    registry name or the file's absolute path, as the model file records it."""
    if name in DATA_SETS:
        try:
            return DATA_SETS[name](), name
        except ValueError as error:
            raise UsageError(f"--data {name}: {error}") from None
    path = Path(name)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--data {name}: {what} (use {' or '.join(DATA_SETS)}, or a path to a JSON file holding "
                         "a list of {instruction, input, output} entries)")
    try:
        return load_instruction_data(path), str(path.expanduser().resolve())
    except ValueError as error:  # not JSON, not a list, entries with other fields
        raise UsageError(f"--data: {error}") from None


def _split(data: list[dict], args) -> tuple[list[dict], list[dict], list[dict]]:
    """The book's 85/10/5 split of the first ``--limit`` entries, each part large enough."""
    used = data if args.limit is None else data[:args.limit]
    train_data, val_data, test_data = split_instruction_data(used)
    if len(train_data) < args.batch_size or not val_data or not test_data:
        limited = len(used) < len(data)
        raise UsageError(f"the 85/10/5 split of {'the first' if limited else 'the'} {len(used)} entries of --data "
                         f"gives {len(train_data)} training, {len(val_data)} validation and {len(test_data)} test "
                         f"entries; training needs one batch of {args.batch_size} (--batch-size) and the others one "
                         f"entry each: use more entries{' (a larger --limit)' if limited else ''}")
    return train_data, val_data, test_data


def _build_model(base: str, lora_rank, lora_alpha):
    try:  # GPT2DownloadError (an OSError): one line, exit 2
        return build_instruction_model(base, lora_rank=lora_rank, lora_alpha=lora_alpha)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None


def finetune_instructions(args) -> None:
    """``python -m llmscratch finetune-instructions``: chapter 7 end to end (introduced in
    ch07_finetune_instructions, 7.2 to 7.7)."""
    check_finetune_args(args)  # numbers first: nothing is read, downloaded or written before they are fine
    device = resolve_device(args.device)
    out = args.out
    check_out_folder(out, OUTPUTS, product=MODEL)
    data, data_setting = _read_data(args.data)
    train_data, val_data, test_data = _split(data, args)
    base = _base(args)
    lr = args.lr if args.lr is not None else LR["gpt2" if base.startswith("gpt2-") else "scratch"]
    alpha = None if args.lora_rank is None else float(args.lora_alpha or args.lora_rank)

    torch.manual_seed(args.seed)  # random weights and LoRA's adapters draw from it
    model, config = _build_model(base, args.lora_rank, alpha)
    trainable = count_trainable_parameters(model)
    tokenizer = tiktoken.get_encoding("gpt2")
    torch.manual_seed(args.seed)  # the book seeds before building the loaders (7.4)
    train_loader, val_loader, _ = create_instruction_loaders(
        train_data, val_data, test_data, tokenizer, batch_size=args.batch_size, device=device,
        allowed_max_length=config["context_length"], prompt_style=args.prompt_style,
        mask_instructions=args.mask_instructions)
    how = "all weights" if alpha is None else f"LoRA rank {args.lora_rank}, alpha {alpha:g}"
    print(f"finetuning {base} to follow instructions ({how}: {trainable:,} trainable parameters) on "
          f"{len(train_data)} entries, {args.epochs} epoch{'s' * (args.epochs != 1)}, lr {lr:g}, batch size "
          f"{args.batch_size}, prompt style {args.prompt_style}"
          f"{', prompt tokens masked' if args.mask_instructions else ''}, device {device}", file=sys.stderr)
    model.to(device)
    with claimed_out_folder(out, MODEL):
        start = time.perf_counter()
        torch.manual_seed(args.seed)  # the book seeds again before training (7.6)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=BOOK["weight_decay"])
        with contextlib.redirect_stdout(sys.stderr):  # training lines are progress
            train_losses, val_losses, tokens_seen = train_model_simple(
                model, train_loader, val_loader, optimizer, device, num_epochs=args.epochs,
                eval_freq=BOOK["eval_freq"], eval_iter=BOOK["eval_iter"],
                start_context=PROMPT_STYLES[args.prompt_style].format_input(val_data[0]), tokenizer=tokenizer)
        seconds = time.perf_counter() - start
        if alpha is not None:
            merge_lora(model)  # a plain GPTModel: what load_instruction_model builds
        model.eval()
        made_with = {
            "mask_instructions": args.mask_instructions,
            "lora": None if alpha is None else {"rank": args.lora_rank, "alpha": alpha}, "data": data_setting,
            "limit": args.limit, "entries": {"train": len(train_data), "val": len(val_data), "test": len(test_data)},
            "epochs": args.epochs, "lr": lr, "weight_decay": BOOK["weight_decay"], "batch_size": args.batch_size,
            "seed": args.seed, "eval_freq": BOOK["eval_freq"], "eval_iter": BOOK["eval_iter"],
            "trainable_parameters": trainable, "final_train_loss": train_losses[-1], "final_val_loss": val_losses[-1],
            "train_seconds": round(seconds, 1), "device": str(device)}
        save_instruction_model(out / MODEL, model, config, base=base, prompt_style=args.prompt_style, **made_with)
        figure = plot_losses(torch.linspace(0, args.epochs, len(train_losses)), tokens_seen, train_losses,
                             val_losses)
        save_png(figure, out / PLOT)
        print(f"generating the responses to the {len(test_data)} test entries", file=sys.stderr)
        responses = instruction_responses(model, tokenizer, test_data, prompt_style=args.prompt_style,
                                          max_new_tokens=args.max_new_tokens)
        write_json(out / RESPONSES, [{**entry, RESPONSE_KEY: response}
                                      for entry, response in zip(test_data, responses)])

    print(f"final train loss {train_losses[-1]:.3f}, val loss {val_losses[-1]:.3f}")
    print(f"model: {out / MODEL}")
    print(f"test responses: {out / RESPONSES} ({len(test_data)} entries; score them with: python -m llmscratch "
          f"evaluate --responses {out / RESPONSES})")
    print(f"loss plot: {out / PLOT}")
    print(f"training took {seconds:.1f} s")


# --- evaluate --------------------------------------------------------------------------------------------------


def _read_responses(path: Path, key: str) -> list[dict]:
    """The entries of a responses file, each with text fields instruction, input, output and ``key``."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--responses {path}: {what} (give the {RESPONSES} of finetune-instructions)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
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
    except JudgeError as error:
        raise UsageError(f"{error} The scores so far are saved in {scores_path}: run the same command again to go "
                         "on") from None
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


def _load_model(path: Path, device):
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--checkpoint {path}: {what} (give the {MODEL} of finetune-instructions)")
    try:
        return load_instruction_model(path, device)
    except ValueError as error:  # not a checkpoint, a checkpoint of another kind, a newer version...
        raise UsageError(str(error)) from None


def chat(args) -> None:
    """``python -m llmscratch chat``: answer instructions read from the terminal (introduced in
    ch07_finetune_instructions, 7.7)."""
    check_count("max_new_tokens", args.max_new_tokens)
    device = resolve_device(args.device)
    model, info = _load_model(args.checkpoint, device)
    tokenizer = tiktoken.get_encoding("gpt2")
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
