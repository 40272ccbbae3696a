"""Finetuning a GPT to follow instructions, chapter 7: the prompt, the data set, the collate functions and the
response.

Introduced in ch07_finetune_instructions. The functions and classes with the book's names are the book's listings
with a call to a checking helper at the top; ``InstructionDataset`` and ``extract_response`` also take
exercise 7.1's ``prompt_style`` (keyword-only), which picks the prompt function and the response header from
:data:`PROMPT_STYLES` instead of the book's fixed Alpaca ones. In the book's order:

- 7.2 ``format_input``: the Alpaca prompt (instruction, then the input when there is one), from
  ``llmscratch.prompt_formats`` (no torch there, so the judge can use it);
- 7.3 ``InstructionDataset`` (pre-tokenized prompt + response), ``custom_collate_draft_1`` (padding),
  ``custom_collate_draft_2`` (+ targets shifted by one), ``custom_collate_fn`` (+ ``-100`` over the padding after
  the first ``<|endoftext|>``, + ``allowed_max_length``);
- 7.7 ``extract_response``: the book's ``generated_text[len(input_text):].replace("### Response:", "").strip()``,
  the course's one response post-processor (``llmscratch.batched_generation.response_text`` decodes token ids and
  calls it).

Exercise 7.1 (the Phi-3 prompt) is an option of the same code: ``format_input_phi`` and ``prompt_style="phi3"``
(keyword-only) in ``InstructionDataset`` and ``extract_response``; :data:`PROMPT_STYLES` maps each style to its
prompt function and the text put before the response.

Sections 7.5 and 7.6 need no new code: the model is GPT-2 medium loaded with
``llmscratch.load_pretrained_gpt2("355M")`` (its config is ``pretrained_gpt2_config("355M")``, the book's
``BASE_CONFIG``), and finetuning is chapter 5's ``calc_loss_loader`` and ``train_model_simple``, as in the book:
their cross-entropy ignores the targets ``-100`` (PyTorch's default ``ignore_index``). Beyond the book, in
``llmscratch.instruction_data``: the data through the course's registry, the split, the three loaders, exercise
7.2 (no loss on the prompt: ``InstructionDatasetWithMasking``, ``custom_collate_with_masking_fn``), Alpaca 52k
(exercise 7.3), the book's model names, and generating and saving the test set's responses (7.7).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .gpt2_tokenizer import _check_endoftext
from .prompt_formats import (  # re-exported: the prompt (7.2, exercise 7.1) is part of chapter 7's code
    INSTRUCTION_KEYS, PROMPT_STYLES, PromptStyle, _check_prompt_style, format_input, format_input_phi,
)

__all__ = [
    "INSTRUCTION_KEYS", "PROMPT_STYLES", "InstructionDataset", "PromptStyle", "custom_collate_draft_1",
    "custom_collate_draft_2", "custom_collate_fn", "extract_response", "format_input", "format_input_phi",
]

# --- the data sets (7.3, exercise 7.2) ----------------------------------------------------------------------


def _check_instruction_data(data, prompt_style, tokenizer=None):
    _check_prompt_style(prompt_style)
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__len__"):
        raise ValueError(f"data must be a list of entries (dicts), got {type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not set(INSTRUCTION_KEYS) <= set(entry):
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"entry {i} of data must be a dict with the keys {list(INSTRUCTION_KEYS)}, got {found}")
        not_text = next((key for key in INSTRUCTION_KEYS if not isinstance(entry[key], str)), None)
        if not_text is not None:
            raise ValueError(f"entry {i} of data: {not_text!r} is {entry[not_text]!r}, not a text (use \"\" for "
                             "no input)")
        for key in INSTRUCTION_KEYS:
            _check_endoftext(entry[key], tokenizer)


class InstructionDataset(Dataset):
    """Each entry's prompt and response (``### Response:`` and the output) as one list of token ids, tokenized
    once (ch07_finetune_instructions, 7.3). Items are lists of different lengths: ``custom_collate_fn`` pads
    them batch by batch. ``prompt_style="phi3"`` uses exercise 7.1's prompt."""

    def __init__(self, data, tokenizer, *, prompt_style="alpaca"):
        _check_instruction_data(data, prompt_style, tokenizer)  # beyond the book: text fields, a known style
        format_prompt, response_prefix = PROMPT_STYLES[prompt_style]  # beyond the book: exercise 7.1
        self.data = data

        # Pre-tokenize texts
        self.encoded_texts = []
        for entry in data:
            instruction_plus_input = format_prompt(entry)
            response_text = f"{response_prefix}{entry['output']}"
            full_text = instruction_plus_input + response_text
            self.encoded_texts.append(
                tokenizer.encode(full_text)
            )

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


# --- the collate functions (7.3, exercise 7.2) --------------------------------------------------------------


def _check_collate_args(batch, allowed_max_length=None, *, masking=False):
    if len(batch) == 0:
        raise ValueError("batch is empty: a collate function needs at least one sequence")
    if masking:
        expected = "(instruction_length, token_ids) pairs, as InstructionDatasetWithMasking gives"
        fits = all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], list) for item in batch)
    else:
        expected = "lists of token ids, as InstructionDataset gives"
        fits = all(isinstance(item, list) for item in batch)
    if not fits:
        raise ValueError(f"batch must hold {expected}; got {type(batch[0]).__name__} items")
    _check_allowed_max_length(allowed_max_length)


