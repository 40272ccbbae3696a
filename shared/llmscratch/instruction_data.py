"""The instruction data of chapter 7 beyond the book's listings: reading it through the course's data registry,
the split, the three loaders, exercise 7.2's masked targets, Alpaca 52k (exercise 7.3) and the book's model names.

Introduced in ch07_finetune_instructions (7.2, 7.4, 7.5). The book downloads ``instruction-data.json`` itself
(``download_and_load_file``); here ``get_data("instruction-data")`` fetches it (cached, checked against its
sha256, from the offline mirror when there is one). The whole preparation of 7.2 to 7.4 is::

    data = load_instruction_data()                                   # 1,100 entries
    train_data, val_data, test_data = split_instruction_data(data)   # 935, 55, 110
    torch.manual_seed(123)
    train_loader, val_loader, test_loader = create_instruction_loaders(
        train_data, val_data, test_data, tokenizer, device=device)   # 116, 7 and 14 batches of (up to) 8

Exercise 7.2 (``InstructionDatasetWithMasking``, ``custom_collate_with_masking_fn``) is the book's solution with
exercise 7.1's prompt styles; ``create_instruction_loaders(..., mask_instructions=True)`` uses it. The book's code
of the chapter (``format_input``, ``InstructionDataset``, ``custom_collate_fn``...) lives in
``llmscratch.instruction``; the model of 7.5 comes from ``llmscratch.load_pretrained_gpt2`` (see
:func:`model_size_of`).
"""

from __future__ import annotations

import re
from functools import partial

import torch
from torch.utils.data import DataLoader

from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .data import get_data, read_json_records
from .gpt2_tokenizer import allowing_endoftext
from .instruction import (
    INSTRUCTION_KEYS, PROMPT_STYLES, InstructionDataset, _check_allowed_max_length, _check_collate_args,
    _check_prompt_style, custom_collate_fn,
)

INSTRUCTION_DATA = "instruction-data"  # the registry's names (llmscratch.data.DATA_FILES)
ALPACA_DATA = "alpaca-52k"
ALPACA_ENTRIES = 52_002  # entries of Stanford Alpaca's alpaca_data.json
# The book's names of the GPT-2 sizes (7.5): CHOOSE_MODEL is one of them.
GPT2_MODEL_NAMES = ("gpt2-small (124M)", "gpt2-medium (355M)", "gpt2-large (774M)", "gpt2-xl (1558M)")


# --- the data (7.2, exercise 7.3) ---------------------------------------------------------------------------


def load_instruction_data(path=None):
    """The chapter's instruction data, a list of dicts ``{"instruction", "input", "output"}``: 1,100 entries
    (ch07_finetune_instructions, 7.2).

    ``path`` defaults to the registry's file (``get_data("instruction-data")``, checked against its sha256); any
    file is checked to be a JSON list of entries with exactly those three text fields (ValueError otherwise).
    """
    path = get_data(INSTRUCTION_DATA) if path is None else path
    return read_json_records(path, INSTRUCTION_KEYS)


def load_alpaca_data(path=None, *, expected_entries=ALPACA_ENTRIES):
    """Stanford Alpaca's 52,002 instruction examples, a list of dicts ``{"instruction", "input", "output"}``, the
    larger data set of exercise 7.3 (ch07_finetune_instructions, exercise 7.3).

    ``path`` defaults to the registry's file (``get_data("alpaca-52k")``, downloaded once, 22 MB). Its sha256 is
    not pinned: it could not be taken on the offline machine that built the course. Its structure is verified
    instead, by the registry when the file is fetched and here again: a JSON list of ``expected_entries``
    entries, each with exactly the text fields instruction, input and output; anything else is a ValueError
    that says what is wrong. The book's solution uses it with ``batch_size=4`` and ``allowed_max_length=512``.
    """
    path = get_data(ALPACA_DATA) if path is None else path
    return read_json_records(path, INSTRUCTION_KEYS, expected_entries=expected_entries)


