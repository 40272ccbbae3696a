"""Batched generation with the KV cache (ch07, beyond the book): the book's one-at-a-time tokens, prompt by prompt."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from llmscratch import GPT_CONFIG_TINY, GPTModel, generate, text_to_token_ids, token_ids_to_text
from llmscratch.batched_generation import generate_batched, generate_responses
from llmscratch.lora import LinearWithLoRA, replace_linear_with_lora

CFG = {"vocab_size": 101, "context_length": 32, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.1,
       "qkv_bias": True}
LENGTHS = [1, 6, 3, 11, 2, 8, 4]  # different lengths: every batch of more than one row holds padding
NEW = 12

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def make_model(attn_impl="scratch", device="cpu", **changes):
    torch.manual_seed(123)
    return GPTModel({**CFG, **changes, "attn_impl": attn_impl}).to(device).eval()


def make_prompts(lengths=LENGTHS, vocab_size=CFG["vocab_size"]):
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(0, vocab_size, (n,), generator=gen).tolist() for n in lengths]


def book_new_tokens(model, prompts, max_new_tokens, context_size, eos_id):
    """The book's loop: one prompt at a time, no cache; the new tokens of each."""
    device = model.tok_emb.weight.device
    return [generate(model, torch.tensor([p], device=device), max_new_tokens, context_size, eos_id=eos_id)
            [0, len(p):].tolist() for p in prompts]


def early_eos(model, prompts):
    """An eos id that the book's greedy run of prompt 3 produces at its 4th new token: some prompts stop early."""
    return book_new_tokens(model, prompts[3:4], NEW, CFG["context_length"], None)[0][3]


@pytest.mark.parametrize("attn_impl", ["scratch", "sdpa"])
@pytest.mark.parametrize("batch_size", [1, 3, 100])
def test_batched_equals_book_one_at_a_time(attn_impl, batch_size, device):
    model = make_model(attn_impl, device)
    prompts = make_prompts()
    eos_id = early_eos(model, prompts)
    expected = book_new_tokens(model, prompts, NEW, CFG["context_length"], eos_id)
    assert any(len(ids) < NEW for ids in expected) and any(len(ids) == NEW for ids in expected)  # eos is tested
    assert generate_batched(model, prompts, NEW, CFG["context_length"], eos_id, batch_size=batch_size,
                            pad_token_id=0) == expected


@pytest.mark.parametrize("transpose", [False, True])
def test_without_eos_and_either_weight_layout(transpose):
    model = make_model("sdpa")
    prompts = make_prompts()
    expected = book_new_tokens(model, prompts, NEW, 20, None)  # context_size below the model's
    out = generate_batched(model, prompts, NEW, 20, batch_size=4, pad_token_id=5, transpose=transpose)
    assert out == expected and all(len(ids) == NEW for ids in out)


@pytest.mark.parametrize("attn_impl", ["scratch", "sdpa"])
def test_lora_model(attn_impl):
    model = make_model(attn_impl)
    replace_linear_with_lora(model, rank=2, alpha=0.5)
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, LinearWithLoRA):  # non-zero B: the adapters change the tokens
            torch.nn.init.normal_(module.lora.B, std=0.5)
    prompts = make_prompts()
    eos_id = early_eos(model, prompts)
    expected = book_new_tokens(model, prompts, NEW, CFG["context_length"], eos_id)
    assert generate_batched(model, prompts, NEW, CFG["context_length"], eos_id, batch_size=3,
                            pad_token_id=0) == expected


def test_order_inputs_and_eos_at_the_first_step():
    model = make_model()
    prompts = make_prompts()
    expected = book_new_tokens(model, prompts, NEW, CFG["context_length"], None)
    reordered = [prompts[i] for i in (4, 0, 6, 2, 5, 1, 3)]
    as_tensors = [torch.tensor(p) if i % 2 else torch.tensor([p]) for i, p in enumerate(reordered)]  # 1-D, (1, n)
    out = generate_batched(model, as_tensors, NEW, CFG["context_length"], batch_size=2, pad_token_id=0)
    assert out == [expected[i] for i in (4, 0, 6, 2, 5, 1, 3)]
    # eos as the first new token of prompts 2 and 6: they end at once, with no new tokens, the others go on
    eos_id = expected[2][0]
    out = generate_batched(model, prompts, NEW, CFG["context_length"], eos_id, batch_size=3, pad_token_id=0)
    assert out == book_new_tokens(model, prompts, NEW, CFG["context_length"], eos_id)
    assert [i for i, ids in enumerate(out) if ids == []] == [2, 6]
    both = [prompts[2], prompts[6]]  # a batch whose every row ends at the first step
    assert generate_batched(model, both, NEW, CFG["context_length"], eos_id, pad_token_id=0) == [[], []]
    assert generate_batched(model, prompts, 0, CFG["context_length"], pad_token_id=0) == [[]] * len(prompts)


