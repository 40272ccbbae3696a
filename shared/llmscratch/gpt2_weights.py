"""Load OpenAI's pretrained GPT-2 weights (or a saved GPTModel) into the book's ``GPTModel``.

Introduced in ch05_pretraining, 5.5. The book's ``load_weights_into_gpt`` copies NumPy arrays from OpenAI's
TensorFlow checkpoint; :func:`load_pretrained_gpt2` does the same job from Hugging Face's ``model.safetensors``
(what :func:`~llmscratch.gpt2_download.download_gpt2` fetches) or from a ``.pth`` state dict of ``GPTModel``
(``torch.save(model.state_dict(), "gpt2-small-124M.pth")``, as in the book), and it keeps memory low:

1. the ``GPTModel`` is built on the ``meta`` device: shapes only, no memory, no random initialisation;
2. tensors are read one at a time (``safetensors.safe_open`` checks and lists them; each one's bytes are read
   straight into its final tensor, see ``_SafetensorsFile``), checked, transposed where Hugging Face stores them
   the other way, and handed over with ``load_state_dict(..., assign=True)``, which keeps them instead of
   copying them into fresh parameters;
3. the causal masks (buffers, not weights) are then created on the CPU: one tensor shared by all blocks.

So the weights are in memory once (plus one tensor in flight), never twice. When the file has no
``lm_head.weight`` (GPT-2 ties its output head to the token embedding), ``out_head.weight`` *is*
``tok_emb.weight``: the same parameter, no copy (the book copies it; with the tie, training the model keeps them
equal, like OpenAI's GPT-2).

Hugging Face layout (``transformer.`` prefix optional): ``wte``, ``wpe``, ``h.{i}.ln_1``, ``h.{i}.attn.c_attn``
(query, key and value in one ``Conv1D``, weight ``(d, 3d)``: split and transposed), ``h.{i}.attn.c_proj``,
``h.{i}.ln_2``, ``h.{i}.mlp.c_fc``, ``h.{i}.mlp.c_proj`` (``Conv1D``s, transposed), ``ln_f``, ``lm_head``.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from .checkpoints import load_model_state
from .gpt import GPT2_CONFIGS, GPT_CONFIG_TINY, GPTModel, check_config
from .gpt2_download import GPT2_REPOS, download_gpt2

__all__ = ["assign", "download_and_load_gpt2", "gpt_to_hf_state_dict", "load_pretrained_gpt2", "load_weights_into_gpt",
           "pretrained_gpt2_config"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin")  # torch.save files; anything else is read as safetensors
_IGNORED = re.compile(r"(^|\.)(attn\.bias|attn\.masked_bias|att\.mask)$")  # buffers of HF GPT-2 / GPTModel
_STRIPPED_PREFIXES = ("_orig_mod.", "module.")  # torch.compile / DistributedDataParallel wrappers


def pretrained_gpt2_config(size: str) -> dict:
    """The ``GPTModel`` configuration of OpenAI's GPT-2 ``size`` (ch05_pretraining, 5.5).

    ``GPT2_CONFIGS[size]`` with what the released weights need: ``qkv_bias=True``, ``context_length=1024``,
    and ``drop_rate=0.0`` (no dropout when generating).
    """
    if size not in GPT2_CONFIGS:
        raise ValueError(f"unknown GPT-2 size {size!r}: use one of {', '.join(repr(s) for s in GPT2_CONFIGS)}")
    return {**GPT2_CONFIGS[size], "context_length": 1024, "qkv_bias": True, "drop_rate": 0.0}


class _SkipMetaInit(torch.overrides.TorchFunctionMode):
    """Skip random initialisation and mask building while ``GPTModel`` is built on the meta device.

    Meta tensors hold no data, so ``normal_``, ``uniform_`` and ``triu`` compute nothing there; but the first
    such call makes PyTorch import its compiler (``torch._dynamo``), which takes seconds. The skipped tensors
    are all replaced by the loaded weights and a real mask.
    """

    SKIPPED = frozenset({"normal_", "uniform_", "triu"})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", None) in self.SKIPPED:
            return args[0] if args else kwargs.get("tensor", kwargs.get("input"))  # the tensor, untouched
        return func(*args, **kwargs)


def _read_json_object(path: Path) -> dict:
    """The JSON object in ``path``, or a one-line ``ValueError`` naming the file and what is wrong with it."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
                         "fix or replace it") from None
    except (UnicodeDecodeError, OSError) as error:
        raise ValueError(f"cannot read {path} as UTF-8 JSON ({error}): fix or replace it") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a JSON {type(content).__name__}, not an object: fix or replace it")
    return content


