"""Chapter 4 (GPT model): the book's values on GPT-2 small, the GPT-2 sizes, causality, clear errors, CPU vs CUDA."""

from __future__ import annotations

import pytest
import torch

from llmscratch import GPT2_CONFIGS, GPT_CONFIG_124M, GPTModel
from llmscratch.kv_cache import generate_text_simple_cached

HELLO_IDS = [15496, 11, 314, 716]  # "Hello, I am"
BOOK_GREEDY_IDS = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267, 49706, 43231, 47062, 34657]
BOOK_GREEDY_TEXT = "Hello, I am Featureiman Byeswickattribute argue logger Normandy Compton analogous"

TINY = {"vocab_size": 97, "context_length": 12, "emb_dim": 16, "n_heads": 4, "n_layers": 2, "drop_rate": 0.1,
        "qkv_bias": False}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def count_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def model_124m():
    """The book's seeded GPT-2 small with random weights, built once for this module (eval mode)."""
    torch.manual_seed(123)
    return GPTModel(GPT_CONFIG_124M).eval()


def same_weights(model, **cfg_changes):
    """A model with other cfg settings sharing ``model``'s tensors (built on the meta device: no copy, fast)."""
    with torch.device("meta"):
        other = GPTModel({**GPT_CONFIG_124M, **cfg_changes})
    other.load_state_dict(model.state_dict(), assign=True)
    return other.eval()


# --- 4.6: the book's numbers ------------------------------------------------------------------------------

def test_book_parameter_counts_and_size(model_124m):
    total_params = count_params(model_124m)
    assert total_params == 163_009_536
    assert model_124m.tok_emb.weight.shape == model_124m.out_head.weight.shape == (50257, 768)
    assert total_params - count_params(model_124m.out_head) == 124_412_160  # output head tied to tok_emb
    total_size_mb = total_params * 4 / 1024**2  # float32: 4 bytes per parameter
    assert round(total_size_mb, 2) == 621.83


@pytest.mark.parametrize("variant", ["scratch", "sdpa", "scratch+cache", "sdpa+cache"])
def test_book_greedy_generation(model_124m, variant):
    attn_impl, _, cache = variant.partition("+")
    model = model_124m if attn_impl == "scratch" else same_weights(model_124m, attn_impl=attn_impl)
    idx = torch.tensor([HELLO_IDS])
    out = generate_text_simple_cached(model, idx, max_new_tokens=10, context_size=GPT_CONFIG_124M["context_length"],
                               use_cache=bool(cache))
    assert out.tolist() == [BOOK_GREEDY_IDS]


def test_book_greedy_text():
    tiktoken = pytest.importorskip("tiktoken")
    tokenizer = tiktoken.get_encoding("gpt2")
    assert tokenizer.encode("Hello, I am") == HELLO_IDS
    assert tokenizer.decode(BOOK_GREEDY_IDS) == BOOK_GREEDY_TEXT


# --- exercise 4.2: the GPT-2 sizes, counted on the meta device (shapes only, no memory, no init) -----------

def test_gpt2_sizes_parameter_counts():
    totals, tied = {}, {}
    for name, cfg in GPT2_CONFIGS.items():
        with torch.device("meta"):
            model = GPTModel(cfg)
        totals[name] = count_params(model)
        tied[name] = totals[name] - count_params(model.out_head)
    assert totals == {"124M": 163_009_536, "355M": 406_212_608, "774M": 838_220_800, "1558M": 1_637_792_000}
    assert tied == {"124M": 124_412_160, "355M": 354_749_440, "774M": 773_891_840, "1558M": 1_557_380_800}
    for name, count in tied.items():  # the names are the tied counts, in millions
        assert count == pytest.approx(float(name.removesuffix("M")) * 1e6, rel=0.02)
    assert list(tied.values()) == sorted(tied.values())


# --- causality: tokens after position t cannot change the logits at positions <= t ---------------------

