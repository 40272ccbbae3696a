"""The book's GPT-2 loading listings of 5.5 (``assign``, ``load_weights_into_gpt``) and the book repository's
``download_and_load_gpt2``, over Hugging Face's ``model.safetensors`` instead of OpenAI's TensorFlow checkpoint.

Introduced in ch05_pretraining, 5.5. The course's own loader, :func:`llmscratch.gpt2_weights.load_pretrained_gpt2`,
does the same job with the weights in memory once; these functions keep the book's names and shapes so a reader
can run the book's code as printed.
"""

from __future__ import annotations

import torch

from .gpt2_download import download_gpt2
from .gpt2_weights import _check, _config_from_json, _hf_plan, _open_tensors, pretrained_gpt2_config

__all__ = ["assign", "download_and_load_gpt2", "load_weights_into_gpt"]


def assign(left, right):
    """``right`` as a new ``nn.Parameter`` after checking it has ``left``'s shape (ch05_pretraining, 5.5).

    The book's helper; ``right`` may be a tensor or a NumPy array.
    """
    if left.shape != right.shape:
        raise ValueError(f"Shape mismatch. Left: {left.shape}, Right: {right.shape}")
    return torch.nn.Parameter(torch.as_tensor(right).clone().detach())


def _check_gpt2_params(params):
    """A ``ValueError`` naming the fix unless ``params`` holds GPT-2's tensors under Hugging Face's names or is the
    book's nested ``params`` of ``download_and_load_gpt2``; to the latter, Hugging Face's names are added (the
    same arrays, as tensors sharing their memory), which is the layout ``load_weights_into_gpt`` reads."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict of GPT-2's tensors, got {type(params).__name__}: use "
                         "safetensors.torch.load_file('model.safetensors') or download_and_load_gpt2(...)[1]")
    if {"blocks", "wte", "wpe", "g", "b"} <= set(params):  # the book's layout (OpenAI's TensorFlow checkpoint)
        params.update(_book_params_to_hf(params))
    names = {key.removeprefix("transformer.") for key in params}
    if "tok_emb.weight" in names:
        raise ValueError("params holds GPTModel's own names (a state dict of this package): load it with "
                         "gpt.load_state_dict(params) or load_pretrained_gpt2(path)")
    if not {"wte.weight", "wpe.weight", "h.0.attn.c_attn.weight"} <= names:
        raise ValueError(f"params holds no GPT-2 tensors under Hugging Face's names (wte.weight, h.0.attn.c_attn."
                         f"weight, ...; found e.g. {sorted(names)[:3]}): use safetensors.torch.load_file("
                         "'model.safetensors') or download_and_load_gpt2(...)[1]")


def _book_params_to_hf(params) -> dict:
    """The book's nested ``params`` under Hugging Face's flat names (``h.0.attn.c_attn.weight``...): the same
    arrays, as tensors (``torch.as_tensor`` shares a NumPy array's memory)."""
    flat = {"wte.weight": params["wte"], "wpe.weight": params["wpe"], "ln_f.weight": params["g"],
            "ln_f.bias": params["b"]}
    for i, block in enumerate(params["blocks"]):
        for part, layers in (("attn", ("c_attn", "c_proj")), ("mlp", ("c_fc", "c_proj"))):
            for layer in layers:
                flat[f"h.{i}.{part}.{layer}.weight"] = block[part][layer]["w"]
                flat[f"h.{i}.{part}.{layer}.bias"] = block[part][layer]["b"]
        for norm in ("ln_1", "ln_2"):
            flat[f"h.{i}.{norm}.weight"], flat[f"h.{i}.{norm}.bias"] = block[norm]["g"], block[norm]["b"]
    return {name: torch.as_tensor(value) for name, value in flat.items()}


def download_and_load_gpt2(model_size, models_dir, *, endpoint: str | None = None,
                           local_files_only: bool | None = None):
    """The book's ``settings, params = download_and_load_gpt2(model_size="124M", models_dir="gpt2")``
    (ch05_pretraining, 5.5), from Hugging Face's ``model.safetensors`` instead of OpenAI's TensorFlow checkpoint
    (no TensorFlow needed; the weights are the same).

    - ``model_size``: ``"124M"``, ``"355M"``, ``"774M"`` or ``"1558M"`` (a ``ValueError`` otherwise).
    - ``models_dir``: where the downloads are cached (``download_gpt2``'s ``cache_dir``: Hugging Face's cache
      layout inside it, not the book's ``models_dir/124M/`` files); a second call downloads nothing.
    - Returns the book's two values. ``settings``: the book's ``hparams.json``, ``{"n_vocab", "n_ctx", "n_embd",
      "n_head", "n_layer"}`` (from ``config.json``). ``params``: the book's nested dict of NumPy float arrays in
      the checkpoint's shapes: ``"blocks"`` (one dict a block: ``"attn"`` and ``"mlp"`` with ``"c_attn"``,
      ``"c_proj"``, ``"c_fc"`` as ``{"w", "b"}``, ``w`` stored (in, out); ``"ln_1"``, ``"ln_2"`` as
      ``{"g", "b"}``), ``"b"`` and ``"g"`` (the final layer norm), ``"wpe"``, ``"wte"``.

    ``load_weights_into_gpt(gpt, params)`` takes these ``params`` as the book's does. Beyond the book:
    ``endpoint`` and ``local_files_only`` are passed to ``download_gpt2``. ``load_pretrained_gpt2(model_size)``
    gives the loaded model directly, with half the memory.
    """
    path = download_gpt2(model_size, cache_dir=models_dir, endpoint=endpoint, local_files_only=local_files_only)
    cfg = _config_from_json(path.parent / "config.json")
    settings = {"n_vocab": cfg["vocab_size"], "n_ctx": cfg["context_length"], "n_embd": cfg["emb_dim"],
                "n_head": cfg["n_heads"], "n_layer": cfg["n_layers"]}
    with _open_tensors([path]) as (shapes, read, _):
        plan = _hf_plan(pretrained_gpt2_config(model_size) | {key: cfg[key] for key in (
            "vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")})
        _check(plan, shapes, [path], cfg)

        def array(name):
            return read(name).numpy()

        def weight_and_bias(prefix, w="w"):
            return {w: array(prefix + ".weight"), "b": array(prefix + ".bias")}

        blocks = [{"attn": {layer: weight_and_bias(f"h.{i}.attn.{layer}") for layer in ("c_attn", "c_proj")},
                   "mlp": {layer: weight_and_bias(f"h.{i}.mlp.{layer}") for layer in ("c_fc", "c_proj")},
                   "ln_1": weight_and_bias(f"h.{i}.ln_1", "g"), "ln_2": weight_and_bias(f"h.{i}.ln_2", "g")}
                  for i in range(cfg["n_layers"])]
        params = {"blocks": blocks, "b": array("ln_f.bias"), "g": array("ln_f.weight"),
                  "wpe": array("wpe.weight"), "wte": array("wte.weight")}  # the book's order of keys
    return settings, params


def load_weights_into_gpt(gpt, params):
    """Copy GPT-2's weights ``params`` into the book's ``GPTModel`` ``gpt``, tensor by tensor (ch05_pretraining, 5.5).

    The book's function, reading Hugging Face's ``model.safetensors`` layout (``params`` as returned by
    ``safetensors.torch.load_file``; names with or without ``transformer.``) instead of OpenAI's TensorFlow
    checkpoint: ``c_attn`` packs query, key and value along its last dimension, and the ``Conv1D`` weights are
    stored (in, out), so they are transposed for ``nn.Linear``. GPT-2 ties the output head to the token
    embedding, so ``out_head`` gets ``wte``. ``load_pretrained_gpt2`` does the same with less memory.

    The book's nested ``params`` of ``download_and_load_gpt2`` work too: the leading check adds Hugging Face's
    names to that dict (the same arrays); anything else is a ``ValueError`` that says what to pass.
    """
    _check_gpt2_params(params)  # beyond the book: the book's nested params too, a clear error for others
    params = {key.removeprefix("transformer."): value for key, value in params.items()}
    gpt.pos_emb.weight = assign(gpt.pos_emb.weight, params["wpe.weight"])
    gpt.tok_emb.weight = assign(gpt.tok_emb.weight, params["wte.weight"])

    for b in range(len(gpt.trf_blocks)):
        q_w, k_w, v_w = torch.chunk(params[f"h.{b}.attn.c_attn.weight"], 3, dim=-1)
        gpt.trf_blocks[b].att.W_query.weight = assign(gpt.trf_blocks[b].att.W_query.weight, q_w.T)
        gpt.trf_blocks[b].att.W_key.weight = assign(gpt.trf_blocks[b].att.W_key.weight, k_w.T)
        gpt.trf_blocks[b].att.W_value.weight = assign(gpt.trf_blocks[b].att.W_value.weight, v_w.T)

        q_b, k_b, v_b = torch.chunk(params[f"h.{b}.attn.c_attn.bias"], 3, dim=-1)
        gpt.trf_blocks[b].att.W_query.bias = assign(gpt.trf_blocks[b].att.W_query.bias, q_b)
        gpt.trf_blocks[b].att.W_key.bias = assign(gpt.trf_blocks[b].att.W_key.bias, k_b)
        gpt.trf_blocks[b].att.W_value.bias = assign(gpt.trf_blocks[b].att.W_value.bias, v_b)

        gpt.trf_blocks[b].att.out_proj.weight = assign(
            gpt.trf_blocks[b].att.out_proj.weight, params[f"h.{b}.attn.c_proj.weight"].T)
        gpt.trf_blocks[b].att.out_proj.bias = assign(
            gpt.trf_blocks[b].att.out_proj.bias, params[f"h.{b}.attn.c_proj.bias"])

        gpt.trf_blocks[b].ff.layers[0].weight = assign(
            gpt.trf_blocks[b].ff.layers[0].weight, params[f"h.{b}.mlp.c_fc.weight"].T)
        gpt.trf_blocks[b].ff.layers[0].bias = assign(
            gpt.trf_blocks[b].ff.layers[0].bias, params[f"h.{b}.mlp.c_fc.bias"])
        gpt.trf_blocks[b].ff.layers[2].weight = assign(
            gpt.trf_blocks[b].ff.layers[2].weight, params[f"h.{b}.mlp.c_proj.weight"].T)
        gpt.trf_blocks[b].ff.layers[2].bias = assign(
            gpt.trf_blocks[b].ff.layers[2].bias, params[f"h.{b}.mlp.c_proj.bias"])

        gpt.trf_blocks[b].norm1.scale = assign(gpt.trf_blocks[b].norm1.scale, params[f"h.{b}.ln_1.weight"])
        gpt.trf_blocks[b].norm1.shift = assign(gpt.trf_blocks[b].norm1.shift, params[f"h.{b}.ln_1.bias"])
        gpt.trf_blocks[b].norm2.scale = assign(gpt.trf_blocks[b].norm2.scale, params[f"h.{b}.ln_2.weight"])
        gpt.trf_blocks[b].norm2.shift = assign(gpt.trf_blocks[b].norm2.shift, params[f"h.{b}.ln_2.bias"])

    gpt.final_norm.scale = assign(gpt.final_norm.scale, params["ln_f.weight"])
    gpt.final_norm.shift = assign(gpt.final_norm.shift, params["ln_f.bias"])
    gpt.out_head.weight = assign(gpt.out_head.weight, params.get("lm_head.weight", params["wte.weight"]))
