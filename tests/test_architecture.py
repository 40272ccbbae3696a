"""The package's shape: modules import only earlier ones, book functions read like the book, one settings path."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import llmscratch
import llmscratch.classification as classification
import llmscratch.lora
from notebook_conventions import REPO_ROOT, cell_source, load_notebook, notebook_paths

PACKAGE_DIR = Path(llmscratch.__file__).parent


def internal_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, at the top or inside functions (``from .x import y``)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                imported.add(node.module.split(".")[0])
            else:
                imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmscratch."):
            imported.add(node.module.split(".")[1])
    return imported - {path.stem}


def import_graph() -> dict[str, set[str]]:
    return {path.stem: internal_imports(path) for path in PACKAGE_DIR.glob("*.py")
            if path.stem not in ("__init__", "__main__")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [node])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_no_two_modules_import_each_other():
    graph = import_graph()
    assert "gpt" in graph and "kv_cache" in graph["decoding"]  # the graph is really read
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in llmscratch: {' -> '.join(cycle)}"


def test_the_fast_paths_know_lora_only_through_the_linear_layer_registry():
    """Earlier modules never import appendix E: ``lora`` registers ``LinearWithLoRA`` with ``attention``."""
    graph = import_graph()
    assert "attention" in graph["lora"]
    assert [name for name in ("attention", "gpt", "kv_cache", "decoding") if "lora" in graph[name]] == []


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


# The book's functions and what each may not mention: the extensions live beside them.
BOOK_FUNCTIONS = [
    llmscratch.train_model_simple, llmscratch.calc_loss_batch, llmscratch.calc_loss_loader,
    llmscratch.evaluate_model, llmscratch.generate_text_simple, llmscratch.generate_and_print_sample,
    llmscratch.text_to_token_ids, llmscratch.token_ids_to_text, llmscratch.train_model,
    llmscratch.find_highest_gradient, llmscratch.generate, llmscratch.lora.replace_linear_with_lora,
    # chapter 6 (SpamDataset is a class: its leading check sits in __init__, which this test does not look into)
    classification.create_balanced_dataset, classification.random_split, classification.calc_accuracy_loader,
    classification.calc_loss_batch, classification.calc_loss_loader, classification.evaluate_model,
    classification.train_classifier_simple, classification.classify_review,
]
EXTENSION_WORDS = re.compile(r"\b(checkpoint|resume|tqdm|rng_state|save_checkpoint|load_checkpoint)\b")


@pytest.mark.parametrize("function", BOOK_FUNCTIONS, ids=lambda f: f.__name__)
def test_book_functions_have_the_books_body(function):
    """At most one checking call, as the first statement; no resuming, progress bars or checkpoints inside."""
    node = ast.parse(inspect.getsource(function)).body[0]
    body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
        else node.body
    code = "\n".join(ast.unparse(statement) for statement in body)
    assert not EXTENSION_WORDS.search(code), f"{function.__name__} holds an extension: {EXTENSION_WORDS.search(code)}"
    checks = [n for n in ast.walk(ast.Module(body=body, type_ignores=[])) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Name) and re.match(r"_?check_", n.func.id)]
    assert len(checks) <= 1, f"{function.__name__}: one checking call at most"
    if checks:
        first = body[0]
        assert isinstance(first, ast.Expr) and first.value is checks[0], "the checking call comes first"


def test_train_model_simple_prints_the_books_lines(tokenizer, capsys):
    import torch

    from tiny_training import TINY_CONFIG, tiny_loaders

    torch.manual_seed(123)
    train, val = tiny_loaders(tokenizer)
    model = llmscratch.GPTModel(TINY_CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4)
    llmscratch.train_model_simple(model, train, val, optimizer, "cpu", 1, 2, 1, "Every effort", tokenizer)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Ep 1 (Step 000000): Train loss ") and lines[-1].startswith("Every effort")


def test_top_level_exports_chapter_5_names():
    import llmscratch.pretraining as pretraining

    assert llmscratch.calc_loss_batch is pretraining.calc_loss_batch
    assert "calc_loss_batch" in llmscratch.__all__ and "later chapter" in llmscratch.__doc__
    assert all(hasattr(llmscratch, name) for name in llmscratch.__all__)


# --- one settings path -----------------------------------------------------------------------------------


def test_no_notebook_reads_the_environment_for_course_settings():
    for path in notebook_paths():
        for cell in load_notebook(path)["cells"]:
            source = cell_source(cell)
            if cell["cell_type"] == "code" and "LLMSCRATCH_" in source:
                assert not re.search(r"os\.environ|os\.getenv|getenv\(", source), (
                    f"{path.relative_to(REPO_ROOT)} reads LLMSCRATCH_* itself: use llmscratch.settings")


def test_only_settings_reads_course_variables():
    readers = []
    for path in [*PACKAGE_DIR.glob("*.py"), *(REPO_ROOT / "benchmarks").glob("*.py"), REPO_ROOT / "conftest.py"]:
        text = path.read_text(encoding="utf-8")
        reads = re.findall(r"(?:environ\.get\(|getenv\()\s*[\"']LLMSCRATCH_", text)
        reads += re.findall(r"environ\[\s*[\"']LLMSCRATCH_\w+[\"']\](?!\s*=[^=])", text)  # not a write
        if reads and path.name != "settings.py":
            readers.append(path.name)
    assert readers == [], f"read LLMSCRATCH_* through llmscratch.settings, not in {readers}"


def test_one_device_resolver():
    """``torch.device(`` from a user's string is built in settings only (plus the benchmarks' labels)."""
    makers = [path.name for path in PACKAGE_DIR.glob("*.py")
              if "torch.cuda.is_available()" in path.read_text(encoding="utf-8")
              and "def " in path.read_text(encoding="utf-8")
              and re.search(r"torch\.device\((name|device)\)", path.read_text(encoding="utf-8"))]
    assert makers == ["settings.py"], makers


def test_no_literal_endoftext_id_outside_its_constant():
    found = [path.name for path in PACKAGE_DIR.glob("*.py")
             if re.search(r"(?<![\w.])50256(?!\w)", re.sub(r"(#.*|\"\"\"[\s\S]*?\"\"\"|\"[^\"\n]*\")", "",
                                                            path.read_text(encoding="utf-8")))]
    assert found == ["bpe_gpt2.py"], f"use GPT2_ENDOFTEXT_ID instead of the literal 50256 in {found}"
