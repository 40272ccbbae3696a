"""Timing helpers shared by the benchmark scripts (``benchmarks/``) and the notebooks: one source of truth.

Introduced in ch03_attention (fast path: ``compare_attention``) and ch04_gpt_model (KV cache:
``compare_generation``). Every figure is measured in one run on one machine, so print ``machine_label()`` next
to it: speedups are ratios on that machine, not universal constants.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from .attention import MultiHeadAttention, MultiHeadAttentionSDPA, MultiHeadAttentionWrapper
from .gpt import GPT_CONFIG_124M, GPTModel, generate_text_simple
from .gpt2_weights import gpt_to_hf_state_dict
from .kv_cache import generate_text_cached
from .precision import benchmark_dtypes
from .settings import resolve_device

# tiktoken's ids for "Hello, I am": used when tiktoken's vocabulary cannot be loaded (offline, no cache).
_HELLO_PROMPT = "Hello, I am"
_HELLO_IDS = [15496, 11, 314, 716]


def _device(device) -> torch.device:
    """``device`` checked by the course's one device resolver (``llmscratch.settings``); ``None``: the CPU."""
    return resolve_device(str(device)) if device is not None else torch.device("cpu")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_label(device=None) -> str:
    """Where a timing was measured, e.g. ``"CPU: AMD EPYC, 2 threads, torch 2.13.0"`` (ch03_attention, fast path).

    ``device`` is a ``torch.device`` or a string; ``None`` means the CPU.
    """
    device = _device(device)
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    if device.type != "cpu":
        return f"{device.type.upper()}, torch {torch.__version__}"
    threads = torch.get_num_threads()
    plural = "" if threads == 1 else "s"
    return f"CPU: {_cpu_model()}, {threads} thread{plural}, torch {torch.__version__}"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def busy_machine_note() -> str | None:
    """A warning line when other processes load the CPU (load average above the number of cores), else None."""
    if not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load <= cores:
        return None
    return (f"note: load average {load:.1f} on {cores} cores; other processes compete for the CPU, "
            "so these timings are noisy")


