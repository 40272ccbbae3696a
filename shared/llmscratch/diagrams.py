"""The course's diagrams: the roadmap drawn by code, and the chapters' SVG files shown inline.

Introduced in ch01_intro (the roadmap) and used at the top of every notebook. A diagram is shown by a code cell
whose stored output embeds the picture, so JupyterLab, GitHub's notebook view and Colab all render it (a relative
markdown image does not resolve on Colab).

The stored form is an HTML ``<img>`` whose ``src`` is the SVG as a base64 ``data:`` URI, with a real ``alt``
text. A notebook from a fresh clone is *untrusted*, and an untrusted JupyterLab refuses ``image/svg+xml``
outputs (it shows ``<IPython.core.display.SVG object>`` instead), but it renders sanitized HTML images.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

# The repository root: shared/llmscratch/diagrams.py -> shared/llmscratch -> shared -> root.
REPO_ROOT = Path(__file__).resolve().parents[2]

# The course's three stages and eight steps, with the chapter that builds each step.
ROADMAP_STAGES: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = (
    ("Etapa 1: construir o LLM", (
        (2, "Dados: tokens e amostragem"),
        (3, "Mecanismo de atenção"),
        (4, "Arquitetura do GPT"),
    )),
    ("Etapa 2: pré-treinar", (
        (5, "Laço de treinamento"),
        (5, "Avaliar e gerar texto"),
        (5, "Carregar os pesos do GPT-2"),
    )),
    ("Etapa 3: ajuste fino", (
        (6, "Classificador de spam"),
        (7, "Modelo que segue instruções"),
    )),
)
CHAPTERS = (1, 2, 3, 4, 5, 6, 7)

# Colours (one accent for "you are here", greys for the rest).
_ACCENT, _ACCENT_TEXT = "#1f6feb", "#ffffff"
_STEP_FILL, _STEP_TEXT, _STAGE_FILL, _STAGE_STROKE = "#eef1f5", "#3b4452", "#f8f9fb", "#c5ccd6"
_FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def roadmap_svg(chapter: int) -> str:
    """The course roadmap as SVG text: three stages, nine steps, the steps of ``chapter`` highlighted.

    Chapter 1 highlights nothing (it is the map itself). Introduced in ch01_intro.
    """
    if chapter not in CHAPTERS:
        raise ValueError(f"chapter must be one of {CHAPTERS}, got {chapter!r}")
    step_w, step_h, gap, pad, stage_gap = 256, 46, 10, 12, 26  # step_w fits the longest bold label
    width = 3 * (step_w + 2 * pad) + 2 * stage_gap
    most_steps = max(len(steps) for _, steps in ROADMAP_STAGES)
    stage_h = 34 + most_steps * (step_h + gap) + pad  # every stage box is as tall as the longest
    height = 20 + stage_h + 36
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' {_FONT}>",
        f"<rect width='{width}' height='{height}' fill='#ffffff'/>",
        "<defs><marker id='seta' markerWidth='8' markerHeight='8' refX='7' refY='4' orient='auto'>"
        f"<path d='M0,0 L8,4 L0,8 z' fill='{_STAGE_STROKE}'/></marker></defs>",
    ]
    step_number = 0
    for stage_index, (stage_title, steps) in enumerate(ROADMAP_STAGES):
        x = stage_index * (step_w + 2 * pad + stage_gap)
        parts.append(
            f"<rect x='{x}' y='20' width='{step_w + 2 * pad}' height='{stage_h}' rx='10' "
            f"fill='{_STAGE_FILL}' stroke='{_STAGE_STROKE}'/>"
        )
        parts.append(
            f"<text x='{x + pad}' y='42' font-size='14' font-weight='bold' fill='{_STEP_TEXT}'>"
            f"{escape(stage_title)}</text>"
        )
        if stage_index > 0:  # an arrow from the previous stage
            parts.append(
                f"<line x1='{x - stage_gap + 3}' y1='{20 + stage_h / 2}' x2='{x - 3}' y2='{20 + stage_h / 2}' "
                f"stroke='{_STAGE_STROKE}' stroke-width='3' marker-end='url(#seta)'/>"
            )
        for row, (step_chapter, label) in enumerate(steps):
            step_number += 1
            here = step_chapter == chapter
            y = 54 + row * (step_h + gap)
            fill, text = (_ACCENT, _ACCENT_TEXT) if here else (_STEP_FILL, _STEP_TEXT)
            parts.append(
                f"<rect x='{x + pad}' y='{y}' width='{step_w}' height='{step_h}' rx='6' fill='{fill}'"
                f"{' stroke=' + repr(_ACCENT) + ' stroke-width=' + repr('2') if here else ''}/>"
            )
            parts.append(
                f"<text x='{x + pad + 10}' y='{y + 19}' font-size='12.5' fill='{text}'"
                f"{' font-weight=' + repr('bold') if here else ''}>{step_number}. {escape(label)}</text>"
            )
            parts.append(
                f"<text x='{x + pad + 10}' y='{y + 36}' font-size='11' fill='{text}'>capítulo {step_chapter}</text>"
            )
    caption = (
        "Capítulo 1: o mapa do curso inteiro"
        if chapter == 1
        else f"Você está aqui: capítulo {chapter} (em azul)"
    )
    parts.append(
        f"<text x='{width / 2}' y='{height - 12}' font-size='13' text-anchor='middle' fill='{_STEP_TEXT}'>"
        f"{escape(caption)}</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


class Diagram:
    """A diagram as a notebook shows it: an ``<img>`` with the SVG inline (``data:`` URI) and an alt text.

    ``svg`` is the SVG text; ``alt`` says in words what the picture shows (it is also the plain-text form, for
    a viewer that renders no HTML). Introduced in ch01_intro.
    """

    def __init__(self, svg: str, alt: str):
        if not svg.lstrip().startswith("<svg"):
            raise ValueError("a Diagram needs SVG text that starts with '<svg'")
        if not alt.strip():
            raise ValueError("a Diagram needs an alt text that says what it shows")
        self.svg, self.alt = svg, alt.strip()

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.svg.encode("utf-8")).decode("ascii")
        return f'<img alt="{escape(self.alt)}" src="data:image/svg+xml;base64,{data}">'

    def __repr__(self) -> str:
        return f"[diagrama: {self.alt}]"


def svg_alt_text(svg: str) -> str:
    """The alt text of one of the course's SVG diagrams: its ``<title>`` and ``<desc>`` (every diagram of the
    course has both, for screen readers), joined as "title: description"."""
    root = ET.fromstring(svg)
    words = {}
    for tag in ("title", "desc"):
        element = root.find(f"{{http://www.w3.org/2000/svg}}{tag}")
        words[tag] = " ".join("".join(element.itertext()).split()) if element is not None else ""
    if not words["title"]:
        raise ValueError("the diagram has no <title>: add one (and a <desc>) that says what it shows")
    return f"{words['title']}: {words['desc']}" if words["desc"] else words["title"]


def roadmap_alt_text(chapter: int) -> str:
    """The roadmap in words: its stages and steps, and which are this chapter's."""
    stages = "; ".join(
        f"{title}: " + ", ".join(f"{label} (capítulo {ch})" for ch, label in steps) for title, steps in ROADMAP_STAGES
    )
    here = "o mapa do curso inteiro" if chapter == 1 else f"em destaque, os passos do capítulo {chapter}"
    return f"Mapa do curso ({here}). {stages}."


