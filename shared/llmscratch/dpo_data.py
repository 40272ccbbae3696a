"""The data of the DPO notebook (the book's bonus notebook of chapter 7, section 2.3): ``PreferenceDataset``, the
DPO ``custom_collate_fn`` and ``decode_tokens_from_batch``.

Introduced in ch07_finetune_instructions/dpo_preference_tuning (the book repository's
``ch07/04_preference-tuning-with-dpo/dpo-from-scratch.ipynb``). The classes and functions with the book's names are
its listings, with at most a call to a checking helper at the top. ``custom_collate_fn`` here is the DPO one (it pads
``chosen`` and ``rejected`` to one length and builds the masks that keep only the response's tokens), a homonym of
chapter 7's ``llmscratch.instruction.custom_collate_fn``. :mod:`llmscratch.dpo` re-exports these names, so
``from llmscratch.dpo import PreferenceDataset, custom_collate_fn`` works as well.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .prompt_formats import format_input

PREFERENCE_KEYS = ("instruction", "input", "output", "chosen", "rejected")  # the fields of each entry

__all__ = ["PREFERENCE_KEYS", "PreferenceDataset", "custom_collate_fn", "decode_tokens_from_batch"]


# --- the data (section 2.3) ----------------------------------------------------------------------------------


def _check_preference_data(data):
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__len__"):
        raise ValueError(f"data must be a list of entries (dicts), got {type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not {"instruction", "input", "chosen", "rejected"} <= set(entry):
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"entry {i} of data must be a dict with instruction, input, chosen and rejected (the "
                             f"preference data: load_preference_data()), got {found}")


class PreferenceDataset(Dataset):
    """Each entry as three lists of token ids: the prompt, the prompt with the chosen response and the prompt with
    the rejected one (``### Response:`` between them), tokenized once (ch07_finetune_instructions/
    dpo_preference_tuning, 2.3). Items are dicts ``{"prompt", "chosen", "rejected"}``."""

    def __init__(self, data, tokenizer):
        _check_preference_data(data)  # beyond the book: entries with the fields DPO reads
        self.data = data

        # Pre-tokenize texts
        self.encoded_texts = []
        for entry in data:
            prompt = format_input(entry)
            rejected_response = entry["rejected"]
            chosen_response = entry["chosen"]

            prompt_tokens = tokenizer.encode(prompt)
            chosen_full_text = f"{prompt}\n\n### Response:\n{chosen_response}"
            rejected_full_text = f"{prompt}\n\n### Response:\n{rejected_response}"
            chosen_full_tokens = tokenizer.encode(chosen_full_text)
            rejected_full_tokens = tokenizer.encode(rejected_full_text)

            self.encoded_texts.append({
                "prompt": prompt_tokens,
                "chosen": chosen_full_tokens,
                "rejected": rejected_full_tokens,
            })

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def _check_preference_batch(batch, allowed_max_length):
    if len(batch) == 0:
        raise ValueError("batch is empty: the collate function needs at least one item of PreferenceDataset")
    if not all(isinstance(item, dict) and {"prompt", "chosen", "rejected"} <= set(item) for item in batch):
        raise ValueError("batch must hold the dicts {'prompt', 'chosen', 'rejected'} of PreferenceDataset, got "
                         f"{type(batch[0]).__name__} items")
    if allowed_max_length is not None and (isinstance(allowed_max_length, bool)
                                           or not isinstance(allowed_max_length, int) or allowed_max_length < 1):
        raise ValueError(f"allowed_max_length must be None or a positive number of tokens, got {allowed_max_length!r}")


def custom_collate_fn(
    batch,
    pad_token_id=GPT2_ENDOFTEXT_ID,
    allowed_max_length=None,
    mask_prompt_tokens=True,
    device="cpu"
):
    """The DPO collate function: pad ``chosen`` and ``rejected`` to one common length (the longest plus one) with
    ``pad_token_id`` and build ``chosen_mask`` / ``rejected_mask``, True on the response's tokens only (False on
    the padding and, with ``mask_prompt_tokens``, on the prompt and the two newlines before ``### Response``)
    (ch07_finetune_instructions/dpo_preference_tuning, 2.3). Returns a dict: ``prompt`` (a list of tensors),
    ``chosen``, ``rejected``, ``chosen_mask``, ``rejected_mask`` (tensors ``(batch, length)`` on ``device``).
    """
    _check_preference_batch(batch, allowed_max_length)  # beyond the book: items of PreferenceDataset
    # Initialize lists to hold batch data
    batch_data = {
        "prompt": [],
        "chosen": [],
        "rejected": [],
        "rejected_mask": [],
        "chosen_mask": []

    }

    # Determine the longest sequence to set a common padding length
    max_length_common = 0
    if batch:
        for key in ["chosen", "rejected"]:
            current_max = max(len(item[key])+1 for item in batch)
            max_length_common = max(max_length_common, current_max)

    # Process each item in the batch
    for item in batch:
        prompt = torch.tensor(item["prompt"])
        batch_data["prompt"].append(prompt)

        for key in ["chosen", "rejected"]:
            # Adjust padding according to the common maximum length
            sequence = item[key]
            padded = sequence + [pad_token_id] * (max_length_common - len(sequence))
            mask = torch.ones(len(padded)).bool()

            # Set mask for all padding tokens to False
            mask[len(sequence):] = False

            # Set mask for all input tokens to False
            # +2 sets the 2 newline ("\n") tokens before "### Response" to False
            if mask_prompt_tokens:
                mask[:prompt.shape[0]+2] = False

            batch_data[key].append(torch.tensor(padded))
            batch_data[f"{key}_mask"].append(mask)

    # Final processing
    for key in ["chosen", "rejected", "chosen_mask", "rejected_mask"]:
        # Stack all sequences into a tensor for the given key
        tensor_stack = torch.stack(batch_data[key])

        # Optionally truncate to maximum sequence length
        if allowed_max_length is not None:
            tensor_stack = tensor_stack[:, :allowed_max_length]

        # Move to the specified device
        batch_data[key] = tensor_stack.to(device)

    return batch_data


def decode_tokens_from_batch(token_ids, tokenizer):
    """The text of a tensor of token ids (any shape, flattened) (ch07_finetune_instructions/dpo_preference_tuning,
    2.3)."""
    ids_in_python_list = token_ids.flatten().tolist()
    return tokenizer.decode(ids_in_python_list)
