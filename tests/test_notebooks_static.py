"""Static checks of the committed notebooks (json only, no kernel): the notebook rules of CONVENTIONS.md."""

from __future__ import annotations

import ast
import json
import re

import pytest

from notebook_conventions import (
    CHECK_OUTPUT_TAG, CPU_ONLY_TAG, MARKER_COMMENTS, MAX_NOTEBOOK_BYTES, PARAMETERS_TAG, REPO_ROOT, SETUP_CELL,
    SETUP_CELL_METADATA, cell_source, cell_tags, colab_badge, is_checked, load_notebook, notebook_paths,
    output_is_checked_on,
)

NOTEBOOKS = notebook_paths()
IDS = [p.relative_to(REPO_ROOT).as_posix() for p in NOTEBOOKS]
SMOKE_LINE = "SMOKE = get_settings().smoke"
PT_WORDS = {"de", "que", "não", "um", "uma", "para", "com", "os", "as", "é", "do", "da", "em", "no", "na"}
EN_WORDS = {"the", "of", "and", "to", "is", "that", "with", "for", "this", "we"}
MACHINE_PATHS = [str(REPO_ROOT.parent), "/tmp/", "/root/", "/home/", "C:\\\\"]


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and cell_source(c).strip()]


def test_every_chapter_with_code_has_a_notebook():
    for folder in ("ch01_intro", "ch02_text_data", "ch03_attention", "ch04_gpt_model", "ch05_pretraining",
                   "ch06_finetune_classification"):
        assert (REPO_ROOT / folder / f"{folder}.ipynb").is_file(), folder


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_first_screen_is_the_course(path):
    """Title with the welcome and the Colab badge, the setup cell collapsed, then the roadmap (test_diagrams)."""
    cells = load_notebook(path)["cells"]
    title, setup = cells[0], cells[1]
    assert title["cell_type"] == "markdown" and cell_source(title).startswith("# "), "cell 1: '# Title'"
    assert colab_badge(path) in cell_source(title), "cell 1 needs the Colab badge of this notebook"
    assert "**Quanto tempo leva:**" in cell_source(title) and "CPU" in cell_source(title), "cell 1: the welcome"
    assert setup["cell_type"] == "code" and cell_source(setup) == SETUP_CELL, "cell 2 must be the setup cell"
    assert setup["metadata"] == SETUP_CELL_METADATA, "the setup cell is collapsed (JupyterLab) and a form (Colab)"
    assert setup["outputs"] == [], "the setup cell prints nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameters_come_after_the_introduction(path):
    """One cell tagged 'parameters' holds the run sizes, after the chapter's introduction and a Portuguese
    paragraph that explains it; no code but the setup cell and the roadmap runs before it."""
    cells = load_notebook(path)["cells"]
    tagged = [i for i, c in enumerate(cells) if PARAMETERS_TAG in cell_tags(c)]
    assert len(tagged) == 1, "exactly one cell carries the 'parameters' tag"
    at = tagged[0]
    assert SMOKE_LINE in cell_source(cells[at]), "the parameters cell reads the smoke setting"
    assert cells[at - 1]["cell_type"] == "markdown" and "tamanhos desta execução" in cell_source(cells[at - 1])
    earlier_code = [c for c in cells[3:at] if c["cell_type"] == "code"]
    assert not earlier_code, "only the setup cell and the roadmap run before the parameters"
    assert any(c["cell_type"] == "markdown" for c in cells[3:at - 1]) or at == 4, "the introduction comes first"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_the_test_size_switch_is_explained_once(path):
    prose = [cell_source(c) for c in load_notebook(path)["cells"] if c["cell_type"] == "markdown"]
    mentions = [p for p in prose if re.search(r"LLMSCRATCH_SMOKE|testes autom|versão (rápida|reduzida)", p)]
    assert len(mentions) == 1, f"the test-size switch is explained once, in the parameters paragraph: {mentions}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_nbval_markers_are_cell_tags(path):
    """nbval's markers live in cell metadata (tags), not as comment lines a learner reads in every cell."""
    for cell in code_cells(load_notebook(path)):
        lines = [line.strip() for line in cell_source(cell).splitlines()]
        assert not set(MARKER_COMMENTS) & set(lines), f"marker comment instead of a tag: {cell_source(cell)[:80]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_outputs_come_from_one_clean_run(path):
    nb = load_notebook(path)
    counts = [c["execution_count"] for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), "execution counts must be 1..N (Restart and Run All)"
    for cell in nb["cells"]:
        assert "execution" not in cell.get("metadata", {}), "nbclient's timing metadata: strip it (noise in diffs)"
    for cell in code_cells(nb):
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"error output in: {cell_source(cell)[:80]}"
            if out.get("name") == "stderr":
                text = "".join(out["text"])
                assert "Warning" not in text and "Traceback" not in text, f"stderr: {text[:200]}"
            data = out.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data, "widget placeholder"
            if "<Figure size" in "".join(data.get("text/plain", "")):
                assert "image/png" in data, "a figure stored without its image (inline backend off?)"
        if is_checked(cell):
            assert cell["outputs"], f"checked cell without stored output: {cell_source(cell)[:80]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_machine_paths_and_small(path):
    outputs = json.dumps([c.get("outputs", []) for c in load_notebook(path)["cells"]])
    for fragment in MACHINE_PATHS:
        assert fragment not in outputs, f"an absolute path ({fragment}) of the build machine is in the outputs"
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_sources_hold_no_control_characters(path):
    # e.g. "\b" written from Python as a backspace: "$\beta$" became a math-input error in JupyterLab
    for index, cell in enumerate(load_notebook(path)["cells"]):
        found = sorted({hex(ord(ch)) for ch in re.findall(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", cell_source(cell))})
        assert not found, f"cell {index} holds control characters {found}: an unescaped backslash in the source?"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_narrative_is_portuguese(path):
    prose = " ".join(cell_source(c) for c in load_notebook(path)["cells"] if c["cell_type"] == "markdown")
    words = re.findall(r"[a-zà-ú]+", re.sub(r"`[^`]*`", " ", prose.lower()))
    pt = sum(w in PT_WORDS for w in words)
    en = sum(w in EN_WORDS for w in words)
    assert pt > 3 * max(en, 1), f"markdown reads as English ({pt} Portuguese vs {en} English stopwords)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_cells_have_unique_ids(path):
    nb = load_notebook(path)
    ids = [c.get("id") for c in nb["cells"]]
    assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5) and None not in ids, "nbformat 4.5: every cell has an id"
    assert len(set(ids)) == len(ids), "cell ids must be unique"


# Test jargon stays in code (one comment in the settings cell); the device is "a CPU" / "a GPU" (feminine).
JARGON = re.compile(r"\bSMOKE\b|\bCI\b|integração contínua", re.IGNORECASE)
MASCULINE_DEVICE = re.compile(r"\b(no|do|pelo|ao|em|num) (CPU|GPU)\b")  # "em GPUs" (plural) is fine


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_narrative_keeps_to_the_course_words(path):
    for cell in load_notebook(path)["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = re.sub(r"`[^`]*`", " ", cell_source(cell))  # code spans may name settings
        assert not JARGON.search(text), f"test jargon in the narrative: {JARGON.search(text).group(0)!r}"
        assert not MASCULINE_DEVICE.search(text), f"write 'na CPU'/'na GPU': {MASCULINE_DEVICE.search(text).group(0)!r}"
        assert "MiB" not in text and "GiB" not in text, "sizes in MB/GB (10^6/10^9 bytes)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_cpu_only_tag_sits_on_checked_cells(path):
    for cell in load_notebook(path)["cells"]:
        if CPU_ONLY_TAG in cell_tags(cell):
            assert is_checked(cell), "cpu-only-output only makes sense on a checked cell (nbval-check-output)"


def test_cpu_only_outputs_are_compared_on_the_cpu_only():
    checked, cpu_only = [CHECK_OUTPUT_TAG], [CHECK_OUTPUT_TAG, CPU_ONLY_TAG]
    assert output_is_checked_on(checked, "cpu") and output_is_checked_on(checked, "cuda")
    assert output_is_checked_on(cpu_only, "cpu") and not output_is_checked_on(cpu_only, "cuda")
    assert not output_is_checked_on(cpu_only, "mps")


def test_nbval_reads_our_tags():
    """The tags are nbval's own: a typo would silently stop checking a cell."""
    from nbval.plugin import metadata_tags

    assert metadata_tags[CHECK_OUTPUT_TAG] == "check"


DEVICE_LITERAL = re.compile(r"""["'](cpu|cuda(:\d+)?|mps)["']""")


def signature_default_lines(source: str) -> set[int]:
    """Line numbers (1-based) of the string defaults in the signatures of the functions ``source`` defines: the
    book's ``def custom_collate_fn(..., device="cpu")`` names a default, not the device a notebook runs on."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics
        return set()
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defaults = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
            lines |= {d.lineno for d in defaults if isinstance(d, ast.Constant) and isinstance(d.value, str)}
    return lines


def test_a_signature_default_is_not_a_hard_coded_device():
    source = 'def collate(batch,\n            device="cpu"):\n    return batch\ncollate([], device="cuda")\n'
    assert signature_default_lines(source) == {2}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_notebook_hard_codes_a_device(path):
    """The device comes from llmscratch.get_device() (CUDA > MPS > CPU; LLMSCRATCH_DEVICE overrides). A default in
    a function's signature (the book's ``device="cpu"``) is allowed: the calls pass the device."""
    for cell in code_cells(load_notebook(path)):
        source = cell_source(cell)
        defaults = signature_default_lines(source)
        for number, line in enumerate(source.splitlines(), start=1):
            code = line.split("#", 1)[0]
            if "map_location" in code or number in defaults:  # loading onto the CPU first is not a choice
                continue
            assert not DEVICE_LITERAL.search(code), f"hard-coded device: {line.strip()}"