def _config_from_json(path: Path) -> dict:
    """A ``GPTModel`` config from Hugging Face's ``config.json`` (n_embd, n_layer, n_head, n_positions, ...)."""
    hf = _read_json_object(path)
    try:
        cfg = {"vocab_size": hf["vocab_size"], "context_length": hf.get("n_positions", hf.get("n_ctx")),
               "emb_dim": hf["n_embd"], "n_heads": hf["n_head"], "n_layers": hf["n_layer"],
               "drop_rate": 0.0, "qkv_bias": True}
    except KeyError as error:
        raise ValueError(f"{path} is not a GPT-2 config.json: it has no {error.args[0]!r}") from None
    try:
        check_config(cfg)
    except ValueError as error:
        raise ValueError(f"{path} does not describe a GPT-2 GPTModel can build: {error}") from None
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        warnings.warn(f"{path}: activation_function={hf['activation_function']!r}, but GPTModel's GELU is the "
                      "tanh approximation (gelu_new): outputs will differ slightly", stacklevel=3)
    if hf.get("layer_norm_epsilon", 1e-5) != 1e-5:
        warnings.warn(f"{path}: layer_norm_epsilon={hf['layer_norm_epsilon']}, but LayerNorm uses 1e-5", stacklevel=3)
    return cfg


def _resolve(source, cfg, cache_dir, endpoint, local_files_only):
    """(weights file or list of shards, config or None) for a size, a file or a folder."""
    if isinstance(source, str) and source in GPT2_REPOS:
        path = download_gpt2(source, cache_dir=cache_dir, endpoint=endpoint, local_files_only=local_files_only)
        return [path], cfg or pretrained_gpt2_config(source)
    path = Path(source).expanduser()
    if path.is_file():
        return [path], cfg
    if not path.is_dir():
        raise FileNotFoundError(f"{str(source)!r} is neither a GPT-2 size ({', '.join(GPT2_REPOS)}) nor an "
                                "existing file or folder")
    if cfg is None and (path / "config.json").is_file():
        cfg = _config_from_json(path / "config.json")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return [path / name], cfg
    index = path / "model.safetensors.index.json"  # a checkpoint split into shards
    if index.is_file():
        weight_map = _read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f'{index} has no "weight_map" object (tensor name -> shard file): fix or replace it')
        shards = sorted(set(weight_map.values()))
        return [path / shard for shard in shards], cfg
    found = sorted(p.name for p in path.iterdir())
    raise FileNotFoundError(f"{path} holds no model.safetensors (nor pytorch_model.bin, nor a sharded "
                            f"model.safetensors.index.json); it holds: {found}")


def _normalize(key: str) -> str:
    """Drop wrapper prefixes: ``transformer.`` (GPT2LMHeadModel), ``_orig_mod.`` (torch.compile), ``module.``."""
    while True:
        for prefix in ("transformer.", *_STRIPPED_PREFIXES):
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        else:
            return key


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


