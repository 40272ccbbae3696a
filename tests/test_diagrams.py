"""Every chapter shows our own diagrams: the roadmap first, then the chapter's SVG files (CONVENTIONS.md).

The stored output of a diagram cell must embed the SVG (JupyterLab, GitHub and Colab then render it without the
file) in a form that an untrusted JupyterLab renders (an HTML ``<img>`` with a ``data:`` URI and an alt text), and
it must be the SVG of the file as it is today.
"""

from __future__ import annotations

import ast
import base64
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from IPython.core.formatters import DisplayFormatter

from llmscratch.diagrams import (
    ROADMAP_STAGES, Diagram, diagram_path, roadmap_svg, show_diagram, show_roadmap, svg_alt_text,
)
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


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def html_images(html: str) -> list[dict]:
    parser = _Images()
    parser.feed(html)
    return parser.images


def stored_images(cell: dict) -> list[dict]:
    """The ``<img>`` tags of a cell's stored HTML outputs."""
    images = []
    for out in cell.get("outputs", []):
        html = out.get("data", {}).get("text/html")
        if html is not None:
            images += html_images("".join(html) if isinstance(html, list) else html)
    return images


def decoded_svg(image: dict) -> str:
    prefix = "data:image/svg+xml;base64,"
    assert image.get("src", "").startswith(prefix), "the picture is an SVG data URI"
    return base64.b64decode(image["src"][len(prefix):]).decode("utf-8")


def shown_diagrams(path) -> list[tuple[dict, str, object]]:
    cells = [c for c in load_notebook(path)["cells"] if c["cell_type"] == "code"]
    return [(cell, func, arg) for cell in cells for func, arg in diagram_calls(cell_source(cell))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_opens_with_the_roadmap_of_its_chapter(path):
    cell = load_notebook(path)["cells"][2]
    assert cell["cell_type"] == "code", "cell 3 (after the title and the collapsed setup) shows the course roadmap"
    assert diagram_calls(cell_source(cell)) == [("show_roadmap", chapter_of(path))]
    assert cell["metadata"].get("jupyter", {}).get("source_hidden"), "the roadmap's code is collapsed: the picture shows"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_diagram_shown_exists_and_its_svg_is_stored(path):
    for cell, func, arg in shown_diagrams(path):
        expected = show_roadmap(arg) if func == "show_roadmap" else show_diagram(arg)
        images = stored_images(cell)
        assert len(images) == 1, f"{func}({arg!r}): one stored <img> (rerun the cell)"
        assert decoded_svg(images[0]) == expected.svg, f"{func}({arg!r}): the stored output is not today's SVG"
        assert images[0]["alt"] == expected.alt, f"{func}({arg!r}): the stored alt text is not today's"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_stored_picture_renders_in_an_untrusted_jupyterlab(path):
    """An untrusted notebook (every notebook of a fresh clone) renders PNG and sanitized HTML, not SVG outputs."""
    for cell in load_notebook(path)["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/svg+xml" in data:
                assert "image/png" in data or stored_images({"outputs": [out]}), (
                    f"SVG-only output (shows as <IPython.core.display.SVG object>): {cell_source(cell)[:80]}")
            for image in stored_images({"outputs": [out]}):
                assert image.get("alt", "").strip(), "every picture has an alt text"
                assert image.get("src", "").startswith("data:image/"), "pictures are embedded (no file, no URL)"


@pytest.mark.parametrize("folder", sorted(REQUIRED))
def test_each_chapter_shows_its_diagrams(folder):
    shown = {arg for _, func, arg in shown_diagrams(REPO_ROOT / folder / f"{folder}.ipynb") if func == "show_diagram"}
    for name in REQUIRED[folder]:
        assert f"{folder}/figures/{name}.svg" in shown, f"{folder} does not show {name}.svg"


# The diagrams each appendix notebook must show (issue 22: appendix A's graph, training loop and DDP).
REQUIRED_IN_APPENDICES = {
    "ch01_intro/appendix_a_pytorch.ipynb": ["computation_graph", "training_loop_pytorch", "ddp"],
}


@pytest.mark.parametrize("notebook", sorted(REQUIRED_IN_APPENDICES))
def test_each_appendix_shows_its_diagrams(notebook):
    shown = {arg for _, func, arg in shown_diagrams(REPO_ROOT / notebook) if func == "show_diagram"}
    folder = notebook.split("/")[0]
    for name in REQUIRED_IN_APPENDICES[notebook]:
        assert f"{folder}/figures/{name}.svg" in shown, f"{notebook} does not show {name}.svg"


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


def test_show_diagram_embeds_the_file_as_an_image_with_alt_text():
    figure = FIGURES[0]
    diagram = show_diagram(figure.relative_to(REPO_ROOT).as_posix())
    data, _ = DisplayFormatter().format(diagram)  # what a kernel stores for the cell's last expression
    assert set(data) == {"text/html", "text/plain"}, "no image/svg+xml: an untrusted JupyterLab would refuse it"
    (image,) = html_images(data["text/html"])
    assert decoded_svg(image) == figure.read_text(encoding="utf-8")
    assert image["alt"] == svg_alt_text(figure.read_text(encoding="utf-8")) and data["text/plain"].startswith("[diagrama:")


@pytest.mark.parametrize("figure", FIGURES, ids=[f.name for f in FIGURES])
def test_figure_has_a_title_and_description_for_its_alt_text(figure):
    alt = svg_alt_text(figure.read_text(encoding="utf-8"))
    assert ": " in alt and len(alt) > 40, alt


def test_alt_text_escapes_quotes_and_a_diagram_needs_both_parts():
    svg = "<svg xmlns='http://www.w3.org/2000/svg'><title>a \"b\" &amp; c</title></svg>"
    (image,) = html_images(Diagram(svg, svg_alt_text(svg))._repr_html_())
    assert image["alt"] == 'a "b" & c'
    with pytest.raises(ValueError, match="title"):
        svg_alt_text("<svg xmlns='http://www.w3.org/2000/svg'><text>x</text></svg>")
    with pytest.raises(ValueError, match="alt"):
        Diagram(svg, " ")


def test_roadmap_labels_fit_their_boxes():
    """Every step label, measured in DejaVu Sans Bold (the roadmap's first font; matplotlib ships it), fits its box."""
    from matplotlib import font_manager
    from PIL import ImageFont

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans:bold", fallback_to_default=False), 12.5)
    svg = roadmap_svg(7)
    box = int(re.search(r"<rect x='\d+' y='54' width='(\d+)'", svg).group(1))
    labels = re.findall(r"font-size='12.5'[^>]*>([^<]+)</text>", svg)
    assert len(labels) == sum(len(steps) for _, steps in ROADMAP_STAGES)
    widest = max(font.getlength(label.replace("&#x27;", "'")) for label in labels)
    assert 10 + widest + 6 <= box, f"a label {widest:.0f} px wide overflows its {box} px box"
