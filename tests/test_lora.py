"""LoRA (appendix E): the book's layers and counts, merge_lora, and every fast path with non-zero adapters."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from llmscratch import GPTModel, generate, generate_text_simple, generate_text_simple_cached
from llmscratch.attention import qkv_weights_and_bias
from llmscratch.gpt2_weights import _SkipMetaInit, pretrained_gpt2_config
from llmscratch.kv_cache import CachedDecoder, KVCache, forward_with_cache, generate_text_cached
from llmscratch.lora import LinearWithLoRA, LoRALayer, lora_weight_and_bias, merge_lora, replace_linear_with_lora

CFG = {"vocab_size": 101, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.1,
       "qkv_bias": True}
ATTN_IMPLS = ["scratch", "sdpa"]
RANK, ALPHA = 4, 2.0

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def perturb_adapters(model, seed=7, scale=0.1):
    """Give every adapter a non-zero B (a fresh one is zero, so it would not show whether a path uses it)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALayer):
                module.B.copy_(scale * torch.randn(module.B.shape, generator=generator))
    return model


def lora_models(device="cpu", cfg=CFG):
    """(base, {attn_impl: the base wrapped with LoRA, non-zero adapters}), all with the same weights, eval mode."""
    torch.manual_seed(123)
    base = GPTModel(cfg).eval()
    wrapped = perturb_adapters(replace_linear_with_lora_copy(base))
    models = {}
    for attn_impl in ATTN_IMPLS:
        model = GPTModel({**cfg, "attn_impl": attn_impl})
        replace_linear_with_lora(model, RANK, ALPHA)
        model.load_state_dict(wrapped.state_dict())  # the same state-dict keys for either attention class
        models[attn_impl] = model.to(device).eval()
    return base.to(device), models


def replace_linear_with_lora_copy(model):
    model = copy.deepcopy(model)
    replace_linear_with_lora(model, RANK, ALPHA)
    return model


def train_adapters_only(model):
    """The book's setup: every parameter frozen, then only the adapters' A and B trainable."""
    for param in model.parameters():
        param.requires_grad = False
    for module in model.modules():
        if isinstance(module, LoRALayer):
            module.A.requires_grad_(True)
            module.B.requires_grad_(True)
    return model


def prompt(batch_size=2, length=5, seed=1, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, CFG["vocab_size"], (batch_size, length), generator=generator).to(device)


# --- the book's layers --------------------------------------------------------------------------------------

def test_lora_layer_has_the_books_shapes_and_starts_at_zero():
    torch.manual_seed(123)
    layer = LoRALayer(in_dim=6, out_dim=3, rank=2, alpha=4)
    assert layer.A.shape == (6, 2) and layer.B.shape == (2, 3) and layer.alpha == 4
    assert torch.count_nonzero(layer.A) == 12 and torch.count_nonzero(layer.B) == 0
    assert layer.A.abs().max() <= 1 / 2 ** 0.5  # kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in)), fan_in = rank
    assert torch.equal(layer(torch.randn(5, 6)), torch.zeros(5, 3))


def test_linear_with_lora_adds_the_low_rank_update():
    torch.manual_seed(123)
    linear = torch.nn.Linear(6, 3)
    layer = LinearWithLoRA(linear, rank=2, alpha=1.5)
    x = torch.randn(4, 5, 6)  # (b, num_tokens, in_features)
    with torch.no_grad():
        assert torch.equal(layer(x), linear(x))  # B = 0: a fresh adapter changes nothing
        layer.lora.B.normal_()
        expected = linear(x) + 1.5 * (x @ layer.lora.A @ layer.lora.B)
        torch.testing.assert_close(layer(x), expected)
        weight, bias = lora_weight_and_bias(layer)
        torch.testing.assert_close(torch.nn.functional.linear(x, weight, bias), expected)


def test_replace_linear_with_lora_wraps_every_linear_layer():
    torch.manual_seed(123)
    model = GPTModel(CFG)
    replace_linear_with_lora(model, RANK, ALPHA)
    wrapped = [m for m in model.modules() if isinstance(m, LinearWithLoRA)]
    assert len(wrapped) == 6 * CFG["n_layers"] + 1  # 4 attention + 2 feed forward per block, and the output head
    assert all(isinstance(m.linear, torch.nn.Linear) for m in wrapped)
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert len(linears) == len(wrapped)  # each one now inside its wrapper