def split_instruction_data(data, train_frac=0.85, test_frac=0.1):
    """The book's split, in the data's order (no shuffling): the first 85% for training, the next 10% for
    testing, the remaining 5% for validation (ch07_finetune_instructions, 7.2). 1,100 entries give 935, 110
    and 55.

    Returns ``(train_data, val_data, test_data)``, the order of the loaders (the book's slices are train, test,
    val: the test set is the middle slice).
    """
    if not (0 < train_frac < 1 and 0 <= test_frac < 1 and train_frac + test_frac <= 1):
        raise ValueError(f"train_frac ({train_frac}) and test_frac ({test_frac}) must be fractions with "
                         "train_frac > 0 and a sum of at most 1 (the rest is the validation set), e.g. 0.85 and 0.1")
    train_portion = int(len(data) * train_frac)  # 85% for training
    test_portion = int(len(data) * test_frac)    # 10% for testing

    train_data = data[:train_portion]
    test_data = data[train_portion:train_portion + test_portion]
    val_data = data[train_portion + test_portion:]
    return train_data, val_data, test_data


# --- exercise 7.2: no loss on the prompt --------------------------------------------------------------------


class InstructionDatasetWithMasking(InstructionDataset):
    """``InstructionDataset`` that also keeps the number of prompt tokens (instruction and input) of each entry;
    items are ``(instruction_length, token_ids)``, for ``custom_collate_with_masking_fn``
    (ch07_finetune_instructions, exercise 7.2).

    As in the book's solution, the prompt is tokenized on its own: its tokens are the first ``instruction_length``
    tokens of the whole text when the prompt ends with a non-space character, since GPT-2's tokenizer always
    splits before the newline that starts the response text (true of all 1,100 entries of the course's data in
    both prompt styles; the tests check it).
    """

    def __init__(self, data, tokenizer, *, prompt_style="alpaca"):
        super().__init__(data, tokenizer, prompt_style=prompt_style)
        format_prompt = PROMPT_STYLES[prompt_style].format_input

        # New: Separate list for instruction lengths
        self.instruction_lengths = []
        for entry in data:
            instruction_plus_input = format_prompt(entry)
            # New: collect instruction lengths
            instruction_length = len(tokenizer.encode(instruction_plus_input))
            self.instruction_lengths.append(instruction_length)

    def __getitem__(self, index):
        # New: return both instruction lengths and texts separately
        return self.instruction_lengths[index], self.encoded_texts[index]


def custom_collate_with_masking_fn(
    batch,
    pad_token_id=GPT2_ENDOFTEXT_ID,
    ignore_index=-100,
    allowed_max_length=None,
    device="cpu"
):
    """``custom_collate_fn`` for ``(instruction_length, token_ids)`` items that also sets the targets over the
    prompt to ``ignore_index`` (ch07_finetune_instructions, exercise 7.2).

    Target ``i`` is token ``i + 1``, so the first ``instruction_length - 1`` targets are prompt tokens; from
    ``instruction_length - 1`` on, the targets are the response header (``\\n\\n### Response:\\n``), the response
    and the first ``<|endoftext|>``, kept as in the book's solution (the model still learns to open its answer
    with the header and to end it).
    """
    _check_collate_args(batch, allowed_max_length, masking=True)  # beyond the book: pairs, a sensible length
    # Find the longest sequence in the batch
    batch_max_length = max(len(item)+1 for instruction_length, item in batch)   # New: batch is now a tuple

    # Pad and prepare inputs and targets
    inputs_lst, targets_lst = [], []

    for instruction_length, item in batch:  # New: batch is now a tuple
        new_item = item.copy()
        # Add an <|endoftext|> token
        new_item += [pad_token_id]
        # Pad sequences to max_length
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])  # Truncate the last token for inputs
        targets = torch.tensor(padded[1:])  # Shift +1 to the right for targets

        # Replace all but the first padding tokens in targets by ignore_index
        mask = targets == pad_token_id
        indices = torch.nonzero(mask).squeeze()
        if indices.numel() > 1:
            targets[indices[1:]] = ignore_index

        # New: Mask all input and instruction tokens in the targets
        targets[:instruction_length-1] = ignore_index

        # Optionally truncate to maximum sequence length
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]

        inputs_lst.append(inputs)
        targets_lst.append(targets)

    # Convert list of inputs and targets to tensors and transfer to target device
    inputs_tensor = torch.stack(inputs_lst).to(device)
    targets_tensor = torch.stack(targets_lst).to(device)

    return inputs_tensor, targets_tensor


