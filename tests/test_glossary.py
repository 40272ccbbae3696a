"""The course's prose uses GLOSSARIO.md's terms: no forbidden variant in the notebooks' markdown or the READMEs.

GLOSSARIO.md holds a markdown table whose header has the columns "use" and "não use"; each "não use" cell lists the
forbidden variants, separated by ";" ("—" for none). A variant matches as whole words, case-insensitively, with any
whitespace (a line break too) between its words. Code is not prose: code spans, fenced code blocks, link targets and
HTML comments are ignored, and so is README.md's English summary. Italics (``*epoch*``) are ignored too: they hold
English glosses and titles; bold (``**...**``) is prose. JSON only, no kernel: fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "GLOSSARIO.md"
NONE = {"", "—", "-"}


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def forbidden_variants(text: str) -> dict[str, str]:
    """variant -> the form to use, read from the glossary's table with the columns "use" and "não use"."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|"):
            continue
        header = [cell.lower() for cell in _cells(line)]
        if "use" in header and "não use" in header:
            use_col, ban_col = header.index("use"), header.index("não use")
            break
    else:
        raise AssertionError("GLOSSARIO.md has no table with the columns 'use' and 'não use'")
    variants = {}
    for line in lines[i + 2:]:  # after the header and the |---| row
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        for variant in cells[ban_col].split(";"):
            variant = variant.strip()
            if variant not in NONE:
                variants[variant] = cells[use_col]
    return variants


def variant_pattern(variant: str) -> re.Pattern:
    """Whole words, any case, any whitespace between the words ("caminho sem\\ninternet" matches)."""
    words = r"\s+".join(re.escape(word) for word in variant.split())
    return re.compile(rf"(?<![\w-]){words}(?![\w-])", re.IGNORECASE)


def prose(markdown: str) -> str:
    """``markdown`` without what is not prose: fenced code, code spans, HTML comments, link targets, italics
    (glosses and titles), and the English summary (a heading "English summary" up to the next heading of the same
    level)."""
    text = re.sub(r"^(#+) English summary\b.*?(?=^\1 |\Z)", "", markdown, flags=re.M | re.S)
    text = re.sub(r"^\s*(```|~~~).*?^\s*\1[^\n]*$", " ", text, flags=re.M | re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"(`+).+?\1", " ", text, flags=re.S)
    text = re.sub(r"\]\([^)]*\)", "] ", text)  # [text](target): keep the text
    text = re.sub(r"(?<![*\w])\*(?![*\s])[^*\n]+?(?<![*\s])\*(?![*\w])", " ", text)  # *italic*, not **bold**
    return re.sub(r"https?://\S+", " ", text)


def prose_sources():
    """(where, markdown) for every notebook's markdown cell and every README the glossary governs."""
    for readme in [ROOT / "README.md", *sorted(ROOT.glob("ch*/README.md"))]:
        yield readme.relative_to(ROOT).as_posix(), readme.read_text(encoding="utf-8")
    for notebook in sorted(ROOT.glob("ch*/*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for index, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                yield f"{notebook.relative_to(ROOT).as_posix()} [cell {index}]", source


def violations(variants: dict[str, str], sources) -> list[str]:
    patterns = {variant: variant_pattern(variant) for variant in variants}
    found = []
    for where, markdown in sources:
        text = prose(markdown)
        for variant, pattern in patterns.items():
            for match in pattern.finditer(text):
                context = " ".join(text[max(0, match.start() - 40):match.end() + 40].split())
                found.append(f"{where}: {match.group(0)!r} (use {variants[variant]!r}): ...{context}...")
    return found


@pytest.fixture(scope="module")
def variants():
    return forbidden_variants(GLOSSARY.read_text(encoding="utf-8"))


def test_the_glossary_holds_the_decisions_already_made(variants):
    for variant, use in {"caminho sem internet": "caminho offline", "enchimento": "preenchimento",
                         "o LoRA": "LoRA", "passo para a frente": "passagem para a frente", "cache KV": "KV cache"
                         }.items():
        assert variant in variants and use in variants[variant], (variant, variants.get(variant))
    text = GLOSSARY.read_text(encoding="utf-8")
    assert "GPT pequeno, pesos aleatórios" in text and "GPT pequeno, pesos aleatórios — NÃO é o GPT-2" in text


def test_no_form_to_use_is_itself_forbidden(variants):
    uses = {use for use in variants.values()}
    for variant in variants:
        pattern = variant_pattern(variant)
        assert not any(pattern.search(prose(use)) for use in uses), f"{variant!r} is also a form to use"


def test_the_readme_links_the_glossary():
    assert "(GLOSSARIO.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_matching_rules():
    pattern = variant_pattern("caminho sem internet")
    assert pattern.search("pelo **caminho sem\ninternet**:")
    assert pattern.search("Caminho Sem Internet")
    assert not variant_pattern("o LoRA").search("no LoRA e na LoRA")
    assert not variant_pattern("enchimento").search("o preenchimento")
    assert not variant_pattern("pré-treino").search("pré-treinos e pré-treinamento")
    text = prose("use `o LoRA` e\n```python\ncache KV\n```\n[cache KV](#o-lora) <!-- enchimento -->\n"
                 "## English summary\ncache KV\n## Fim\n")
    assert "LoRA" not in text and "enchimento" not in text and "#o-lora" not in text
    assert text.count("cache KV") == 1  # the link's text stays; the English summary goes
    text = prose("a época (*epoch*), o **caminho sem internet**, * um item, 8 * 120, *The Verdict*")
    assert "epoch" not in text and "Verdict" not in text
    assert "caminho sem internet" in text and "* um item" in text and "8 * 120" in text


def test_prose_uses_the_glossary(variants):
    found = violations(variants, prose_sources())
    assert not found, ("forbidden variants (see GLOSSARIO.md):\n" + "\n".join(found))
