"""Tests of llmscratch.gpt2_weights and llmscratch.gpt2_download (ch05_pretraining, 5.5).

- Loader parity with ``transformers``: GPT-2 checkpoints written by ``GPT2LMHeadModel.save_pretrained`` (random,
  seeded weights; a tiny one and one of GPT-2 small's shape) load into ``GPTModel`` with the same logits (1e-4)
  and the same greedy text; the tied head is the token embedding itself.
- Clear errors for broken files: a missing tensor, a wrong shape, not safetensors, no GPT-2 size.
- The downloader against a local HTTP server that answers like the Hub's ``resolve`` endpoint (HEAD with
  ``X-Repo-Commit``/``ETag``, large files redirected to a "CDN" with ``X-Linked-Etag``/``X-Linked-Size``):
  download, cache, resume, offline mode. Every cache is a temporary folder (never ``~/.cache``).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from llmscratch.gpt import generate_text_simple
from llmscratch.kv_cache import generate_text_simple_cached
from llmscratch.gpt2_download import GPT2_REPOS, GPT2DownloadError, download_gpt2
from llmscratch.gpt2_weights import gpt2_safetensors_shapes, load_pretrained_gpt2, pretrained_gpt2_config

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")
pytest.importorskip("huggingface_hub")

TINY = dict(n_embd=32, n_layer=2, n_head=4, vocab_size=1000, n_positions=64)  # no GPT-2 size: needs config.json
PROMPT = torch.tensor([[15496, 11, 314, 716, 257, 3303, 2746, 13]])  # "Hello, I am a language model."


@pytest.fixture(autouse=True, scope="module")
def single_thread_quiet_transformers():
    """One thread (these models are small or memory-bound; on a busy 2-core machine more threads are slower),
    and no transformers warnings (the tiny vocabulary has no id 50256 for bos/eos: fine here)."""
    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    yield
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)


def hf_gpt2(seed: int, **config):
    """A random, seeded ``GPT2LMHeadModel`` in eval mode."""
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()


def save(model, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def hf_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def our_logits(model, ids):
    with torch.no_grad():
        return model(ids)


def hf_greedy(model, ids, n=10):
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                          pad_token_id=0)


def assert_tied(model):
    assert model.out_head.weight is model.tok_emb.weight  # the same parameter...
    assert model.out_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()  # ...so the same storage


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny GPT-2 (vocabulary 1000, context 64) saved by transformers: folder with config.json."""
    hf = hf_gpt2(123, **TINY, initializer_range=0.2)  # larger weights: varied greedy text, clear argmax
    return hf, save(hf, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """GPT-2 small's shape (124M parameters) with random weights, and our model loaded from the bare file."""
    hf = hf_gpt2(124)
    folder = save(hf, tmp_path_factory.mktemp("gpt2-124M"))
    return hf, folder, load_pretrained_gpt2(folder / "model.safetensors")  # no config.json: matched by shapes


def tiny_ids(n=8):
    return torch.arange(n).unsqueeze(0) * 37 % TINY["vocab_size"]


# --- parity with transformers ----------------------------------------------------------------------------

def test_safetensors_layout_is_transformers_own(tiny):
    """The names and shapes the loader expects (and benchmarks/load_memory.py writes) are those of the file
    ``save_pretrained`` wrote."""
    _, folder = tiny
    with safetensors_torch.safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        saved = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    cfg = {"vocab_size": TINY["vocab_size"], "context_length": TINY["n_positions"], "emb_dim": TINY["n_embd"],
           "n_layers": TINY["n_layer"]}
    assert gpt2_safetensors_shapes(cfg) == saved


@pytest.mark.parametrize("attn_impl", ["scratch", "sdpa"])
def test_tiny_folder_matches_transformers(tiny, attn_impl):
    hf, folder = tiny
    model = load_pretrained_gpt2(folder, attn_impl=attn_impl)
    ids = tiny_ids()
    torch.testing.assert_close(our_logits(model, ids), hf_logits(hf, ids), atol=1e-4, rtol=0)
    ours = generate_text_simple(model, ids, max_new_tokens=10, context_size=TINY["n_positions"])
    assert ours.tolist() == hf_greedy(hf, ids).tolist()
    assert len(set(ours[0, 8:].tolist())) > 1  # a real test: the text is not one token repeated
    assert not model.training
    assert_tied(model)
    assert model.pos_emb.num_embeddings == TINY["n_positions"]
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    mask = model.trf_blocks[0].att.mask
    assert torch.equal(mask, torch.triu(torch.ones(64, 64), diagonal=1))


@pytest.mark.parametrize("layout", ["no prefix (the Hub's files)", "untied lm_head"])
def test_other_layouts_match(tiny, tmp_path, layout):
    hf, folder = tiny
    if layout.startswith("no prefix"):
        tensors = safetensors_torch.load_file(folder / "model.safetensors")
        safetensors_torch.save_file({k.removeprefix("transformer."): v for k, v in tensors.items()},
                                    tmp_path / "model.safetensors")
        shutil.copy(folder / "config.json", tmp_path)
    else:
        hf = hf_gpt2(7, **TINY, tie_word_embeddings=False, initializer_range=0.2)
        save(hf, tmp_path)
    model = load_pretrained_gpt2(tmp_path)
    torch.testing.assert_close(our_logits(model, tiny_ids()), hf_logits(hf, tiny_ids()), atol=1e-4, rtol=0)
    if layout == "untied lm_head":
        assert model.out_head.weight is not model.tok_emb.weight
        assert not torch.equal(model.out_head.weight, model.tok_emb.weight)


@pytest.mark.slow
def test_124m_bare_file_matches_transformers(small):
    hf, _, model = small
    assert model.trf_blocks[0].att.num_heads == 12 and len(model.trf_blocks) == 12  # found by the shapes
    torch.testing.assert_close(our_logits(model, PROMPT), hf_logits(hf, PROMPT), atol=1e-4, rtol=0)
    # With the KV cache (token for token the book's loop, see test_kv_cache), like transformers' generate.
    ours = generate_text_simple_cached(model, PROMPT, max_new_tokens=10, context_size=1024, use_cache=True)
    assert ours.tolist() == hf_greedy(hf, PROMPT).tolist()
    assert_tied(model)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf.parameters())  # 124M


