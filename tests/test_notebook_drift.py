"""Drift test: code a notebook teaches must equal the package's code of the same name, module by module.

Each notebook is compared with the package modules of its chapter (``NOTEBOOK_MODULES``), so a name defined in
two modules (chapter 5's and chapter 6's ``calc_loss_batch``) is matched with the right one. Docstrings are
ignored, and so is a leading call to a checking helper (``check_config(cfg)``, ``_check_batch_shapes(...)``):
the package may add one such line at the top of a book function, and a notebook may show the book's listing
without it. Everything else must be equal.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re

import pytest

import llmscratch
from notebook_conventions import REPO_ROOT, cell_source, load_notebook

# The package modules each notebook teaches, in the order a name is looked up.
NOTEBOOK_MODULES = {
    "ch01_intro/ch01_intro.ipynb": [],
    "ch01_intro/appendix_a_pytorch.ipynb": ["llmscratch.appendix_a", "llmscratch.ddp_script"],
    "ch02_text_data/ch02_text_data.ipynb": ["llmscratch.tokenizers", "llmscratch.dataloader"],
    "ch02_text_data/bpe_from_scratch.ipynb": ["llmscratch.bpe", "llmscratch.bpe_gpt2"],
    "ch02_text_data/exercises.ipynb": ["llmscratch.tokenizers", "llmscratch.dataloader"],
    "ch03_attention/ch03_attention.ipynb": ["llmscratch.attention"],
    "ch03_attention/exercises.ipynb": ["llmscratch.attention"],
    "ch04_gpt_model/ch04_gpt_model.ipynb": ["llmscratch.gpt", "llmscratch.gpt_demo", "llmscratch.kv_cache"],
    "ch04_gpt_model/exercises.ipynb": ["llmscratch.gpt"],
    "ch05_pretraining/ch05_pretraining.ipynb": [
        "llmscratch.pretraining", "llmscratch.decoding", "llmscratch.checkpoints", "llmscratch.gpt2_book_loading",
    ],
    "ch05_pretraining/exercises.ipynb": [
        "llmscratch.pretraining", "llmscratch.decoding", "llmscratch.gpt2_book_loading",
    ],
    "ch05_pretraining/appendix_d_training_loop.ipynb": ["llmscratch.train_advanced", "llmscratch.pretraining"],
    "ch06_finetune_classification/ch06_finetune_classification.ipynb": ["llmscratch.classification"],
    "ch06_finetune_classification/exercises.ipynb": ["llmscratch.classification"],
    "ch06_finetune_classification/appendix_e_lora.ipynb": ["llmscratch.lora", "llmscratch.classification"],
    "ch07_finetune_instructions/ch07_finetune_instructions.ipynb": [
        "llmscratch.prompt_formats", "llmscratch.instruction", "llmscratch.book_downloads", "llmscratch.judge_book",
        "llmscratch.judge",
    ],
    "ch07_finetune_instructions/exercises.ipynb": [
        "llmscratch.prompt_formats", "llmscratch.instruction", "llmscratch.instruction_data", "llmscratch.judge",
    ],
    "ch07_finetune_instructions/dpo_preference_tuning.ipynb": ["llmscratch.dpo_data", "llmscratch.dpo",
                                                             "llmscratch.prompt_formats"],
}

# What each notebook must teach (guards against this test passing because nothing was compared).
TAUGHT = {
    "ch01_intro/appendix_a_pytorch.ipynb": {"NeuralNetwork", "ToyDataset", "compute_accuracy"},
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
        "generate_and_print_sample", "softmax_with_temperature", "print_sampled_tokens", "assign",
        "load_weights_into_gpt",
    },
    "ch05_pretraining/appendix_d_training_loop.ipynb": {"find_highest_gradient"},
    "ch06_finetune_classification/ch06_finetune_classification.ipynb": {
        "create_balanced_dataset", "random_split", "SpamDataset", "calc_accuracy_loader", "calc_loss_batch",
        "calc_loss_loader", "evaluate_model", "train_classifier_simple", "classify_review",
    },
    "ch06_finetune_classification/appendix_e_lora.ipynb": {"LoRALayer", "LinearWithLoRA", "replace_linear_with_lora"},
    "ch07_finetune_instructions/ch07_finetune_instructions.ipynb": {
        "format_input", "InstructionDataset", "custom_collate_draft_1", "custom_collate_draft_2", "custom_collate_fn",
        "generate_model_scores", "check_if_running", "query_model",
    },
    "ch07_finetune_instructions/exercises.ipynb": {
        "format_input_phi", "InstructionDatasetWithMasking", "custom_collate_with_masking_fn",
    },
    "ch07_finetune_instructions/dpo_preference_tuning.ipynb": {
        "format_input", "PreferenceDataset", "custom_collate_fn", "decode_tokens_from_batch", "compute_dpo_loss",
        "compute_logprobs", "compute_dpo_loss_batch", "compute_dpo_loss_loader", "evaluate_dpo_loss_loader",
        "train_model_dpo_simple",
    },
}

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
CHECK_CALL = re.compile(r"_?check_\w+$")


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _is_check_call(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name) and bool(CHECK_CALL.match(stmt.value.func.id)))


def book_body(node: ast.AST) -> ast.AST:
    """``node`` without docstrings and without a leading checking-helper call in each function."""
    for child in ast.walk(node):
        body = getattr(child, "body", None)
        if not isinstance(child, Definition) or not body:
            continue
        if _is_docstring(body[0]):
            body = body[1:]
        if not isinstance(child, ast.ClassDef) and body and _is_check_call(body[0]):
            body = body[1:]
        child.body = body or [ast.Pass()]
    return node


def normalized(node: ast.AST) -> str:
    return ast.dump(book_body(node), include_attributes=False)


def module_definitions(module_name: str, source: str | None = None) -> dict[str, ast.AST]:
    """Public top-level definitions of a package module (``source``: its text, default the installed one)."""
    source = inspect.getsource(importlib.import_module(module_name)) if source is None else source
    return {node.name: node for node in ast.parse(source).body
            if isinstance(node, Definition) and not node.name.startswith("_")}


def package_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(llmscratch.__path__, "llmscratch.")]


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


def drifted(notebook: dict[str, ast.AST], modules: list[str],
            sources: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(names defined differently from their module, names defined only in modules outside ``modules``).

    ``sources`` replaces the text of some modules (to check that an edit in the package is caught).
    """
    sources = sources or {}
    chapter = [module_definitions(name, sources.get(name)) for name in modules]
    elsewhere = {name for module in package_modules() if module not in modules for name in module_definitions(module)}
    different, unmapped = [], []
    for name, node in notebook.items():
        match = next((defs[name] for defs in chapter if name in defs), None)
        if match is not None:
            if normalized(node) != normalized(match):
                different.append(name)
        elif name in elsewhere:
            unmapped.append(name)
    return different, unmapped


