"""The command line's web app: ``python -m llmscratch app --checkpoint FILE [--checkpoint FILE ...] [--port N]``.

Introduced in ch05_pretraining (beyond the book; the page itself is :mod:`llmscratch.app`). Each file's kind
decides its tab: a checkpoint of ``pretrain`` (or any GPTModel .pth / GPT-2 .safetensors) "Gerar texto", a
classifier of ``finetune-classifier`` "Classificar mensagem", an instruction model of ``finetune-instructions``
"Conversar"; ``--gpt2 SIZE`` serves OpenAI's GPT-2 in "Gerar texto". A tab without a file says how to get one.

Everything is checked before the server starts, each problem one ``error: ...`` line with exit code 2: a missing
file, a file of no use to the app (or two for one tab), a port another program holds (checked by binding it), a
host this machine does not have. The page listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from .app_models import TABS, load_served, served_gpt2
from .cli_checks import UsageError
from .gpt import GPT2_CONFIGS
from .settings import resolve_device

DEFAULT_PORT = 7860  # Gradio's
INTERRUPTED = {"app": "stopped"}
TAB_WORDS = {"generate": "Gerar texto (text generation)", "classify": "Classificar mensagem (spam classifier)",
             "chat": "Conversar (instruction model)"}


def add_app_commands(commands, device_help: str) -> None:
    """Add ``app`` to the subparsers ``commands`` of the course's parser (introduced in ch05_pretraining)."""
    app = commands.add_parser(
        "app", help="a web page to try the models: generate text, classify a message, chat",
        description="Serve a page with three tabs: Gerar texto (a checkpoint of pretrain, a GPTModel .pth, GPT-2 "
                    ".safetensors, or --gpt2), Classificar mensagem (a classifier of finetune-classifier) and "
                    "Conversar (an instruction model of finetune-instructions, the answer streamed token by token). "
                    "Each --checkpoint's kind decides its tab; repeat it to fill several tabs. Every answer names "
                    "the model that made it. Ctrl+C stops the server.")
    app.add_argument("--checkpoint", type=Path, action="append", default=[], metavar="FILE",
                     help="a model file; repeatable, one per tab")
    app.add_argument("--gpt2", choices=list(GPT2_CONFIGS), help="OpenAI's GPT-2 of this size in Gerar texto")
    app.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    app.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens the page "
                          "to your network)")
    app.add_argument("--device", help=device_help)


def check_port(host: str, port: int) -> None:
    """``UsageError`` unless ``port`` can be bound on ``host`` now (the server binds it right after)."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: use a port from 1 to 65535 (default: {DEFAULT_PORT})")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except socket.gaierror:
            raise UsageError(f"--host {host}: not an address of this machine (use 127.0.0.1 or 0.0.0.0)") from None
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UsageError(f"port {port} on {host} is busy (another program, or another app, holds it): "
                                 "stop it or pick another --port") from None
            if error.errno == errno.EACCES:
                raise UsageError(f"port {port} needs administrator rights: pick one above 1023 with --port") from None
            raise UsageError(f"--host {host} --port {port}: {error.strerror}") from None


def _models(args, device) -> dict:
    """``{tab: ServedModel}`` of the files (and ``--gpt2``), checked before the server starts."""
    for path in args.checkpoint:
        if not path.exists():
            raise UsageError(f"--checkpoint {path}: no such file or folder")
    models, sources = {}, {}
    for path in args.checkpoint:
        try:
            tab, served = load_served(path, device)
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(f"--checkpoint {path}: {error}") from None
        if tab in models:
            raise UsageError(f"--checkpoint {sources[tab]} and {path} are both for the tab {TAB_WORDS[tab]}: "
                             "give one file per tab")
        models[tab], sources[tab] = served, path
    if args.gpt2:
        if "generate" in models:
            raise UsageError(f"--gpt2 and --checkpoint {sources['generate']} are both for the tab "
                             f"{TAB_WORDS['generate']}: give one of them")
        try:
            models["generate"] = served_gpt2(args.gpt2, device)
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(str(error)) from None
    return {tab: models[tab] for tab in TABS if tab in models}


def app(args) -> None:
    """``python -m llmscratch app``: serve the page until Ctrl+C (introduced in ch05_pretraining)."""
    if not args.checkpoint and not args.gpt2:
        raise UsageError("give a model: --checkpoint FILE (repeatable, one per tab) or --gpt2 SIZE")
    device = resolve_device(args.device)
    check_port(args.host, args.port)  # before the (slow) models: a busy port is known at once
    models = _models(args, device)
    check_port(args.host, args.port)  # still free after loading
    from .app import launch_app  # Gradio loads in seconds: only for this command

    for tab, served in models.items():
        print(f"{TAB_WORDS[tab]}: {served.label}", flush=True)
    launch_app(models, args.host, args.port)


COMMANDS = {"app": app}
