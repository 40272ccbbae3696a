"""Drift test: code a notebook teaches must equal the package's code of the same name (docstrings aside)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re

import pytest

import llmscratch
from notebook_conventions import REPO_ROOT, cell_source, load_notebook

# What each notebook must teach (guards against this test passing because nothing was compared).
TAUGHT = {
    "ch02_text_data/ch02_text_data.ipynb": {
        "SimpleTokenizerV1", "SimpleTokenizerV2", "GPTDatasetV1", "create_dataloader_v1",
    },
    "ch02_text_data/bpe_from_scratch.ipynb": {"count_pairs", "most_frequent_pair", "merge_pair"},
    "ch03_attention/ch03_attention.ipynb": {
        "SelfAttention_v1", "SelfAttention_v2", "CausalAttention", "MultiHeadAttentionWrapper", "MultiHeadAttention",
    },
    "ch04_gpt_model/ch04_gpt_model.ipynb": {
        "DummyGPTModel", "LayerNorm", "GELU", "FeedForward", "TransformerBlock", "GPTModel", "generate_text_simple",
    },
    "ch05_pretraining/ch05_pretraining.ipynb": {
        "text_to_token_ids", "token_ids_to_text", "calc_loss_batch", "calc_loss_loader", "evaluate_model",
        "generate_and_print_sample",
    },
}

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def strip_docstrings(node: ast.AST) -> ast.AST:
    for child in ast.walk(node):
        body = getattr(child, "body", None)
        if isinstance(child, Definition) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            child.body = body[1:] or [ast.Pass()]
    return node


def normalized(node: ast.AST) -> str:
    return ast.dump(strip_docstrings(node), include_attributes=False)


def package_definitions() -> dict[str, ast.AST]:
    found: dict[str, ast.AST] = {}
    for info in pkgutil.walk_packages(llmscratch.__path__, "llmscratch."):
        module = importlib.import_module(info.name)
        for node in ast.parse(inspect.getsource(module)).body:
            if isinstance(node, Definition) and not node.name.startswith("_"):
                found[node.name] = node
    return found


def notebook_definitions(path) -> dict[str, ast.AST]:
    found: dict[str, ast.AST] = {}
    for cell in load_notebook(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = cell_source(cell)
        if any(line.lstrip().startswith(("%", "!")) for line in source.splitlines()):
            continue  # IPython magics are not Python
        for node in ast.parse(source).body:
            if isinstance(node, Definition):
                found[node.name] = node  # a later definition replaces an earlier one, as in the kernel
    return found


def drifted(notebook: dict[str, ast.AST], package: dict[str, ast.AST]) -> list[str]:
    return [name for name, node in notebook.items()
            if name in package and normalized(node) != normalized(package[name])]


NOTEBOOKS = sorted(REPO_ROOT.glob("ch0*/*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.relative_to(REPO_ROOT).as_posix() for p in NOTEBOOKS])
def test_notebook_code_matches_package(path):
    rel = path.relative_to(REPO_ROOT).as_posix()
    defs = notebook_definitions(path)
    missing = TAUGHT.get(rel, set()) - defs.keys()
    assert not missing, f"{rel} should teach {sorted(missing)}"
    names = drifted(defs, package_definitions())
    assert not names, f"{rel} defines {names} differently from the package llmscratch: make them equal"


def test_drift_is_detected():
    package = package_definitions()
    source = inspect.getsource(llmscratch.SimpleTokenizerV2).replace('"<|unk|>"', '"<|unknown|>"')
    assert drifted({"SimpleTokenizerV2": ast.parse(source).body[0]}, package) == ["SimpleTokenizerV2"]
    same = ast.parse(inspect.getsource(llmscratch.GPTDatasetV1)).body[0]
    assert drifted({"GPTDatasetV1": same}, package) == []


SHOWN_SOURCE = re.compile(r"^print\(inspect\.getsource\((\w+)\)\)$", re.M)


def shown_sources(path) -> list[tuple[str, str]]:
    """(name, stored output) of every cell that prints the package's source with ``inspect.getsource``."""
    shown = []
    for cell in load_notebook(path)["cells"]:
        if cell["cell_type"] == "code":
            for name in SHOWN_SOURCE.findall(cell_source(cell)):
                output = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
                shown.append((name, output))
    return shown


def package_object(name: str):
    """``llmscratch.name`` if the package exports it, else the function or class of the module defining it."""
    if hasattr(llmscratch, name):
        return getattr(llmscratch, name)
    for info in pkgutil.walk_packages(llmscratch.__path__, "llmscratch."):
        found = getattr(importlib.import_module(info.name), name, None)
        if found is not None and getattr(found, "__module__", None) == info.name:
            return found
    raise LookupError(f"llmscratch defines no {name}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.relative_to(REPO_ROOT).as_posix() for p in NOTEBOOKS])
def test_printed_package_source_is_current(path):
    """A stored ``print(inspect.getsource(f))`` output is not re-checked by nbval: it must show today's code."""
    for name, output in shown_sources(path):
        assert inspect.getsource(package_object(name)) in output, (
            f"{path.name} shows an old version of llmscratch.{name}: run the notebook again")


def test_shown_sources_are_found():
    path = REPO_ROOT / "ch05_pretraining" / "ch05_pretraining.ipynb"
    assert {name for name, _ in shown_sources(path)} == {"train_model_simple", "generate"}