def test_prompts_past_the_context_are_cropped_like_the_book():
    """Prompt + new tokens beyond context_size: those prompts take the book's crop (one at a time)."""
    model = make_model("sdpa")
    prompts = make_prompts([3, 30, 40, 5])  # 30 + 12 and 40 (> 32 positions) need the crop
    expected = book_new_tokens(model, prompts, NEW, CFG["context_length"], None)
    assert generate_batched(model, prompts, NEW, CFG["context_length"], batch_size=4, pad_token_id=0) == expected


@pytest.mark.parametrize(("prompts", "kwargs", "message"), [
    ([], {}, "non-empty list"),
    ([1, 2, 3], {}, "prompt 0 must be a list of token ids"),
    ([[1, 2], []], {}, "prompt 1 is empty"),
    ([[1, 2], [3, 101]], {}, r"token id 101, outside the model's vocabulary \(0 to 100\)"),
    ([[1.0, 2.0]], {}, "prompt 0 must be a list of token ids"),
    ([torch.ones(2, 2, dtype=torch.long)], {}, "prompt 0 must be a 1-D tensor"),
    ([[1, 2]], {"max_new_tokens": -1}, "max_new_tokens must be an integer >= 0"),
    ([[1, 2]], {"batch_size": 0}, "batch_size must be an integer >= 1"),
    ([[1, 2]], {"context_size": 33}, r"context_size must be between 1 and the model's context_length \(32\)"),
    ([[1, 2]], {"eos_id": 50256}, "eos_id must be a token id between 0 and 100"),
    ([[1, 2]], {"pad_token_id": 50256}, "pad_token_id must be a token id between 0 and 100"),
])
def test_bad_input_is_a_value_error(prompts, kwargs, message):
    args = {"max_new_tokens": 3, "context_size": 32, "pad_token_id": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_batched(make_model(), prompts, **args)


def test_generate_responses_equals_the_books_loop(tokenizer):
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_TINY).eval()  # GPT-2's vocabulary, random weights
    prompts = ["### Instruction:\nName a color.\n\n### Response:", "Hi", "Below is an instruction.\n\nSay yes."]
    context_size, new = GPT_CONFIG_TINY["context_length"], 6
    eos_id = generate(model, text_to_token_ids(prompts[0], tokenizer), new, context_size)[0, -3].item()
    expected = []
    for input_text in prompts:  # the book's loop of section 7.7, with our eos_id
        token_ids = generate(model=model, idx=text_to_token_ids(input_text, tokenizer), max_new_tokens=new,
                             context_size=context_size, eos_id=eos_id)
        generated_text = token_ids_to_text(token_ids, tokenizer)
        expected.append(generated_text[len(input_text):].replace("### Response:", "").strip())
    out = generate_responses(model, tokenizer, prompts, max_new_tokens=new, context_size=context_size,
                             eos_id=eos_id, batch_size=2, device="cpu", progress=False)
    assert out == expected
    with pytest.raises(ValueError, match="the model is on cpu, not on meta"):
        generate_responses(model, tokenizer, prompts, context_size=context_size, device="meta", progress=False)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        generate_responses(model, tokenizer, "Hi", context_size=context_size, progress=False)


