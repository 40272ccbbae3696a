"""Chapter 7's run as reusable steps: the model to finetune, the finetuned model as one file, its test responses.

Introduced in ch07_finetune_instructions, 7.5 to 7.7, for the command line (``llmscratch.cli_instructions``) and
any script that finetunes, saves and reloads an instruction model:

- ``build_instruction_model``: what 7.5 finetunes, OpenAI's GPT-2 (the book: 355M), or a model from random
  weights (GPT-2 355M's shapes, or a tiny GPT for quick runs); with ``lora_rank``, appendix E's LoRA (every
  weight frozen, adapters on every linear layer);
- ``save_instruction_model`` / ``load_instruction_model``: the book saves ``model.state_dict()`` (7.7); this file
  also holds the config, the prompt style and what made the model (base, masking, LoRA, data, epochs...), with
  ``gpt2_weights`` False when it started from random weights: such a model is not GPT-2. It loads with
  ``torch.load(weights_only=True)`` (``llmscratch.checkpoints``);
- ``instruction_responses``: the responses to entries, as 7.7 generates them for the test set (the prompt of
  the entry's style, greedy, up to ``<|endoftext|>``, the response header removed), batched with the KV cache.
"""

from __future__ import annotations

import torch

from .batched_generation import DEFAULT_BATCH_SIZE, generate_responses
from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .checkpoints import describe_kind, load_checkpoint, read_training_state, save_checkpoint
from .gpt import GPT2_CONFIGS, GPT_CONFIG_TINY, GPTModel
from .gpt2_weights import load_pretrained_gpt2, pretrained_gpt2_config
from .instruction import PROMPT_STYLES, _check_prompt_style
from .lora import add_lora

INSTRUCTION_MODEL_KIND = "instruction-model"  # training_state["kind"] of a file of save_instruction_model
SCRATCH_SIZE = "355M"  # the shapes of "from-scratch": the book's model of chapter 7, GPT-2 medium
TINY_BASE, SCRATCH_BASE = "tiny from scratch", "from-scratch"  # the bases with random weights
# A tiny GPT with the book's context of 1,024 tokens: the same allowed_max_length and generation as GPT-2
TINY_INSTRUCTION_CONFIG = {**GPT_CONFIG_TINY, "context_length": 1024, "drop_rate": 0.0}
_RESERVED = ("kind", "config", "base", "gpt2_weights", "description", "prompt_style")  # set by save_instruction_model


def check_base(base):
    """``ValueError`` unless ``base`` is ``"gpt2-SIZE"`` (SIZE a key of ``GPT2_CONFIGS``), ``"from-scratch"`` or
    ``"tiny from scratch"`` (ch07_finetune_instructions, 7.5)."""
    sizes = [f"gpt2-{size}" for size in GPT2_CONFIGS]
    if base not in (*sizes, SCRATCH_BASE, TINY_BASE):
        raise ValueError(f"base must be one of {[*sizes, SCRATCH_BASE, TINY_BASE]}, got {base!r}")


def describe_base(base):
    """One line on what a model finetuned from ``base`` is, saying NOT GPT-2 for random weights
    (ch07_finetune_instructions, 7.5)."""
    check_base(base)
    if base.startswith("gpt2-"):
        return f"OpenAI's GPT-2 {base.removeprefix('gpt2-')} finetuned to follow instructions"
    shapes = f"GPT-2 {SCRATCH_SIZE}'s architecture" if base == SCRATCH_BASE else "a tiny GPT"
    return f"{shapes} finetuned from random weights: NOT GPT-2 (it never saw OpenAI's weights)"


def untie_output_head(model):
    """Give ``model.out_head`` its own copy of the token embedding when the two share one tensor, as
    ``load_pretrained_gpt2`` ties them; returns the model (ch07_finetune_instructions, 7.5).

    The book's ``load_weights_into_gpt`` copies GPT-2's embedding into the head, so finetuning trains the two
    apart (``merge_lora`` gives a merged layer a new weight, so a tied head would not change the embedding
    either, but full finetuning would train one tensor for both).
    """
    if model.out_head.weight is model.tok_emb.weight:
        model.out_head.weight = torch.nn.Parameter(model.tok_emb.weight.detach().clone())
    return model


def instruction_model_config(base):
    """The ``GPTModel`` config of ``base`` (see ``build_instruction_model``) (ch07_finetune_instructions, 7.5)."""
    check_base(base)
    if base.startswith("gpt2-"):
        return pretrained_gpt2_config(base.removeprefix("gpt2-"))
    return dict(TINY_INSTRUCTION_CONFIG) if base == TINY_BASE else pretrained_gpt2_config(SCRATCH_SIZE)