class _SafetensorsFile:
    """One ``.safetensors`` file, read a tensor at a time straight into its final tensor.

    ``safe_open`` checks the file and lists its tensors. Its ``get_tensor`` is a view of a memory map of the
    whole file, and every page of the map it touches counts as this process's memory until the map is closed:
    copying the tensors out of it (to transpose them) peaks at twice the file. So the bytes of each tensor are
    read with ``readinto`` into an empty tensor instead: the weights are in memory once.
    """

    def __init__(self, path: Path):
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt") as f:  # validates the header (reads nothing else)
                names = list(f.keys())
        except (SafetensorError, OSError) as error:
            hint = " (truncated? e.g. an interrupted download)" if "incomplete" in str(error) else ""
            raise ValueError(
                f"{path} is not a safetensors file{hint}: expected Hugging Face's GPT-2 model.safetensors (8-byte "
                f"header size, JSON header, tensors) or a torch.save state dict ending in "
                f"{', '.join(TORCH_SUFFIXES)}; safetensors says: {error}"
            ) from None
        self.path, self.file = path, open(path, "rb")
        (header_size,) = struct.unpack("<Q", self.file.read(8))  # little-endian u64, then the JSON header
        header = json.loads(self.file.read(header_size))
        self.tensors = {name: header[name] for name in names}  # dtype, shape, data_offsets
        self.data_start = 8 + header_size
        self.scratch = torch.empty(0, dtype=torch.uint8)

    def shape(self, name: str) -> tuple:
        return tuple(self.tensors[name]["shape"])

    def read(self, name: str, temporary: bool = False) -> torch.Tensor:
        """The tensor ``name``; ``temporary=True`` reads it into a buffer reused by the next temporary read."""
        info = self.tensors[name]
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{self.path}: tensor {name!r} has dtype {info['dtype']}, which GPTModel cannot use")
        dtype, (begin, end) = _SAFETENSORS_DTYPES[info["dtype"]], info["data_offsets"]
        if temporary:  # one buffer, grown as needed: freeing and reallocating would leave holes in the heap
            if self.scratch.numel() < end - begin:
                self.scratch = torch.empty(end - begin, dtype=torch.uint8)
            tensor = self.scratch[:end - begin].view(dtype).view(info["shape"])
        else:
            tensor = torch.empty(info["shape"], dtype=dtype)
        self.file.seek(self.data_start + begin)
        if self.file.readinto(tensor.view(-1).view(torch.uint8).numpy()) != end - begin:
            raise ValueError(f"{self.path} is truncated: tensor {name!r} is incomplete (interrupted download?)")
        return tensor

    def close(self) -> None:
        self.file.close()
        self.scratch = None


class _StateDictFile:
    """A ``torch.save`` state dict or checkpoint (``llmscratch.checkpoints.load_model_state`` reads it): read
    whole (1x memory), then handed out one tensor at a time.

    No ``mmap=True``: memory-mapped parameters would break (SIGBUS) as soon as the same path is saved over,
    which is what a training loop does.
    """

    def __init__(self, path: Path):
        self.state, self.config = load_model_state(path)
        self.tensors = list(self.state)

    def shape(self, name: str) -> tuple:
        return tuple(self.state[name].shape)

    def read(self, name: str, temporary: bool = False) -> torch.Tensor:
        return self.state.pop(name)  # the file's dict lets go of it: no second reference

    def close(self) -> None:
        self.state.clear()


@contextlib.contextmanager
def _open_tensors(paths):
    """Yield ``(shapes, read, config)``: every tensor's shape (by normalized name), ``read(name)`` for one tensor,
    and the config saved in the file (``save_checkpoint``'s) or None."""
    files, where, shapes = [], {}, {}  # where: normalized name -> (file, its name in the file)
    try:
        for path in paths:
            file = (_StateDictFile if path.suffix in TORCH_SUFFIXES else _SafetensorsFile)(path)
            files.append(file)
            for name in file.tensors:
                where[_normalize(name)] = (file, name)
                shapes[_normalize(name)] = file.shape(name)

        def read(key, temporary=False):
            file, name = where[key]
            return file.read(name, temporary)

        yield shapes, read, next((f.config for f in files if getattr(f, "config", None)), None)
    finally:
        for file in files:
            file.close()


# Known configs whose width and depth give the number of heads of a file that has no config: GPT-2's sizes, and the
# course's tiny GPT (pretrain --tiny, the notebooks' quick runs).
_KNOWN_CONFIGS = {**{f"GPT-2 {size}": cfg for size, cfg in GPT2_CONFIGS.items()}, "GPT_CONFIG_TINY": GPT_CONFIG_TINY}