@pytest.mark.parametrize(("rank", "alpha", "message"), [
    (0, 16, "rank must be an integer >= 1"),
    (-2, 16, "rank must be an integer >= 1"),
    (2.5, 16, "rank must be an integer >= 1"),
    (True, 16, "rank must be an integer >= 1"),
    (16, "16", "alpha must be a finite number"),
    (16, float("nan"), "alpha must be a finite number"),
    (16, None, "alpha must be a finite number"),
])
def test_bad_rank_or_alpha_is_a_value_error(rank, alpha, message):
    with pytest.raises(ValueError, match=message):
        replace_linear_with_lora(torch.nn.Sequential(torch.nn.Linear(2, 2)), rank, alpha)
    with pytest.raises(ValueError, match=message):
        LoRALayer(2, 2, rank, alpha)


def test_the_books_parameter_counts_for_the_spam_classifier():
    """GPT-2 124M as loaded (context 1024, qkv_bias), a 768 -> 2 head: 124,441,346 -> 0 -> 2,666,528 (r=16)."""
    with torch.device("meta"), _SkipMetaInit():  # shapes only: no memory, no random initialisation
        model = GPTModel(pretrained_gpt2_config("124M"))
        model.out_head = torch.nn.Linear(in_features=768, out_features=2)

        def trainable():
            return sum(p.numel() for p in model.parameters() if p.requires_grad)

        assert trainable() == 124_441_346
        for param in model.parameters():
            param.requires_grad = False
        assert trainable() == 0
        replace_linear_with_lora(model, rank=16, alpha=16)
        assert trainable() == 2_666_528


# --- merge_lora -------------------------------------------------------------------------------------------

def test_merge_lora_gives_the_same_logits_with_plain_linear_layers():
    base, models = lora_models()
    model = models["scratch"]
    idx = prompt(length=12)
    train_adapters_only(model)
    with torch.no_grad():
        expected = model(idx)
        assert (expected - base(idx)).abs().max() > 0.1  # the adapters matter
        merged = merge_lora(copy.deepcopy(model))
        torch.testing.assert_close(merged(idx), expected, atol=1e-5, rtol=0)
    assert not any(isinstance(m, (LinearWithLoRA, LoRALayer)) for m in merged.modules())
    assert not any(p.requires_grad for p in merged.parameters())  # the frozen base stays frozen
    plain = GPTModel(CFG).eval()
    plain.load_state_dict(merged.state_dict())  # strict: the plain model's keys, nothing more
    with torch.no_grad():
        torch.testing.assert_close(plain(idx), expected, atol=1e-5, rtol=0)


def test_merge_lora_in_place_and_of_a_layer_wrapped_twice():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    replace_linear_with_lora(net, rank=2, alpha=3)
    for i in (0, 2):  # a wrapper wrapped again, by hand (replace_linear_with_lora refuses a wrapped model)
        net[i].linear = LinearWithLoRA(net[i].linear, rank=1, alpha=0.5)
    perturb_adapters(net)
    x = torch.randn(6, 5)
    with torch.no_grad():
        expected = net(x)
        innermost = net[0].linear.linear
        assert merge_lora(net) is net
        assert net[0] is innermost and type(net[0]) is torch.nn.Linear  # the innermost layer, updated in place
        torch.testing.assert_close(net(x), expected, atol=1e-6, rtol=0)
        single = perturb_adapters(LinearWithLoRA(torch.nn.Linear(5, 4), 2, 2))
        expected = single(x)
        torch.testing.assert_close(merge_lora(single)(x), expected, atol=1e-6, rtol=0)  # a bare wrapper: merged
    with pytest.raises(ValueError, match="needs a torch.nn.Module"):
        merge_lora("model")


# --- every fast path with non-zero adapters ---------------------------------------------------------------