def time_call(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1, device=None) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls.

    On CUDA the GPU is synchronized before and after each call, so the time covers the kernels, not just
    their launch (ch03_attention, fast path).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    device = _device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def compare_attention(batch_size: int = 8, num_tokens: int = 1024, d_model: int = 768, num_heads: int = 12, *,
                      device="cpu", dtypes: Sequence[torch.dtype] | None = None, repeats: int = 3):
    """Forward time of the three multi-head attentions on a (batch_size, num_tokens, d_model) input.

    Introduced in ch03_attention (fast path). Compares the book's ``MultiHeadAttentionWrapper`` (``num_heads``
    ``CausalAttention`` heads of ``d_model // num_heads`` each, so the output is ``d_model`` wide), the book's
    ``MultiHeadAttention`` and ``MultiHeadAttentionSDPA`` (same weights as ``MultiHeadAttention``), in eval
    mode, without gradients, dropout 0. Returns a ``pandas.DataFrame`` with one row per implementation and
    dtype: ``ms`` (median), ``speedup`` (``MultiHeadAttention``'s time over this one's, same dtype) and
    ``max_abs_diff`` (largest difference from ``MultiHeadAttention``'s output; empty for the wrapper, whose
    weights differ).

    ``dtypes=None`` (the default): float32 and the low-precision dtype that ``llmscratch.precision.choose_dtype``
    picks for ``device``: bfloat16 on the CPU and on GPUs with native bfloat16, float16 on a GPU without it
    (Colab's T4). Off the CPU the choice and its reason are printed (one line); the reason is also in
    ``table.attrs["precision"]``.
    """
    import pandas as pd

    device = _device(device)
    reason = "dtypes as given"
    if dtypes is None:
        dtypes, reason = benchmark_dtypes(device)
        if device.type != "cpu":  # on the CPU the bfloat16 rows are the notebook's stored, explained output
            print(f"low precision: {reason}")
    torch.manual_seed(123)
    head_dim = d_model // num_heads
    modules = {
        "MultiHeadAttentionWrapper": MultiHeadAttentionWrapper(d_model, head_dim, num_tokens, 0.0, num_heads),
        "MultiHeadAttention": MultiHeadAttention(d_model, d_model, num_tokens, 0.0, num_heads),
        "MultiHeadAttentionSDPA": MultiHeadAttentionSDPA(d_model, d_model, num_tokens, 0.0, num_heads),
    }
    modules["MultiHeadAttentionSDPA"].load_state_dict(modules["MultiHeadAttention"].state_dict())
    x_fp32 = torch.randn(batch_size, num_tokens, d_model, generator=torch.Generator().manual_seed(456))

    rows = []
    for dtype in dtypes:
        x = x_fp32.to(device=device, dtype=dtype)
        outputs, runs = {}, {name: [] for name in modules}
        with torch.no_grad():
            converted = {name: copy.deepcopy(m).to(device=device, dtype=dtype).eval() for name, m in modules.items()}
            for name, module in converted.items():
                outputs[name] = module(x)  # also the warm-up call
            for _ in range(repeats):  # interleaved, so a change in the machine's load hits every row alike
                for name, module in converted.items():
                    runs[name].append(time_call(lambda m=module: m(x), repeats=1, warmup=0, device=device))
        times = {name: statistics.median(seconds) for name, seconds in runs.items()}
        reference = outputs["MultiHeadAttention"].float()
        for name in modules:
            diff = None
            if name != "MultiHeadAttentionWrapper":
                diff = (outputs[name].float() - reference).abs().max().item()
            rows.append({
                "implementation": name,
                "dtype": _dtype_name(dtype),
                "ms": 1000 * times[name],
                "speedup": times["MultiHeadAttention"] / times[name],
                "max_abs_diff": diff,
            })
        del outputs, converted
    table = pd.DataFrame(rows)
    table.attrs["precision"] = reason
    return table


def _encode(prompt) -> list[int]:
    if not isinstance(prompt, str):
        return [int(i) for i in prompt]  # already token ids
    try:
        import tiktoken

        return tiktoken.get_encoding("gpt2").encode(prompt)
    except Exception:
        if prompt == _HELLO_PROMPT:  # offline without tiktoken's cache: the ids are known
            return list(_HELLO_IDS)
        raise


def _transformers_gpt2(model: GPTModel, cfg):
    """``transformers.GPT2LMHeadModel`` of the same size holding ``model``'s (random) weights; no download."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
        n_layer=cfg["n_layers"], n_head=cfg["n_heads"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, activation_function="gelu_new", tie_word_embeddings=False,
    )
    hf = GPT2LMHeadModel(config)
    hf.load_state_dict(gpt_to_hf_state_dict(model, cfg))  # the package's one GPT-2 <-> GPTModel mapping
    return hf


def _generation_variants(model, cfg, idx, include_transformers: bool) -> dict:
    """name -> ``generate(n)`` (the token ids after ``n`` new tokens) for ``compare_generation``'s variants."""
    context_size = cfg["context_length"]
    variants = {
        "no cache": lambda n: generate_text_simple(model, idx, n, context_size),
        "KV cache": lambda n: generate_text_cached(model, idx, n, context_size),
    }
    if include_transformers:
        try:
            import transformers
        except ImportError:
            return variants
        transformers.logging.set_verbosity_error()
        hf = _transformers_gpt2(model, cfg).to(idx.device).eval()
        mask = torch.ones_like(idx)
        variants["transformers generate()"] = lambda n: hf.generate(
            idx, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
            pad_token_id=cfg["vocab_size"] - 1)
    return variants