def _infer_config(shapes: dict, files, n_heads=None) -> dict:
    """A config from a checkpoint's shapes: the vocabulary and the context from the embeddings, the width, the
    depth (blocks counted) and the query/key/value biases (present or not). The tensors do not show the number of
    heads: ``n_heads`` when given, else the heads of the known config (GPT-2 sizes, ``GPT_CONFIG_TINY``) of the
    same width and depth, else a ``ValueError`` that asks for ``n_heads``."""
    book = "tok_emb.weight" in shapes
    emb, pos = ("tok_emb.weight", "pos_emb.weight") if book else ("wte.weight", "wpe.weight")
    if emb not in shapes or pos not in shapes:
        raise ValueError(f"{files[0]} does not look like GPT-2: no {emb!r} / {pos!r} tensors "
                         f"(found e.g. {sorted(shapes)[:5]})")
    (vocab_size, emb_dim), (context_length, _) = shapes[emb], shapes[pos]
    block = re.compile(r"trf_blocks\.(\d+)\." if book else r"h\.(\d+)\.")
    n_layers = len({m.group(1) for key in shapes if (m := block.match(key))})
    found = (f"emb_dim={emb_dim}, n_layers={n_layers}, vocab_size={vocab_size}, "
             f"context_length={context_length}")
    known = [c for c in (_KNOWN_CONFIGS.values() if book else GPT2_CONFIGS.values())
             if (c["emb_dim"], c["n_layers"]) == (emb_dim, n_layers)]
    if n_heads is None and not known:
        if not book:
            sizes = "; ".join(f"{s}: emb_dim={c['emb_dim']}, n_layers={c['n_layers']}" for s, c in GPT2_CONFIGS.items())
            raise ValueError(f"{files[0]} matches no GPT-2 size: found {found} (GPT-2 sizes: {sizes}). "
                             "Put its config.json next to it and pass the folder, or pass cfg=...")
        configs = "; ".join(f"{name}: emb_dim={c['emb_dim']}, n_layers={c['n_layers']}"
                            for name, c in _KNOWN_CONFIGS.items())
        raise ValueError(f"{files[0]} is a GPTModel with {found} (read from its tensors), but the tensors do not "
                         f"show the number of attention heads and no known config has this width and depth "
                         f"({configs}): {PASS_N_HEADS}")
    qkv_bias = not book or "trf_blocks.0.att.W_query.bias" in shapes
    return {**GPT_CONFIG_TINY, "emb_dim": emb_dim, "n_layers": n_layers,
            "n_heads": n_heads if n_heads is not None else known[0]["n_heads"], "vocab_size": vocab_size,
            "context_length": context_length, "qkv_bias": qkv_bias, "drop_rate": 0.0}


PASS_N_HEADS = "pass n_heads=N (a divisor of emb_dim), or cfg=..."  # the CLI names its flag instead


class PlanEntry(NamedTuple):
    """One tensor of a checkpoint and the ``GPTModel`` tensors it becomes."""

    name: str  # in the file, e.g. "h.0.attn.c_attn.weight"
    shape: tuple  # in the file
    targets: tuple  # GPTModel's names; three for c_attn (query, key, value packed along the last dim)
    transposed: bool = False  # Conv1D stores (in, out); nn.Linear wants (out, in)

    def to_gpt(self, tensor):
        """``{GPTModel name: tensor}`` for this file tensor (views: split and transposed, not yet copied)."""
        parts = tensor.chunk(len(self.targets), dim=-1) if len(self.targets) > 1 else (tensor,)
        return {key: part.T if self.transposed else part for key, part in zip(self.targets, parts)}

    def from_gpt(self, state):
        """This file tensor built from a ``GPTModel`` state dict: the inverse of ``to_gpt``."""
        parts = [state[key].T if self.transposed else state[key] for key in self.targets]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def _hf_plan(cfg: dict) -> list[PlanEntry]:
    """Hugging Face's GPT-2 layout (names without ``transformer.``) and where each tensor goes in ``GPTModel``.

    The one description of the mapping: loading reads it one way (``PlanEntry.to_gpt``), ``gpt_to_hf_state_dict``
    the other (``PlanEntry.from_gpt``).
    """
    d, v, n = cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"]
    plan = [PlanEntry("wte.weight", (v, d), ("tok_emb.weight",)),
            PlanEntry("wpe.weight", (n, d), ("pos_emb.weight",))]
    for i in range(cfg["n_layers"]):
        h, b = f"h.{i}.", f"trf_blocks.{i}."
        qkv = ("W_query", "W_key", "W_value")
        plan += [
            PlanEntry(h + "ln_1.weight", (d,), (b + "norm1.scale",)),
            PlanEntry(h + "ln_1.bias", (d,), (b + "norm1.shift",)),
            PlanEntry(h + "attn.c_attn.weight", (d, 3 * d), tuple(f"{b}att.{w}.weight" for w in qkv), True),
            PlanEntry(h + "attn.c_attn.bias", (3 * d,), tuple(f"{b}att.{w}.bias" for w in qkv)),
            PlanEntry(h + "attn.c_proj.weight", (d, d), (b + "att.out_proj.weight",), True),
            PlanEntry(h + "attn.c_proj.bias", (d,), (b + "att.out_proj.bias",)),
            PlanEntry(h + "ln_2.weight", (d,), (b + "norm2.scale",)),
            PlanEntry(h + "ln_2.bias", (d,), (b + "norm2.shift",)),
            PlanEntry(h + "mlp.c_fc.weight", (d, 4 * d), (b + "ff.layers.0.weight",), True),
            PlanEntry(h + "mlp.c_fc.bias", (4 * d,), (b + "ff.layers.0.bias",)),
            PlanEntry(h + "mlp.c_proj.weight", (4 * d, d), (b + "ff.layers.2.weight",), True),
            PlanEntry(h + "mlp.c_proj.bias", (d,), (b + "ff.layers.2.bias",)),
        ]
    return plan + [PlanEntry("ln_f.weight", (d,), ("final_norm.scale",)),
                   PlanEntry("ln_f.bias", (d,), ("final_norm.shift",)),
                   PlanEntry("lm_head.weight", (v, d), ("out_head.weight",))]


