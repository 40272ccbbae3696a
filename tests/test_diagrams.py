"""Every chapter shows our own diagrams: the roadmap first, then the chapter's SVG files (CONVENTIONS.md).

The stored output of a diagram cell must embed the SVG (JupyterLab, GitHub and Colab then render it without the
file), and it must be the SVG of the file as it is today.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET

import pytest
from IPython.display import SVG

from llmscratch.diagrams import ROADMAP_STAGES, diagram_path, roadmap_svg, show_diagram, show_roadmap
from notebook_conventions import REPO_ROOT, cell_source, load_notebook, notebook_paths

NOTEBOOKS = notebook_paths()
IDS = [p.relative_to(REPO_ROOT).as_posix() for p in NOTEBOOKS]
FIGURES = sorted(REPO_ROOT.glob("ch0*/figures/*.svg"))
# The diagrams each chapter's main notebook must show (issue 10, point 1).
REQUIRED = {
    "ch02_text_data": ["text_pipeline", "sliding_window"],
    "ch03_attention": ["attention_weights", "causal_mask", "multihead_split"],
    "ch04_gpt_model": ["gpt_architecture", "transformer_block"],
    "ch05_pretraining": ["training_loop", "gpt2_weight_mapping"],
    "ch06_finetune_classification": ["spam_data_pipeline", "classification_head"],
    "ch07_finetune_instructions": ["instruction_data_pipeline", "finetune_and_evaluate"],
}


def chapter_of(path) -> int:
    return int(re.match(r"ch(\d\d)_", path.parent.name).group(1))


def diagram_calls(source: str) -> list[tuple[str, object]]:
    """The (function, argument) of every show_roadmap/show_diagram call in a code cell."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("show_roadmap", "show_diagram"):
            assert len(node.args) == 1 and isinstance(node.args[0], ast.Constant), ast.unparse(node)
            calls.append((node.func.id, node.args[0].value))
    return calls


def stored_svg(cell: dict) -> str | None:
    for out in cell.get("outputs", []):
        data = out.get("data", {}).get("image/svg+xml")
        if data is not None:
            return "".join(data) if isinstance(data, list) else data
    return None


def shown_diagrams(path) -> list[tuple[dict, str, object]]:
    cells = [c for c in load_notebook(path)["cells"] if c["cell_type"] == "code"]
    return [(cell, func, arg) for cell in cells for func, arg in diagram_calls(cell_source(cell))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_opens_with_the_roadmap_of_its_chapter(path):
    cell = load_notebook(path)["cells"][3]
    assert cell["cell_type"] == "code", "cell 4 shows the course roadmap"
    assert diagram_calls(cell_source(cell)) == [("show_roadmap", chapter_of(path))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_diagram_shown_exists_and_its_svg_is_stored(path):
    for cell, func, arg in shown_diagrams(path):
        expected = show_roadmap(arg).data if func == "show_roadmap" else show_diagram(arg).data
        assert stored_svg(cell) == expected, f"{func}({arg!r}): the stored output is not today's SVG (rerun)"


@pytest.mark.parametrize("folder", sorted(REQUIRED))
def test_each_chapter_shows_its_diagrams(folder):
    shown = {arg for _, func, arg in shown_diagrams(REPO_ROOT / folder / f"{folder}.ipynb") if func == "show_diagram"}
    for name in REQUIRED[folder]:
        assert f"{folder}/figures/{name}.svg" in shown, f"{folder} does not show {name}.svg"


def test_every_figure_file_is_shown_somewhere():
    shown = {arg for path in NOTEBOOKS for _, func, arg in shown_diagrams(path) if func == "show_diagram"}
    for figure in FIGURES:
        assert figure.relative_to(REPO_ROOT).as_posix() in shown, f"{figure.name} is not shown by any notebook"


@pytest.mark.parametrize("figure", FIGURES, ids=[f.name for f in FIGURES])
def test_figure_is_self_contained_svg_with_portuguese_labels(figure):
    root = ET.parse(figure).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox"), "an <svg> with a viewBox"
    text = figure.read_text(encoding="utf-8")
    for forbidden in ("<script", "<image", "href=\"http", "href='http", "@import"):
        assert forbidden not in text, f"{figure.name}: {forbidden} (diagrams must render offline, everywhere)"
    labels = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")).lower()
    assert re.search(r"\b(de|do|da|os|as|com|para|e)\b", labels), f"{figure.name}: no Portuguese labels"
    assert figure.stat().st_size < 40_000


def test_roadmap_highlights_the_steps_of_the_chapter():
    steps_of = {ch: sum(c == ch for _, steps in ROADMAP_STAGES for c, _ in steps) for ch in range(1, 8)}
    for chapter, count in steps_of.items():
        svg = roadmap_svg(chapter)
        ET.fromstring(svg)  # well-formed
        assert svg.count("fill='#1f6feb'") == count, chapter  # the accent marks this chapter's steps only
    assert steps_of[5] == 3 and steps_of[1] == 0


def test_diagram_errors_say_what_to_do():
    with pytest.raises(ValueError, match="chapter must be one of"):
        roadmap_svg(8)
    with pytest.raises(FileNotFoundError, match="figures"):
        diagram_path("ch03_attention/figures/no_such_diagram.svg")
    with pytest.raises(ValueError, match="SVG"):
        diagram_path("ch03_attention/ch03_attention.ipynb")


def test_show_diagram_embeds_the_file():
    assert isinstance(show_diagram(FIGURES[0].relative_to(REPO_ROOT).as_posix()), SVG)