def show_roadmap(chapter: int) -> Diagram:
    """Display the course roadmap with ``chapter``'s steps highlighted (the first picture of every notebook).

    Returns a ``Diagram``: as a cell's last expression it is shown and stored in the notebook.
    Introduced in ch01_intro.
    """
    return Diagram(roadmap_svg(chapter), roadmap_alt_text(chapter))


def diagram_path(relative_path: str) -> Path:
    """Where a diagram lives: ``relative_path`` is relative to the repository root, e.g.
    ``"ch03_attention/figures/causal_mask.svg"`` (the same from a clone, nbval and Colab)."""
    path = REPO_ROOT / relative_path
    if path.suffix != ".svg":
        raise ValueError(f"diagrams are SVG files, got {relative_path!r}")
    if not path.is_file():
        raise FileNotFoundError(
            f"diagram {relative_path!r} not found under {REPO_ROOT}; the course's diagrams live in "
            "chNN_*/figures/ (update your clone with `git pull`)"
        )
    return path


def show_diagram(relative_path: str) -> Diagram:
    """Display one of the course's SVG diagrams inline (its stored output embeds the SVG as an ``<img>``).

    ``relative_path`` is relative to the repository root. Introduced in ch02_text_data.
    """
    svg = diagram_path(relative_path).read_text(encoding="utf-8")
    return Diagram(svg, svg_alt_text(svg))