def _check_allowed_max_length(allowed_max_length):
    if allowed_max_length is not None and (isinstance(allowed_max_length, bool)
                                           or not isinstance(allowed_max_length, int) or allowed_max_length < 1):
        raise ValueError(f"allowed_max_length must be None or a positive number of tokens, got {allowed_max_length!r}")


def custom_collate_draft_1(
    batch,
    pad_token_id=GPT2_ENDOFTEXT_ID,
    device="cpu"
):
    """Pad each list of token ids to the batch's longest with ``pad_token_id`` (``<|endoftext|>``, 50256):
    ``[[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]`` gives a 3 x 5 tensor (ch07_finetune_instructions, 7.3)."""
    _check_collate_args(batch)  # beyond the book: lists of ids, at least one
    # Find the longest sequence in the batch
    # and increase the max length by +1, which will add one extra
    # padding token below
    batch_max_length = max(len(item)+1 for item in batch)

    # Pad and prepare inputs
    inputs_lst = []

    for item in batch:
        new_item = item.copy()
        # Add an <|endoftext|> token
        new_item += [pad_token_id]
        # Pad sequences to batch_max_length
        padded = (
            new_item + [pad_token_id] *
            (batch_max_length - len(new_item))
        )
        # Via padded[:-1], we remove the extra padded token
        # that has been added via the +1 setting in batch_max_length
        # (the extra padding token will be relevant in later codes)
        inputs = torch.tensor(padded[:-1])
        inputs_lst.append(inputs)

    # Convert list of inputs to tensor and transfer to target device
    inputs_tensor = torch.stack(inputs_lst).to(device)
    return inputs_tensor


def custom_collate_draft_2(
    batch,
    pad_token_id=GPT2_ENDOFTEXT_ID,
    device="cpu"
):
    """``custom_collate_draft_1`` plus the targets: the padded inputs shifted one token to the left
    (ch07_finetune_instructions, 7.3). Returns ``(inputs, targets)``."""
    _check_collate_args(batch)  # beyond the book: lists of ids, at least one
    # Find the longest sequence in the batch
    batch_max_length = max(len(item)+1 for item in batch)

    # Pad and prepare inputs
    inputs_lst, targets_lst = [], []

    for item in batch:
        new_item = item.copy()
        # Add an <|endoftext|> token
        new_item += [pad_token_id]
        # Pad sequences to max_length
        padded = (
            new_item + [pad_token_id] *
            (batch_max_length - len(new_item))
        )
        inputs = torch.tensor(padded[:-1])  # Truncate the last token for inputs
        targets = torch.tensor(padded[1:])  # Shift +1 to the right for targets
        inputs_lst.append(inputs)
        targets_lst.append(targets)

    # Convert list of inputs to tensor and transfer to target device
    inputs_tensor = torch.stack(inputs_lst).to(device)
    targets_tensor = torch.stack(targets_lst).to(device)
    return inputs_tensor, targets_tensor


def custom_collate_fn(
    batch,
    pad_token_id=GPT2_ENDOFTEXT_ID,
    ignore_index=-100,
    allowed_max_length=None,
    device="cpu"
):
    """The book's collate function: pad, shift, replace every padding target but the first (the end of the
    response) by ``ignore_index``, and cut the sequences to ``allowed_max_length`` tokens when it is given
    (ch07_finetune_instructions, 7.3). Returns ``(inputs, targets)`` on ``device``.

    ``[[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]`` gives the targets ``[[1, 2, 3, 4, 50256],
    [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]``.
    """
    _check_collate_args(batch, allowed_max_length)  # beyond the book: lists of ids, a sensible length
    # Find the longest sequence in the batch
    batch_max_length = max(len(item)+1 for item in batch)

    # Pad and prepare inputs and targets
    inputs_lst, targets_lst = [], []

    for item in batch:
        new_item = item.copy()
        # Add an <|endoftext|> token
        new_item += [pad_token_id]
        # Pad sequences to max_length
        padded = (
            new_item + [pad_token_id] *
            (batch_max_length - len(new_item))
        )
        inputs = torch.tensor(padded[:-1])  # Truncate the last token for inputs
        targets = torch.tensor(padded[1:])  # Shift +1 to the right for targets

        # New: Replace all but the first padding tokens in targets by ignore_index
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index

        # New: Optionally truncate to maximum sequence length
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]

        inputs_lst.append(inputs)
        targets_lst.append(targets)

    # Convert list of inputs and targets to tensors and transfer to target device
    inputs_tensor = torch.stack(inputs_lst).to(device)
    targets_tensor = torch.stack(targets_lst).to(device)

    return inputs_tensor, targets_tensor


# --- the response (7.7) -------------------------------------------------------------------------------------


def _check_generated(generated_text, input_text, prompt_style):
    _check_prompt_style(prompt_style)
    if not generated_text.startswith(input_text):
        raise ValueError("generated_text must start with input_text: pass the decoded output of generate() "
                         "(prompt and continuation) and the prompt it was given")


def extract_response(generated_text, input_text, *, prompt_style="alpaca"):
    """The model's answer: the generated text after the prompt, without the response header (``### Response:``,
    or ``<|assistant|>:`` for ``prompt_style="phi3"``) and the surrounding white space
    (ch07_finetune_instructions, 7.7). The batched path (``generate_responses``) post-processes with it too."""
    _check_generated(generated_text, input_text, prompt_style)  # beyond the book: the text and its prompt match
    response_text = (
        generated_text[len(input_text):]
        .replace(PROMPT_STYLES[prompt_style].response_header, "")
        .strip()
    )
    return response_text