# --- the loaders (7.4) --------------------------------------------------------------------------------------


def create_instruction_loaders(train_data, val_data, test_data, tokenizer, *, batch_size=8, device="cpu",
                               allowed_max_length=1024, prompt_style="alpaca", mask_instructions=False,
                               num_workers=0):
    """The book's three loaders (ch07_finetune_instructions, 7.4): ``InstructionDataset`` over each split and
    ``functools.partial(custom_collate_fn, device=device, allowed_max_length=1024)``; the training loader shuffles
    and drops its last, smaller batch, the others keep their order and every entry.

    Seed first (``torch.manual_seed(123)``, as the book) for the book's order: its training batches are
    ``(8, 61)``, ``(8, 76)``, ``(8, 73)``... ``prompt_style="phi3"`` uses exercise 7.1's prompt,
    ``mask_instructions=True`` exercise 7.2's masked targets (``InstructionDatasetWithMasking`` and
    ``custom_collate_with_masking_fn``). The collate function moves each batch to ``device``, so keep
    ``num_workers=0`` with a GPU (worker processes cannot hand CUDA tensors over). A tiktoken ``tokenizer``
    encodes ``<|endoftext|>`` in an entry as the special token (``allowing_endoftext``). Returns
    ``(train_loader, val_loader, test_loader)``.
    """
    _check_prompt_style(prompt_style)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of entries, got {batch_size!r}")
    if len(train_data) < batch_size:
        raise ValueError(f"the training set has {len(train_data)} entries, fewer than one batch of {batch_size}")
    if mask_instructions:
        dataset_class, collate_fn = InstructionDatasetWithMasking, custom_collate_with_masking_fn
    else:
        dataset_class, collate_fn = InstructionDataset, custom_collate_fn
    _check_allowed_max_length(allowed_max_length)  # now, not at the first batch
    tokenizer = allowing_endoftext(tokenizer)  # an entry may quote <|endoftext|>: the special token
    customized_collate_fn = partial(collate_fn, device=device, allowed_max_length=allowed_max_length)
    loaders = []
    for i, data in enumerate((train_data, val_data, test_data)):
        dataset = dataset_class(data, tokenizer, prompt_style=prompt_style)
        loaders.append(DataLoader(dataset, batch_size=batch_size, collate_fn=customized_collate_fn, shuffle=i == 0,
                                  drop_last=i == 0, num_workers=num_workers))
    return tuple(loaders)


# --- the model's names (7.5, 7.7) ---------------------------------------------------------------------------


def model_size_of(choose_model):
    """The size of one of the book's model names: ``"gpt2-medium (355M)"`` -> ``"355M"``, the book's
    ``CHOOSE_MODEL.split(" ")[-1].lstrip("(").rstrip(")")`` (ch07_finetune_instructions, 7.5).

    The size is a key of ``llmscratch.GPT2_CONFIGS``: ``pretrained_gpt2_config(size)`` is the book's
    ``BASE_CONFIG`` (context 1024, dropout 0.0, query/key/value bias) and ``load_pretrained_gpt2(size)`` the
    book's GPT-2 with OpenAI's weights loaded.
    """
    if choose_model not in GPT2_MODEL_NAMES:
        raise ValueError(f"choose_model must be one of {list(GPT2_MODEL_NAMES)}, got {choose_model!r}")
    model_size = choose_model.split(" ")[-1].lstrip("(").rstrip(")")
    return model_size


def sft_model_filename(choose_model):
    """The book's file name for the finetuned model: ``"gpt2-medium (355M)"`` -> ``"gpt2-medium355M-sft.pth"``
    (ch07_finetune_instructions, 7.7)."""
    if not isinstance(choose_model, str) or not choose_model.strip():
        raise ValueError(f"choose_model must be a model name such as 'gpt2-medium (355M)', got {choose_model!r}")
    return f"{re.sub(r'[ ()]', '', choose_model)}-sft.pth"