def test_eager_and_sdpa_give_the_same_logits_and_both_apply_the_adapters():
    base, models = lora_models()
    idx = prompt(length=CFG["context_length"])
    with torch.no_grad():
        eager, sdpa, without = models["scratch"](idx), models["sdpa"](idx), base(idx)
    assert (eager - without).abs().max() > 0.1  # an adapter dropped would show here
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
def test_cached_logits_equal_the_full_forward(attn_impl):
    _, models = lora_models()
    model = models[attn_impl]
    idx = prompt(length=14, seed=2)
    with torch.no_grad():
        full = models["scratch"](idx)  # (2, 14, vocab_size): the book's eager path
    cache = KVCache.for_model(model, batch_size=2, max_tokens=CFG["context_length"])
    pieces = [forward_with_cache(model, idx[:, a:b], cache) for a, b in [(0, 5), (5, 6), (6, 11), (11, 14)]]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)
    with torch.no_grad():
        decoder = CachedDecoder(model, idx[:, :3], CFG["context_length"], transpose=True)
        for n in range(3, 14):
            torch.testing.assert_close(decoder.next_token_logits(idx[:, :n]), full[:, n - 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
def test_cached_generation_equals_full_recomputation(attn_impl, transpose):
    """The same greedy tokens as the book's loop, past the context (the cache refills), with either weight layout;
    and not the base model's tokens: the adapters are in the cached path."""
    base, models = lora_models()
    model = models[attn_impl]
    idx = prompt(length=4, seed=3)
    expected = generate_text_simple(models["scratch"], idx, 30, CFG["context_length"])
    assert torch.equal(generate_text_cached(model, idx, 30, CFG["context_length"], transpose=transpose), expected)
    assert not torch.equal(generate_text_simple(base, idx, 30, CFG["context_length"]), expected)


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
def test_public_generators_with_the_cache_equal_without(attn_impl):
    _, models = lora_models()
    model = models[attn_impl]
    idx = prompt(length=6, seed=4)
    expected = generate_text_simple(model, idx, 12, 10)
    assert torch.equal(generate_text_simple_cached(model, idx, 12, 10), expected)
    assert torch.equal(generate_text_simple_cached(model, idx, 12), generate_text_simple(model, idx, 12, 16))
    assert torch.equal(generate(model, idx, 12, 10, use_cache=True), expected)
    torch.manual_seed(5)
    sampled = generate(model, idx, 12, 10, temperature=1.0, top_k=20, use_cache=False)
    torch.manual_seed(5)
    assert torch.equal(generate(model, idx, 12, 10, temperature=1.0, top_k=20, use_cache=True), sampled)


def test_sdpa_training_reaches_the_adapters_with_the_eager_gradients():
    """Training through the fused QKV (adapters folded in) gives the eager path's gradients for A and B."""
    _, models = lora_models(cfg={**CFG, "drop_rate": 0.0})
    idx = prompt(length=10, seed=6)
    grads = {}
    for attn_impl, model in models.items():
        train_adapters_only(model).train()
        loss = torch.nn.functional.cross_entropy(model(idx)[:, -1, :], torch.tensor([1, 2]))
        loss.backward()
        grads[attn_impl] = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    assert grads["sdpa"].keys() == grads["scratch"].keys() and len(grads["sdpa"]) == 2 * (6 * CFG["n_layers"] + 1)
    for name, grad in grads["scratch"].items():
        torch.testing.assert_close(grads["sdpa"][name], grad, atol=1e-5, rtol=1e-4)
    assert grads["sdpa"]["trf_blocks.0.att.W_query.lora.A"].abs().max() > 0


class DoubledLoRA(LinearWithLoRA):
    """Another function than LinearWithLoRA's: the fast paths must call it, not fold it with LoRA's formula."""

    def forward(self, x):
        return self.linear(x) + 2 * self.lora(x)


def test_a_layer_the_fast_paths_do_not_know_is_called_not_read():
    models = {}
    for attn_impl in ATTN_IMPLS:
        torch.manual_seed(123)
        model = GPTModel({**CFG, "attn_impl": attn_impl}).eval()
        for block in model.trf_blocks:
            block.att.W_key = DoubledLoRA(block.att.W_key, RANK, ALPHA)
            block.ff.layers[0] = DoubledLoRA(block.ff.layers[0], RANK, ALPHA)
        models[attn_impl] = perturb_adapters(model)
    models["sdpa"].load_state_dict(models["scratch"].state_dict())
    assert qkv_weights_and_bias(models["sdpa"].trf_blocks[0].att) is None
    idx = prompt(length=5, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(models["sdpa"](idx), models["scratch"](idx), atol=1e-5, rtol=0)
    expected = generate_text_simple(models["scratch"], idx, 20, 16)
    for model in models.values():
        for transpose in (False, True):
            assert torch.equal(generate_text_cached(model, idx, 20, 16, transpose=transpose), expected)
    merged = merge_lora(copy.deepcopy(models["scratch"]))
    assert type(merged.trf_blocks[0].att.W_key) is DoubledLoRA  # not folded with the wrong formula


def test_fused_qkv_with_a_bias_on_some_projections_only():
    torch.manual_seed(0)
    model = GPTModel({**CFG, "qkv_bias": True, "attn_impl": "sdpa"}).eval()
    reference = GPTModel({**CFG, "qkv_bias": True, "attn_impl": "scratch"}).eval()
    for m in (model, reference):
        m.trf_blocks[0].att.W_key = torch.nn.Linear(CFG["emb_dim"], CFG["emb_dim"], bias=False)
    reference.load_state_dict(model.state_dict())
    idx = prompt(length=6, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference(idx), atol=1e-5, rtol=0)
    assert torch.equal(generate_text_cached(model, idx, 8, 16), generate_text_simple(reference, idx, 8, 16))


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
def test_lora_fast_paths_on_device(device, attn_impl):
    _, models = lora_models(device)
    model = models[attn_impl]
    idx = prompt(length=5, seed=10, device=device)
    expected = generate_text_simple(models["scratch"], idx, 15, 16)
    assert torch.equal(generate_text_simple_cached(model, idx, 15, 16), expected)
    assert expected.device.type == device.type


# --- benchmarks/finetune_speed.py -------------------------------------------------------------------------

def test_finetune_speed_script_in_tiny_mode(capsys):
    from test_benchmarking import load_script

    script = load_script("finetune_speed")
    assert script.main(["--tiny", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("machine: CPU: ")
    assert [line.split()[0] for line in lines if line.split()[:1] in (["last-block"], ["full"], ["lora"])] == \
        ["last-block", "full", "lora"]
    assert re.fullmatch(r"speedup: LoRA vs full finetuning \d+\.\d\dx", lines[-1])


def test_finetune_speed_bad_arguments_are_one_line():
    from test_benchmarking import load_script

    script = load_script("finetune_speed")
    for argv in (["--device", "tpu"], ["--repeats", "2"], ["--steps", "0"]):
        with pytest.raises(SystemExit) as raised:
            script.parse_args(argv)
        assert raised.value.code not in (0, None)


# --- issue 20: a tied head, wrapping twice, the two scales ---------------------------------------------------

def test_merge_lora_leaves_a_tied_embedding_unchanged():
    """GPT-2 as load_pretrained_gpt2 loads it shares one tensor between out_head and tok_emb: merging the head's
    adapter must not add it to the embedding too, and the merged model gives the LoRA model's logits."""
    torch.manual_seed(123)
    model = GPTModel(CFG).eval()
    model.out_head.weight = model.tok_emb.weight  # tied
    embedding = model.tok_emb.weight.detach().clone()
    perturb_adapters(replace_linear_with_lora(model, RANK, ALPHA) or model)
    idx = prompt(length=12)
    with torch.no_grad():
        expected = model(idx)
        merge_lora(model)
        assert torch.equal(model.tok_emb.weight, embedding)
        torch.testing.assert_close(model(idx), expected, atol=1e-5, rtol=0)


def test_replace_linear_with_lora_twice_is_refused():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    replace_linear_with_lora(net, rank=2, alpha=2)
    with pytest.raises(ValueError, match="already holds LinearWithLoRA layers: .* call it once"):
        replace_linear_with_lora(net, rank=2, alpha=2)
    assert type(net[0].linear) is torch.nn.Linear  # not wrapped again


def test_the_two_scales_of_the_update():
    """The printed book: alpha * (x @ A @ B); the book's repository ("Add LoRA scaling"): (alpha / rank) * ...."""
    from llmscratch.lora import add_lora, lora_alpha

    assert lora_alpha(16, 16, "book") == 16 and lora_alpha(16, 16, "rank") == 1.0
    with pytest.raises(ValueError, match="scaling must be one of"):
        lora_alpha(16, 16, "paper")
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 5)
    x = torch.randn(3, 6)
    updates = {}
    for scaling in ("book", "rank"):
        torch.manual_seed(1)  # the same A for both
        net = perturb_adapters(add_lora(torch.nn.Sequential(copy.deepcopy(linear)), 4, 8.0, scaling))
        assert not any(p.requires_grad for p in net[0].linear.parameters())  # frozen, then wrapped
        assert net[0].lora.A.requires_grad and net[0].lora.B.requires_grad
        with torch.no_grad():
            updates[scaling] = net(x) - linear(x)
            lora = net[0].lora
            torch.testing.assert_close(updates[scaling], lora.alpha * (x @ lora.A @ lora.B))
    torch.testing.assert_close(updates["rank"] * 4, updates["book"])  # 4 = the rank