NOTEBOOKS = sorted(REPO_ROOT.glob("ch0*/*.ipynb"))
IDS = [p.relative_to(REPO_ROOT).as_posix() for p in NOTEBOOKS]


def test_every_notebook_is_mapped_to_its_modules():
    unmapped = [rel for rel in IDS if rel not in NOTEBOOK_MODULES]
    assert not unmapped, f"add {unmapped} to NOTEBOOK_MODULES (the package modules each notebook teaches)"
    for modules in NOTEBOOK_MODULES.values():
        for name in modules:
            assert name.startswith("llmscratch."), name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_code_matches_package(path):
    rel = path.relative_to(REPO_ROOT).as_posix()
    defs = notebook_definitions(path)
    missing = TAUGHT.get(rel, set()) - defs.keys()
    assert not missing, f"{rel} should teach {sorted(missing)}"
    different, unmapped = drifted(defs, NOTEBOOK_MODULES[rel])
    assert not different, f"{rel} defines {different} differently from {NOTEBOOK_MODULES[rel]}: make them equal"
    assert not unmapped, f"{rel} defines {unmapped}, which only other package modules hold: map or rename them"


def _edit(source: str, old: str, new: str) -> ast.AST:
    assert old in source, old
    return ast.parse(source.replace(old, new, 1)).body[0]


def test_an_edit_on_either_side_is_detected():
    """Change the notebook's copy, or the package's function, and the pair is reported."""
    import llmscratch.pretraining as pretraining

    function = inspect.getsource(pretraining.calc_loss_loader)
    same = ast.parse(function).body[0]
    assert drifted({"calc_loss_loader": same}, ["llmscratch.pretraining"]) == ([], [])

    notebook_edit = ast.parse(function.replace("total_loss / num_batches", "total_loss / (num_batches + 1)")).body[0]
    assert drifted({"calc_loss_loader": notebook_edit}, ["llmscratch.pretraining"])[0] == ["calc_loss_loader"]

    module = inspect.getsource(pretraining)
    package_edit = module.replace("total_loss += loss.item()", "total_loss += 2 * loss.item()", 1)
    assert package_edit != module
    same = ast.parse(function).body[0]
    assert drifted({"calc_loss_loader": same}, ["llmscratch.pretraining"],
                   {"llmscratch.pretraining": package_edit})[0] == ["calc_loss_loader"]


def test_the_module_decides_between_homonyms():
    """``generate`` of the command line is not chapter 5's: a notebook of chapter 5 matches decoding's."""
    import llmscratch.decoding as decoding

    node = ast.parse(inspect.getsource(decoding.generate)).body[0]
    assert drifted({"generate": node}, ["llmscratch.decoding"]) == ([], [])
    assert drifted({"generate": node}, ["llmscratch.pretraining"]) == ([], ["generate"])


def test_a_leading_check_call_is_the_only_thing_ignored():
    plain = ast.parse("def f(x):\n    return x + 1\n").body[0]
    checked = ast.parse("def f(x):\n    check_x(x)  # beyond the book\n    return x + 1\n").body[0]
    later = ast.parse("def f(x):\n    y = 1\n    check_x(x)\n    return x + 1\n").body[0]
    assert normalized(plain) == normalized(checked)
    assert normalized(ast.parse("def f(x):\n    return x + 1\n").body[0]) != normalized(later)


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
    for module_name in package_modules():
        found = getattr(importlib.import_module(module_name), name, None)
        if found is not None and getattr(found, "__module__", None) == module_name:
            return found
    raise LookupError(f"llmscratch defines no {name}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_printed_package_source_is_current(path):
    """A stored ``print(inspect.getsource(f))`` output is not re-checked by nbval: it must show today's code."""
    for name, output in shown_sources(path):
        assert inspect.getsource(package_object(name)) in output, (
            f"{path.name} shows an old version of llmscratch.{name}: run the notebook again")


def test_shown_sources_are_found():
    path = REPO_ROOT / "ch05_pretraining" / "ch05_pretraining.ipynb"
    assert {name for name, _ in shown_sources(path)} >= {"train_model_simple", "generate"}
