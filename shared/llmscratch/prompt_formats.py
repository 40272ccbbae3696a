"""The prompt formats of chapter 7: the book's Alpaca prompt and exercise 7.1's Phi-3 prompt.

Introduced in ch07_finetune_instructions, 7.2. ``format_input`` is the book's listing (a call to a checking helper
at the top is the only addition); ``PROMPT_STYLES`` maps each style to its prompt function and the text put before
the response. This module imports no torch, so the judge (``llmscratch.judge``), which needs the book's prompt to
ask for a score, loads without it. ``llmscratch.instruction`` re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

INSTRUCTION_KEYS = ("instruction", "input", "output")  # the fields of every entry of the data set


def _check_entry(entry):
    if not isinstance(entry, dict) or "instruction" not in entry or "input" not in entry:
        found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"entry must be a dict with the keys 'instruction' and 'input' (and 'output' for "
                         f"training), like the entries of instruction-data.json; got {found}")


# --- the prompt (7.2, exercise 7.1) -------------------------------------------------------------------------


def format_input(entry):
    """The Alpaca-style prompt of ``entry``: a fixed preamble, ``### Instruction:`` and, when the entry has one,
    ``### Input:`` (ch07_finetune_instructions, 7.2)."""
    _check_entry(entry)  # beyond the book: a clear error for an entry without the fields
    instruction_text = (
        f"Below is an instruction that describes a task. "
        f"Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )

    input_text = f"\n\n### Input:\n{entry['input']}" if entry["input"] else ""

    return instruction_text + input_text


def format_input_phi(entry):
    """The Phi-3-style prompt of ``entry``: ``<|user|>``, the instruction and, when there is one, the input
    (ch07_finetune_instructions, exercise 7.1). ``<|user|>`` is ordinary text for GPT-2's tokenizer:
    five tokens, ``[27, 91, 7220, 91, 29]``."""
    _check_entry(entry)  # beyond the book: a clear error for an entry without the fields
    instruction_text = (
        f"<|user|>\n{entry['instruction']}"
    )

    input_text = f"\n{entry['input']}" if entry["input"] else ""

    return instruction_text + input_text


class PromptStyle(NamedTuple):
    """A prompt format: the function that writes the prompt of an entry and the text between the prompt and the
    response (ch07_finetune_instructions, exercise 7.1)."""

    format_input: Callable[[dict], str]
    response_prefix: str

    @property
    def response_header(self) -> str:
        """What ``extract_response`` removes from a generated response: ``### Response:`` or
        ``<|assistant|>:``."""
        return self.response_prefix.strip()


PROMPT_STYLES = {
    "alpaca": PromptStyle(format_input, "\n\n### Response:\n"),  # the book's (7.2)
    "phi3": PromptStyle(format_input_phi, "\n<|assistant|>:\n"),  # exercise 7.1
}


def _check_prompt_style(prompt_style):
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {sorted(PROMPT_STYLES)}, got {prompt_style!r}")