def test_response_speed_script_on_a_tiny_gpt(capsys, monkeypatch):
    pytest.importorskip("llmscratch.instruction")
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(benchmarks) not in sys.path:
        sys.path.insert(0, str(benchmarks))
    spec = importlib.util.spec_from_file_location("benchmarks_response_speed", benchmarks / "response_speed.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    real = script.generate_batched

    def one_token_off(model, prompts, *args, **kwargs):  # the timed run's prompt 1 gets a wrong last token
        out = real(model, prompts, *args, **kwargs)
        if len(out) == 3:
            out[1][-1] = (out[1][-1] + 1) % GPT_CONFIG_TINY["vocab_size"]
        return out

    monkeypatch.setattr(script, "generate_batched", one_token_off)  # the report must show a difference
    script.main(["--model", "tiny", "--prompts", "3", "--max-new-tokens", "4", "--batch-size", "2", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("CPU: ")
    assert any(line.startswith("same tokens: 2 of 3 prompts (1 differ)") for line in lines)
    assert any(re.fullmatch(r"  prompt 1: new token 3: book \d+, batched \d+; top-2 logit gap \S+", line)
               for line in lines)
    assert re.fullmatch(r"speedup: \d+\.\d\dx", lines[-1])


# --- issue 20: one response post-processor; API misuse is one clear ValueError ----------------------------------


def test_one_post_processor_serves_the_book_loop_and_the_batched_path(tokenizer):
    """``response_text`` (token ids) is ``extract_response`` (text) after decoding: the phi-3 header goes too, and a
    prompt that is not the decoded text's start is the same ValueError."""
    from llmscratch.batched_generation import response_text
    from llmscratch.instruction import extract_response

    prompt = "<|user|>\nName a color.\n"
    ids, new = tokenizer.encode(prompt), tokenizer.encode("<|assistant|>:\n Blue. ", allowed_special="all")
    generated = tokenizer.decode(ids + new)
    for style, expected in [("phi3", "Blue."), ("alpaca", "<|assistant|>:\n Blue.")]:
        assert response_text(tokenizer, prompt, ids, new, prompt_style=style) == expected
        assert extract_response(generated, prompt, prompt_style=style) == expected
    with pytest.raises(ValueError, match="generated_text must start with input_text"):
        response_text(tokenizer, "Another prompt", ids, new)


def test_generate_responses_takes_the_prompt_style(tokenizer):
    """Exercise 7.1's phi-3 prompts: the book's loop with ``extract_response(..., prompt_style="phi3")``."""
    from llmscratch.instruction import extract_response

    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_TINY).eval()
    prompts = ["<|user|>\nName a color.\n", "<|user|>\nSay yes.\n"]
    context_size, new = GPT_CONFIG_TINY["context_length"], 5
    expected = [extract_response(token_ids_to_text(generate(model, text_to_token_ids(p, tokenizer), new,
                                                            context_size, eos_id=50256), tokenizer),
                                 p, prompt_style="phi3") for p in prompts]
    out = generate_responses(model, tokenizer, prompts, max_new_tokens=new, context_size=context_size,
                             prompt_style="phi3", progress=False)
    assert out == expected


@pytest.mark.parametrize("change, message", [
    ({"device": "bogus"}, r"device='bogus' is not a device the course runs on: use cpu, cuda, cuda:N or mps"),
    ({"device": 0}, r"device must be a string such as 'cpu' or 'cuda', or a torch.device, got int"),
    ({"model": "swapped"}, r"model must be a GPTModel .* got Encoding: pass the model first"),
    ({"tokenizer": None}, r"tokenizer must have encode and decode, got NoneType: use .*gpt2_tokenizer\(\)"),
    ({"prompt_style": "chatml"}, r"prompt_style must be one of \['alpaca', 'phi3'\], got 'chatml'"),
])
def test_generate_responses_misuse_is_one_clear_value_error(tokenizer, change, message):
    model = make_model(vocab_size=50257)
    args = {"model": model, "tokenizer": tokenizer, "prompts": ["Hi"]}
    kwargs = {"context_size": CFG["context_length"], "max_new_tokens": 2, "progress": False}
    if change.get("model") == "swapped":
        args["model"], args["tokenizer"] = tokenizer, model
    else:
        (args if "tokenizer" in change else kwargs).update(change)
    with pytest.raises(ValueError, match=message):
        generate_responses(args["model"], args["tokenizer"], args["prompts"], **kwargs)


def test_generate_batched_and_instruction_responses_misuse(tokenizer):
    from llmscratch.instruction_run import instruction_responses

    with pytest.raises(ValueError, match=r"model must be a GPTModel .* got str: pass the model first, as in "
                                         r"generate_batched\(model, prompts"):
        generate_batched("model", [[1]], 3, 8)
    with pytest.raises(ValueError, match="entries must be a non-empty list of dicts with 'instruction' and 'input'"):
        instruction_responses(make_model(vocab_size=50257), tokenizer, "Name a color.", progress=False)