@pytest.mark.slow
def test_book_pth_state_dict_round_trip(small, tmp_path):
    """The book's ``torch.save(model.state_dict(), "gpt2-small-124M.pth")`` loads back, matched by shapes."""
    _, _, model = small
    path = tmp_path / "gpt2-small-124M.pth"
    torch.save(model.state_dict(), path)
    loaded = load_pretrained_gpt2(path)
    assert torch.equal(our_logits(loaded, PROMPT), our_logits(model, PROMPT))
    assert_tied(loaded)  # saved tied (one storage): tied again


def test_book_checkpoint_with_optimizer_and_cfg(tiny, tmp_path):
    _, folder = tiny
    model = load_pretrained_gpt2(folder)
    path = tmp_path / "model_and_optimizer.pth"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()}, path)
    with pytest.raises(ValueError, match=r"a GPTModel with emb_dim=32, n_layers=2, .*do not show the number of "
                                         r"attention heads.*pass n_heads=N"):
        load_pretrained_gpt2(path)  # no config in a .pth of no known width and depth: say what to do
    by_heads = load_pretrained_gpt2(path, n_heads=4)  # the tensors give every other size
    assert torch.equal(our_logits(by_heads, tiny_ids()), our_logits(model, tiny_ids()))
    cfg = {**pretrained_gpt2_config("124M"), "vocab_size": 1000, "context_length": 64, "emb_dim": 32,
           "n_heads": 4, "n_layers": 2}
    loaded = load_pretrained_gpt2(path, cfg)
    assert torch.equal(our_logits(loaded, tiny_ids()), our_logits(model, tiny_ids()))


# --- clear errors for broken files ------------------------------------------------------------------------