def _time_interleaved(variants: dict, n: int, repeats: int, device) -> tuple[dict, dict]:
    """Each variant once per round, ``repeats`` rounds; round ``r`` starts at variant ``r % len(variants)``, so
    that no variant always runs right after the same one. Returns name -> seconds and name -> token ids per run."""
    names = list(variants)
    seconds, outputs = {name: [] for name in names}, {name: [] for name in names}
    for r in range(repeats):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            out = {}
            seconds[name].append(time_call(lambda g=variants[name]: out.update(ids=g(n)), repeats=1, warmup=0,
                                           device=device))
            outputs[name].append(out["ids"].cpu())
    return seconds, outputs


def compare_generation(cfg=GPT_CONFIG_124M, *, prompt=_HELLO_PROMPT, max_new_tokens: int = 200, device="cpu",
                       include_transformers: bool = True, repeats: int = 3):
    """Greedy generation speed: the book's loop, the same loop with a KV cache, and ``transformers``.

    Introduced in ch04_gpt_model (KV cache). A seeded random ``GPTModel(cfg)`` (eval mode, no gradients)
    generates ``max_new_tokens`` tokens after ``prompt`` (a string, or token ids) with
    ``generate_text_simple`` and ``generate_text_cached`` (the KV cache); the two must produce the same
    tokens (else ``AssertionError``: a speedup for a wrong output is no speedup). If ``transformers`` is
    installed and ``include_transformers``, a ``GPT2LMHeadModel`` of the same size holding the same random
    weights (built from a ``GPT2Config``, nothing downloaded) runs ``generate(do_sample=False)`` with its
    default KV cache.

    After one short warm-up call each, the variants are timed interleaved, as in ``compare_attention``: one
    run of each per round, ``repeats`` rounds (at least 3, else ``ValueError``: the median of fewer runs is
    one noisy run), each round starting at the next variant, so that a change in the machine's load hits
    every row alike. Returns a ``pandas.DataFrame``: ``repeats``, ``seconds`` (the median), ``tokens_per_s``,
    ``speedup_vs_no_cache`` and, with transformers, ``vs_transformers`` (tokens/s over transformers');
    ``same_tokens`` says whether every run of a row produced the no-cache row's tokens.
    """
    import pandas as pd

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if repeats < 3:
        raise ValueError(f"repeats must be at least 3 (the median of fewer runs is one noisy run), got {repeats}")
    device = _device(device)
    context_size = cfg["context_length"]
    torch.manual_seed(123)
    model = GPTModel(cfg).to(device).eval()
    idx = torch.tensor([_encode(prompt)], device=device)
    if include_transformers and idx.shape[1] + max_new_tokens > context_size:
        raise ValueError(
            f"transformers' GPT-2 cannot go past its {context_size} positions (prompt {idx.shape[1]} + "
            f"{max_new_tokens} new tokens); pass include_transformers=False to time only generate_text_simple"
        )

    with torch.no_grad():
        variants = _generation_variants(model, cfg, idx, include_transformers)
        for generate in variants.values():
            generate(min(2, max_new_tokens))  # warm-up: first-call allocations and kernel selection
        runs, outputs = _time_interleaved(variants, max_new_tokens, repeats, device)
        del variants
    reference = outputs["no cache"][0]
    assert all(torch.equal(ids, reference) for ids in outputs["no cache"] + outputs["KV cache"]), \
        "generation with the KV cache produced different tokens than without it"

    times = {name: statistics.median(seconds) for name, seconds in runs.items()}
    has_transformers = "transformers generate()" in times
    rows = []
    for name, seconds in times.items():
        row = {
            "implementation": name,
            "new_tokens": max_new_tokens,
            "repeats": repeats,
            "seconds": seconds,
            "tokens_per_s": max_new_tokens / seconds,
            "speedup_vs_no_cache": times["no cache"] / seconds,
        }
        if has_transformers:
            row["vs_transformers"] = times["transformers generate()"] / seconds
        row["same_tokens"] = all(ids.shape == reference.shape and bool(torch.equal(ids, reference))
                                 for ids in outputs[name])
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["compare_attention", "compare_generation", "machine_label", "time_call"]