@pytest.mark.parametrize("attn_impl", ["scratch", "sdpa"])
@pytest.mark.parametrize("t", [0, 5, 10])
def test_model_is_causal(attn_impl, t):
    torch.manual_seed(0)
    model = GPTModel({**TINY, "attn_impl": attn_impl}).eval()
    idx = torch.randint(0, TINY["vocab_size"], (2, 12))
    changed = idx.clone()
    changed[:, t + 1:] = (idx[:, t + 1:] + 1) % TINY["vocab_size"]
    with torch.no_grad():
        logits, logits_changed = model(idx), model(changed)
    assert logits.shape == (2, 12, TINY["vocab_size"])
    torch.testing.assert_close(logits_changed[:, :t + 1], logits[:, :t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(logits_changed[:, t + 1:], logits[:, t + 1:])


# --- clear errors ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return GPTModel(TINY).eval()


def test_float_token_ids_are_a_type_error(tiny_model):
    with pytest.raises(TypeError, match="integer"):
        tiny_model(torch.tensor([[1.0, 2.0, 3.0]]))


def test_one_dimensional_token_ids_are_a_value_error(tiny_model):
    with pytest.raises(ValueError, match=r"\(batch_size, num_tokens\).*unsqueeze"):
        tiny_model(torch.tensor([1, 2, 3]))


def test_input_longer_than_context_is_a_value_error(tiny_model):
    with pytest.raises(ValueError, match=r"13 tokens.*context_length is 12"):
        tiny_model(torch.zeros(1, 13, dtype=torch.long))


def test_unknown_attn_impl_is_a_value_error():
    with pytest.raises(ValueError, match=r"flash.*'scratch'.*'sdpa'"):
        GPTModel({**TINY, "attn_impl": "flash"})


# --- devices -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attn_impl", ["scratch", "sdpa"])
def test_forward_shape_on_device(device, attn_impl):
    torch.manual_seed(0)
    model = GPTModel({**TINY, "attn_impl": attn_impl}).to(device).eval()
    idx = torch.randint(0, TINY["vocab_size"], (3, 7), device=device)
    with torch.no_grad():
        logits = model(idx)
    assert logits.shape == (3, 7, TINY["vocab_size"])
    assert logits.device.type == device.type
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("attn_impl", ["scratch", "sdpa"])
def test_device_agrees_with_cpu(device, attn_impl):
    """The same weights give the same logits (within 1e-4) and the same greedy tokens on ``device`` as on CPU."""
    torch.manual_seed(0)
    cfg = {**TINY, "attn_impl": attn_impl}
    cpu_model = GPTModel(cfg).eval()
    model = GPTModel(cfg)
    model.load_state_dict(cpu_model.state_dict())
    model = model.to(device).eval()
    idx = torch.randint(0, TINY["vocab_size"], (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(idx.to(device)).cpu(), cpu_model(idx), atol=1e-4, rtol=0)
    for use_cache in (False, True):
        expected = generate_text_simple_cached(cpu_model, idx[:, :3], 15, TINY["context_length"], use_cache=use_cache)
        out = generate_text_simple_cached(model, idx[:, :3].to(device), 15, TINY["context_length"], use_cache=use_cache)
        assert torch.equal(out.cpu(), expected)


# --- issue 20: the book repository's GPTModelFast ---------------------------------------------------------------


def test_gpt_model_fast_gives_gpt_models_logits_with_the_same_weights():
    """``GPTModelFast(cfg)`` is GPTModel on the SDPA path: the same state-dict keys, both ways, same logits."""
    from llmscratch import GPTModelFast, MultiHeadAttentionSDPA

    torch.manual_seed(123)
    book = GPTModel(TINY).eval()
    fast = GPTModelFast(TINY).eval()
    assert isinstance(fast, GPTModel) and isinstance(fast.trf_blocks[0].att, MultiHeadAttentionSDPA)
    assert fast.state_dict().keys() == book.state_dict().keys()
    fast.load_state_dict(book.state_dict())  # strict: weights of either load into the other
    ids = torch.randint(0, TINY["vocab_size"], (2, TINY["context_length"]))
    with torch.no_grad():
        torch.testing.assert_close(fast(ids), book(ids), atol=1e-5, rtol=0)
    torch.manual_seed(7)
    again = GPTModel(TINY).eval()
    again.load_state_dict(GPTModelFast(TINY).state_dict())  # and back
    assert "attn_impl" not in TINY  # the caller's config is not changed


def test_gpt_model_fast_save_load_round_trip(tmp_path):
    from llmscratch import GPTModelFast

    torch.manual_seed(123)
    fast = GPTModelFast(TINY).eval()
    torch.save(fast.state_dict(), tmp_path / "fast.pth")
    loaded = GPTModelFast(TINY).eval()
    loaded.load_state_dict(torch.load(tmp_path / "fast.pth", weights_only=True))
    ids = torch.randint(0, TINY["vocab_size"], (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(ids), fast(ids))
    with pytest.raises(ValueError, match="the config lacks 'n_layers'"):
        GPTModelFast({key: value for key, value in TINY.items() if key != "n_layers"})