def broken_copy(folder: Path, tmp_path: Path, edit) -> Path:
    tensors = safetensors_torch.load_file(folder / "model.safetensors")
    edit(tensors)
    safetensors_torch.save_file(tensors, tmp_path / "model.safetensors")
    shutil.copy(folder / "config.json", tmp_path)
    return tmp_path


def test_missing_tensor_is_named(tiny, tmp_path):
    folder = broken_copy(tiny[1], tmp_path, lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(ValueError, match=r"lacks the tensor 'h\.1\.mlp\.c_fc\.bias'"):
        load_pretrained_gpt2(folder)


def test_wrong_shape_names_both_shapes(tiny, tmp_path):
    def edit(tensors):
        tensors["transformer.h.0.attn.c_attn.weight"] = torch.zeros(32, 90)
    folder = broken_copy(tiny[1], tmp_path, edit)
    with pytest.raises(ValueError, match=r"'h\.0\.attn\.c_attn\.weight' has shape \(32, 90\).* needs \(32, 96\)"):
        load_pretrained_gpt2(folder)


@pytest.mark.parametrize("content", [b"<html>Sign in to the Wi-Fi</html>", "truncated"])
def test_not_a_safetensors_file(tiny, tmp_path, content):
    path = tmp_path / "model.safetensors"
    if content == "truncated":  # e.g. a download copied by hand that stopped half way
        data = (tiny[1] / "model.safetensors").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"is not a safetensors file.*expected Hugging Face's GPT-2 model"):
        load_pretrained_gpt2(path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "gpt2-small-124M.pth"
    path.write_bytes(b"not a zip, not a pickle")
    with pytest.raises(ValueError, match=r"is not a PyTorch model file \(torch\.save of a state_dict or a checkpoint\)"):
        load_pretrained_gpt2(path)


def test_bare_file_matching_no_gpt2_size(tiny):
    with pytest.raises(ValueError, match=r"matches no GPT-2 size: found emb_dim=32, n_layers=2, "
                                         r"vocab_size=1000, context_length=64 .*124M: emb_dim=768, n_layers=12"):
        load_pretrained_gpt2(tiny[1] / "model.safetensors")


def test_unknown_source_and_size(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'125M' is neither a GPT-2 size \(124M, 355M, 774M, 1558M\)"):
        load_pretrained_gpt2("125M")
    with pytest.raises(ValueError, match=r"unknown GPT-2 size '125M': use one of '124M', '355M', '774M', '1558M'"):
        download_gpt2("125M", cache_dir=tmp_path)


def test_gpt2_checkpoint_needs_qkv_bias(tiny):
    cfg = {**pretrained_gpt2_config("124M"), "vocab_size": 1000, "context_length": 64, "emb_dim": 32,
           "n_heads": 4, "n_layers": 2, "qkv_bias": False}
    with pytest.raises(ValueError, match=r"query/key/value biases: use a config with qkv_bias=True"):
        load_pretrained_gpt2(tiny[1], cfg)


# --- the downloader, against a local imitation of the Hub --------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # X-Repo-Commit: the revision "main" resolves to


class FakeHub:
    """Two local servers: the Hub (``/{repo}/resolve/{revision}/{file}``) and a CDN for the large files.

    Like huggingface.co: HEAD on a small file answers 200 with ``ETag`` (git blob sha) and ``X-Repo-Commit``;
    HEAD on a large (LFS) file answers 302 to the CDN with ``X-Linked-Etag`` (sha256), ``X-Linked-Size`` and
    ``X-Repo-Commit``; the CDN serves the bytes and honours ``Range`` (resumed downloads). ``drop_first`` makes
    the CDN cut the first transfer of a file half way.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}  # "repo/filename" -> content
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.drop_first: set[str] = set()
        self.portal = False  # answer everything like a captive portal (no Hub headers)
        self.hub = self._server(self._hub_handler)
        self.cdn = self._server(self._cdn_handler)
        self.endpoint = f"http://127.0.0.1:{self.hub.server_port}"

    def _server(self, handle):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                fake.requests.append(("HEAD", self.path, self.headers.get("Range")))
                handle(self, head=True)

            def do_GET(self):
                fake.requests.append(("GET", self.path, self.headers.get("Range")))
                handle(self, head=False)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    def _reply(self, handler, status, headers, body=b"", head=False):
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def _hub_handler(self, handler, head):
        if self.portal:
            return self._reply(handler, 200, {"Content-Type": "text/html"}, b"<html>Sign in</html>", head)
        parts = handler.path.split("/")  # "", org, repo, "resolve", revision, filename
        key = f"{parts[1]}/{parts[2]}/{parts[5]}" if len(parts) == 6 and parts[3] == "resolve" else None
        if key not in self.files:
            return self._reply(handler, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT},
                               b"Entry not found", head)
        content = self.files[key]
        if key.endswith(".safetensors"):  # LFS file: redirect to the CDN, metadata in X-Linked-* headers
            sha256 = hashlib.sha256(content).hexdigest()
            return self._reply(handler, 302, {
                "Location": f"http://127.0.0.1:{self.cdn.server_port}/blobs/{sha256}",
                "X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(content)),
                "ETag": f'"{hashlib.sha1(content).hexdigest()}"'}, b"", head)
        etag = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()  # git's blob id
        self._reply(handler, 200, {"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT}, content, head)

    def _cdn_handler(self, handler, head):
        by_sha = {hashlib.sha256(c).hexdigest(): (k, c) for k, c in self.files.items()}
        key, content = by_sha.get(handler.path.rsplit("/", 1)[-1], (None, None))
        if content is None:
            return self._reply(handler, 404, {}, b"no such blob", head)
        start = int(handler.headers["Range"].split("=")[1].split("-")[0]) if handler.headers.get("Range") else 0
        if key in self.drop_first and not head:  # promise everything, send half, hang up
            self.drop_first.discard(key)
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            handler.wfile.write(content[: len(content) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        status = 206 if start else 200
        headers = {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"} if start else {}
        self._reply(handler, status, headers, content[start:], head)

    def close(self):
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()


@pytest.fixture
def hub(monkeypatch) -> Iterator[FakeHub]:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_TOKEN", "")  # no token from the user's machine
    fake = FakeHub()
    yield fake
    fake.close()


def serve(hub: FakeHub, size: str, weights: bytes, config: bytes = b'{"model_type": "gpt2"}') -> None:
    hub.files[f"{GPT2_REPOS[size]}/model.safetensors"] = weights
    hub.files[f"{GPT2_REPOS[size]}/config.json"] = config


def test_download_load_and_cache(tiny, hub, tmp_path):
    """``load_pretrained_gpt2("124M")`` downloads through the Hub protocol, then never asks again.

    The "124M" repository serves the tiny checkpoint here (and ``cfg`` says so), to keep the test fast.
    """
    hf, folder = tiny
    serve(hub, "124M", (folder / "model.safetensors").read_bytes(), (folder / "config.json").read_bytes())
    cfg = {**pretrained_gpt2_config("124M"), "vocab_size": 1000, "context_length": 64, "emb_dim": 32,
           "n_heads": 4, "n_layers": 2}
    model = load_pretrained_gpt2("124M", cfg, cache_dir=tmp_path, endpoint=hub.endpoint)
    torch.testing.assert_close(our_logits(model, tiny_ids()), hf_logits(hf, tiny_ids()), atol=1e-4, rtol=0)
    assert sorted(m for m, _, _ in hub.requests) == ["GET", "GET", "HEAD", "HEAD"]  # each file once
    hub.requests.clear()
    path = download_gpt2("124M", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert hub.requests == []  # cached: not even a HEAD
    assert path.read_bytes() == (folder / "model.safetensors").read_bytes()
    assert tmp_path in path.resolve().parents  # in the cache we chose
    downloaded = load_pretrained_gpt2(path.parent)  # the cache folder holds config.json too
    torch.testing.assert_close(our_logits(downloaded, tiny_ids()), our_logits(model, tiny_ids()), atol=0, rtol=0)


def test_download_resumes_a_broken_transfer(hub, tmp_path):
    weights = bytes(range(256)) * (96 * 1024)  # 24 MiB: huggingface_hub writes what it got in chunks of 10 MB
    serve(hub, "355M", weights)
    hub.drop_first.add(f"{GPT2_REPOS['355M']}/model.safetensors")
    path = download_gpt2("355M", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert path.read_bytes() == weights
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.startswith("/blobs/")]
    assert len(ranges) == 2 and ranges[0] is None  # cut off half way, then...
    assert ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"  # ...only the rest was asked for


@pytest.mark.parametrize("how", ["local_files_only", "HF_HUB_OFFLINE"])
def test_offline_mode(hub, tmp_path, monkeypatch, how):
    serve(hub, "124M", b"weights")
    cached = download_gpt2("124M", cache_dir=tmp_path / "cache", endpoint=hub.endpoint)
    hub.requests.clear()
    kwargs = {"local_files_only": True} if how == "local_files_only" else {}
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at call time, not when huggingface_hub was imported
    assert download_gpt2("124M", cache_dir=tmp_path / "cache", endpoint=hub.endpoint, **kwargs) == cached
    with pytest.raises(GPT2DownloadError, match=r"(?s)is not in the cache .* offline mode is on .*"
                                                r"download model\.safetensors by hand"):
        download_gpt2("124M", cache_dir=tmp_path / "empty", endpoint=hub.endpoint, **kwargs)
    assert hub.requests == []  # offline means offline


def test_no_connection_says_what_to_do(hub, tmp_path):
    hub.portal = True  # a network that answers, but not like the Hub (captive portal, proxy, firewall)
    serve(hub, "124M", b"weights")
    with pytest.raises(GPT2DownloadError, match=r"(?s)could not download GPT-2 124M .*check the internet connection"
                                                r".*download model\.safetensors by hand from .*resolve/main/"):
        download_gpt2("124M", cache_dir=tmp_path, endpoint=hub.endpoint)
    assert not list(tmp_path.rglob("model.safetensors"))


# --- the book's loading code (5.5) and the one mapping, both ways ----------------------------------------

def test_books_load_weights_into_gpt_gives_the_loaders_model(tiny):
    """``assign``/``load_weights_into_gpt`` over Hugging Face's layout = ``load_pretrained_gpt2``, logit for logit."""
    from llmscratch.gpt import GPTModel
    from llmscratch.gpt2_book_loading import load_weights_into_gpt

    hf, folder = tiny
    reference = load_pretrained_gpt2(folder)
    cfg = {"vocab_size": TINY["vocab_size"], "context_length": TINY["n_positions"], "emb_dim": TINY["n_embd"],
           "n_heads": TINY["n_head"], "n_layers": TINY["n_layer"], "drop_rate": 0.0, "qkv_bias": True}
    gpt = GPTModel(cfg).eval()
    load_weights_into_gpt(gpt, safetensors_torch.load_file(str(folder / "model.safetensors")))
    ids = tiny_ids()
    assert torch.equal(our_logits(gpt, ids), our_logits(reference, ids))
    torch.testing.assert_close(our_logits(gpt, ids), hf_logits(hf, ids), atol=1e-4, rtol=0)


def test_assign_names_both_shapes():
    from llmscratch.gpt2_book_loading import assign

    with pytest.raises(ValueError, match=r"Shape mismatch. Left: torch.Size\(\[2, 3\]\), Right: torch.Size\(\[3, 2\]\)"):
        assign(torch.zeros(2, 3), torch.zeros(3, 2))
    assert isinstance(assign(torch.zeros(2), torch.ones(2)), torch.nn.Parameter)


def test_our_weights_in_transformers_layout_round_trip(tiny):
    """``gpt_to_hf_state_dict`` is the inverse of loading: transformers' own model gets its tensors back."""
    from llmscratch.gpt2_weights import gpt_to_hf_state_dict

    hf, folder = tiny
    model = load_pretrained_gpt2(folder)
    cfg = {"vocab_size": TINY["vocab_size"], "context_length": TINY["n_positions"], "emb_dim": TINY["n_embd"],
           "n_layers": TINY["n_layer"], "qkv_bias": True}
    ours = gpt_to_hf_state_dict(model, cfg)
    theirs = {k: v for k, v in hf.state_dict().items() if not re.search(r"\.attn\.(masked_)?bias$", k)}  # buffers
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "holds a JSON list, not an object"),
    ('{"vocab_size": 10, "n_positions": 8, "n_embd": 30, "n_head": 4, "n_layer": 1}', "must be divisible"),
])
def test_bad_config_json_is_one_clear_error(tiny, tmp_path, content, message):
    _, folder = tiny
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    (copy / "config.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_pretrained_gpt2(copy)
    assert "config.json" in str(info.value) and "\n" not in str(info.value)


# --- issue 20: the book's download_and_load_gpt2 (settings, params) -------------------------------------------


def test_download_and_load_gpt2_gives_the_books_settings_and_params(tiny, hub, tmp_path):
    """The book's call, served by the local Hub: ``hparams.json``'s settings, the nested NumPy params in the
    checkpoint's shapes, and ``load_weights_into_gpt`` gives the loader's model from them."""
    import numpy as np

    from llmscratch import GPTModel, download_and_load_gpt2, load_weights_into_gpt

    hf, folder = tiny
    serve(hub, "124M", (folder / "model.safetensors").read_bytes(), (folder / "config.json").read_bytes())
    settings, params = download_and_load_gpt2(model_size="124M", models_dir=tmp_path, endpoint=hub.endpoint)
    assert settings == {"n_vocab": 1000, "n_ctx": 64, "n_embd": 32, "n_head": 4, "n_layer": 2}
    assert list(params) == ["blocks", "b", "g", "wpe", "wte"] and len(params["blocks"]) == 2
    block = params["blocks"][0]
    assert sorted(block) == ["attn", "ln_1", "ln_2", "mlp"] and sorted(block["ln_1"]) == ["b", "g"]
    assert isinstance(block["attn"]["c_attn"]["w"], np.ndarray)
    shapes = {"wte": (1000, 32), "wpe": (64, 32), "c_attn": (32, 96), "c_proj": (32, 32), "c_fc": (32, 128),
              "mlp.c_proj": (128, 32)}
    assert (params["wte"].shape, params["wpe"].shape) == (shapes["wte"], shapes["wpe"])
    assert block["attn"]["c_attn"]["w"].shape == shapes["c_attn"] and block["attn"]["c_proj"]["w"].shape == shapes["c_proj"]
    assert block["mlp"]["c_fc"]["w"].shape == shapes["c_fc"] and block["mlp"]["c_proj"]["w"].shape == shapes["mlp.c_proj"]
    assert [a.shape for a in np.split(block["attn"]["c_attn"]["w"], 3, axis=-1)] == [(32, 32)] * 3  # the book's split

    cfg = {"vocab_size": settings["n_vocab"], "context_length": settings["n_ctx"], "emb_dim": settings["n_embd"],
           "n_heads": settings["n_head"], "n_layers": settings["n_layer"], "drop_rate": 0.0, "qkv_bias": True}
    gpt = GPTModel(cfg).eval()
    load_weights_into_gpt(gpt, params)
    assert torch.equal(our_logits(gpt, tiny_ids()), our_logits(load_pretrained_gpt2(folder), tiny_ids()))
    hub.requests.clear()
    assert download_and_load_gpt2("124M", tmp_path, endpoint=hub.endpoint)[0] == settings
    assert hub.requests == []  # models_dir is the cache
    with pytest.raises(ValueError, match="unknown GPT-2 size '125M'"):
        download_and_load_gpt2("125M", tmp_path)


def test_load_weights_into_gpt_names_what_to_pass(tiny):
    from llmscratch import GPTModel, load_weights_into_gpt

    hf, folder = tiny
    gpt = load_pretrained_gpt2(folder)
    with pytest.raises(ValueError, match=r"GPTModel's own names .* gpt\.load_state_dict\(params\)"):
        load_weights_into_gpt(gpt, gpt.state_dict())
    with pytest.raises(ValueError, match=r"no GPT-2 tensors under Hugging Face's names .* download_and_load_gpt2"):
        load_weights_into_gpt(gpt, {"weights": torch.zeros(1)})