def gpt2_safetensors_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in Hugging Face's ``model.safetensors`` of a GPT-2 with config ``cfg``
    (``transformer.`` prefix; no ``lm_head``: GPT-2 ties it to ``wte``). Conv1D weights are (in, out)."""
    return {"transformer." + e.name: e.shape for e in _hf_plan(cfg) if e.name != "lm_head.weight"}


def gpt_to_hf_state_dict(model: GPTModel, cfg: dict) -> dict[str, torch.Tensor]:
    """``model``'s weights under Hugging Face's names and layout (``transformer.h.0.attn.c_attn.weight``...,
    ``lm_head.weight``): what ``GPT2LMHeadModel.load_state_dict`` takes. A model without query/key/value
    biases gets zero ``c_attn`` biases (Hugging Face's GPT-2 always has them)."""
    state = dict(model.state_dict())
    if not cfg.get("qkv_bias"):
        for i, block in enumerate(model.trf_blocks):
            for w in ("W_query", "W_key", "W_value"):
                state[f"trf_blocks.{i}.att.{w}.bias"] = torch.zeros(cfg["emb_dim"], dtype=block.att.out_proj.bias.dtype)
    hf = {}
    for entry in _hf_plan(cfg):
        prefix = "" if entry.name == "lm_head.weight" else "transformer."
        hf[prefix + entry.name] = entry.from_gpt(state).contiguous()
    return hf


def _book_plan(model: GPTModel) -> list[PlanEntry]:
    """The same for a ``GPTModel`` state dict: names and shapes are the model's own, nothing to transform."""
    return [PlanEntry(key, tuple(t.shape), (key,)) for key, t in model.state_dict(keep_vars=True).items()
            if not _IGNORED.search(key)]


def _check(plan, shapes, files, cfg):
    optional = {"lm_head.weight", "out_head.weight"}  # absent: the head is tied to the token embedding
    missing = [e.name for e in plan if e.name not in shapes and e.name not in optional]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(f"{files[0]} lacks the tensor {missing[0]!r}: a GPT-2 with emb_dim={cfg['emb_dim']}, "
                         f"n_layers={cfg['n_layers']} needs {', '.join(map(repr, missing[:5]))}{more}")
    for name, shape, _, _ in plan:
        if name in shapes and shapes[name] != shape:
            raise ValueError(f"{files[0]}: tensor {name!r} has shape {shapes[name]}, but a GPT-2 with "
                             f"emb_dim={cfg['emb_dim']}, vocab_size={cfg['vocab_size']}, "
                             f"context_length={cfg['context_length']} needs {shape}")
    expected = {e.name for e in plan}
    unexpected = sorted(k for k in shapes if k not in expected and not _IGNORED.search(k))
    if unexpected:
        raise ValueError(f"{files[0]} has tensors a GPT-2 GPTModel does not: {unexpected[:5]}")


def load_pretrained_gpt2(source, cfg: dict | None = None, *, attn_impl: str | None = None,
                         dtype: torch.dtype | None = None, cache_dir=None, endpoint: str | None = None,
                         local_files_only: bool | None = None, n_heads: int | None = None) -> GPTModel:
    """A ``GPTModel`` holding pretrained GPT-2 weights, in eval mode (ch05_pretraining, 5.5).

    ``source`` is one of

    - a size, ``"124M"``, ``"355M"``, ``"774M"`` or ``"1558M"``: downloaded (and cached) by ``download_gpt2``
      (``cache_dir``, ``endpoint``, ``local_files_only`` are passed on);
    - a folder holding ``model.safetensors`` (or shards, or ``pytorch_model.bin``) and ``config.json``, as
      written by ``save_pretrained``: the config comes from ``config.json``;
    - a ``.safetensors`` file in Hugging Face's GPT-2 layout, or a ``.pth`` / ``.pt`` state dict of ``GPTModel``
      (``torch.save(model.state_dict(), path)`` or the book's ``{"model_state_dict": ...}`` checkpoint): the
      size is recognised by the tensors' shapes (width and number of layers; vocabulary and context length are
      read from the embeddings, query/key/value biases from their presence). A ``GPTModel`` of another width
      and depth (a plain ``torch.save(model.state_dict(), path)`` of your own config) needs ``n_heads``: the
      tensors show every other size but not the number of heads (the course's ``GPT_CONFIG_TINY`` is known).

    ``cfg`` overrides the config (for a model that is no GPT-2 size). ``attn_impl="sdpa"`` picks the fast
    attention; ``dtype`` (e.g. ``torch.bfloat16``) converts each tensor as it is read. Errors name the problem:
    a missing tensor, a tensor of the wrong shape (both shapes), a file that is not safetensors, a checkpoint
    that matches no GPT-2 size.
    """
    files, cfg = _resolve(source, cfg, cache_dir, endpoint, local_files_only)
    with _open_tensors(files) as (shapes, read, saved_config):
        hf = "tok_emb.weight" not in shapes
        cfg = cfg or saved_config
        if cfg is not None and n_heads is not None and cfg.get("n_heads") != n_heads:
            raise ValueError(f"n_heads={n_heads}, but the config of {files[0]} has n_heads={cfg.get('n_heads')}: "
                             "leave n_heads out (it is only for a file without a config)")
        cfg = dict(cfg) if cfg is not None else _infer_config(shapes, files, n_heads)
        if attn_impl is not None:
            cfg["attn_impl"] = attn_impl
        if hf and not cfg.get("qkv_bias"):
            raise ValueError("GPT-2 checkpoints have query/key/value biases: use a config with qkv_bias=True")
        with torch.device("meta"), _SkipMetaInit():  # shapes only: no memory, no random initialisation
            model = GPTModel(cfg)
        plan = _hf_plan(cfg) if hf else _book_plan(model)
        _check(plan, shapes, files, cfg)

        state = {}
        for entry in plan:
            if entry.name not in shapes:
                continue  # the optional output head
            if len(entry.targets) == 1 and not entry.transposed:  # read straight into its own, final tensor
                tensor = read(entry.name)
                state[entry.targets[0]] = tensor if dtype is None else tensor.to(dtype)
                continue
            # Split or transposed: read into a reused buffer and copy each part out, contiguous.
            tensor = read(entry.name, temporary=True)
            for key, part in entry.to_gpt(tensor).items():
                state[key] = part.to(dtype or tensor.dtype, memory_format=torch.contiguous_format, copy=True)
            del tensor
        result = model.load_state_dict(state, strict=False, assign=True)  # keeps these tensors: no copy
        del state

    expected_missing = {k for k in model.state_dict() if _IGNORED.search(k)} | {"out_head.weight"}
    if set(result.missing_keys) - expected_missing or result.unexpected_keys:
        raise RuntimeError(f"internal error: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    if ("out_head.weight" in result.missing_keys  # no lm_head in the file, or a saved tied model:
            or model.out_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()):
        model.out_head.weight = model.tok_emb.weight  # weight tying: the same parameter, no copy
    mask = torch.triu(torch.ones(cfg["context_length"], cfg["context_length"]), diagonal=1)  # 1 above diagonal
    for module in model.modules():
        if "mask" in module._buffers:
            module.mask = mask  # one mask shared by all blocks (it is never modified in place)
    meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        raise RuntimeError(f"internal error: tensors left on the meta device: {meta[:5]}")
    return model.eval()