def build_instruction_model(base, *, lora_rank=None, lora_alpha=None, lora_scaling="book", pretrained=True):
    """``(model, config)``: the model chapter 7 finetunes (ch07_finetune_instructions, 7.5; LoRA: appendix E).

    ``base``: ``"gpt2-355M"`` (the book's; any size) loads OpenAI's weights with the book's ``BASE_CONFIG``
    (``pretrained_gpt2_config``: context 1,024, no dropout, query/key/value bias); ``"from-scratch"`` builds the
    same 355M shapes with random weights; ``"tiny from scratch"`` a tiny GPT (``TINY_INSTRUCTION_CONFIG``). Seed
    first (``torch.manual_seed``) for reproducible random weights and LoRA adapters. With ``lora_rank``, every
    weight is frozen and every linear layer gets adapters of that rank and ``lora_alpha`` (default: the rank, as
    appendix E's 16 and 16), scaled as ``lora_scaling`` says (``"book"``, the printed book's ``alpha``, or
    ``"rank"``, the book repository's ``alpha / rank``: ``llmscratch.lora.lora_alpha``). ``pretrained=False``
    builds a GPT-2 base with random weights, for a resumed run that loads its own. The model is in training
    mode, on the CPU.
    """
    config = instruction_model_config(base)
    if lora_rank is not None and lora_alpha is None:
        lora_alpha = lora_rank
    if base.startswith("gpt2-") and pretrained:
        model = untie_output_head(load_pretrained_gpt2(base.removeprefix("gpt2-"), config))
    else:
        model = GPTModel(config)
    if lora_rank is not None:  # appendix E: freeze everything, then add the (trainable) adapters
        add_lora(model, lora_rank, lora_alpha, lora_scaling)
    return model.train(), dict(config)


def save_instruction_model(path, model, config, *, base, prompt_style="alpaca", **made_with):
    """Save a finetuned instruction model with its config and what made it, atomically; returns the path
    (ch07_finetune_instructions, 7.7).

    ``model`` must be a plain ``GPTModel`` (merge LoRA adapters first: ``merge_lora``). ``base`` as in
    ``build_instruction_model``; the file records ``gpt2_weights`` (False for random weights: not GPT-2) and a
    one-line ``description``. ``made_with``: the run's settings (e.g. ``mask_instructions``, ``lora``, ``data``,
    ``epochs``, ``lr``), numbers, strings, ``None`` and lists/dicts of them.
    """
    check_base(base)
    _check_prompt_style(prompt_style)
    reserved = sorted(set(made_with) & set(_RESERVED))
    if reserved:
        raise ValueError(f"{', '.join(reserved)} are set by save_instruction_model itself; drop them from the "
                         "run's settings")
    return save_checkpoint(path, model, None, kind=INSTRUCTION_MODEL_KIND, config=dict(config), base=base,
                           gpt2_weights=base.startswith("gpt2-"), description=describe_base(base),
                           prompt_style=prompt_style, **made_with)


def load_instruction_model(path, device="cpu"):
    """``(model, info)`` from a file of ``save_instruction_model``: the ``GPTModel`` on ``device`` in eval mode,
    and the dict of what the file records (``config``, ``base``, ``gpt2_weights``, ``description``,
    ``prompt_style`` and the run's settings). Loads with ``torch.load(weights_only=True)``; a file of another
    kind (a pretraining checkpoint, a classifier) is a ``ValueError`` that says which (ch07_finetune_instructions,
    7.7)."""
    state = read_training_state(path)
    if state.get("kind") != INSTRUCTION_MODEL_KIND:
        raise ValueError(f"{path} is a checkpoint but not an instruction model saved by save_instruction_model "
                         f"(kind {state.get('kind')!r}): it is {describe_kind(state.get('kind'))}; finetune an "
                         "instruction model with finetune-instructions")
    if state.get("prompt_style") not in PROMPT_STYLES or not isinstance(state.get("config"), dict):
        raise ValueError(f"{path} records no valid prompt style or config: the file is damaged")
    model = GPTModel(state["config"])
    load_checkpoint(path, model, map_location="cpu", config=state["config"])
    info = {key: value for key, value in state.items() if key != "kind"}
    return model.to(device).eval(), info


def instruction_responses(model, tokenizer, entries, *, prompt_style="alpaca", max_new_tokens=256,
                          batch_size=DEFAULT_BATCH_SIZE, progress=True):
    """The model's response to each entry (a dict with ``instruction`` and ``input``), in order: 7.7's loop over
    the test set, batched with the KV cache (ch07_finetune_instructions, 7.7).

    The prompt is the style's (``format_input``, or ``format_input_phi`` for ``"phi3"``); generation is greedy,
    ``context_size`` the model's context, ``eos_id`` 50256 (``<|endoftext|>``), up to ``max_new_tokens``; the
    text after the prompt is kept without the response header (``### Response:`` or ``<|assistant|>:``). Put
    the model in eval mode first.
    """
    _check_prompt_style(prompt_style)
    if isinstance(entries, (str, dict)) or not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError(f"entries must be a non-empty list of dicts with 'instruction' and 'input' (e.g. the test "
                         f"part of split_instruction_data), got {type(entries).__name__}")
    style = PROMPT_STYLES[prompt_style]
    prompts = [style.format_input(entry) for entry in entries]
    return generate_responses(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                              context_size=model.pos_emb.num_embeddings, eos_id=GPT2_ENDOFTEXT_ID,
                              batch_size=batch_size, prompt_style=prompt_style, progress=progress)


__all__ = ["INSTRUCTION_MODEL_KIND", "TINY_INSTRUCTION_CONFIG", "build_instruction_model", "check_base",
           "describe_base", "instruction_model_config", "instruction_responses", "load_instruction_model",
           "save_instruction_model",
           "untie_output_head"]
