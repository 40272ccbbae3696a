"""The notebook rules of CONVENTIONS.md as data, shared by the static notebook test and the drift test."""

from __future__ import annotations

import json
from pathlib import Path

from llmscratch.repo_url import github_slug, repository_url

REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_URL = repository_url()  # pyproject.toml's [project.urls] Repository: the one source of the address
GITHUB_REPO = github_slug(REPO_URL)

# The setup cell of every notebook, character for character (collapsed in JupyterLab, a form on Colab).
SETUP_CELL = '''\
#@title Preparação: torna o pacote do curso importável (rode primeiro)
# Setup: make the course package `llmscratch` importable (in a clone, under the tests, on Colab).
import pathlib
import subprocess
import sys

REPO_URL = "{repo_url}"


class SetupError(Exception):
    def _render_traceback_(self):  # Jupyter shows the message alone, without a traceback
        return [f"SetupError: {self}"]


here = pathlib.Path.cwd().resolve()
REPO_ROOT = next((p for p in (here, *here.parents) if (p / "shared" / "llmscratch").is_dir()), None)
if REPO_ROOT is None and "google.colab" in sys.modules:  # Colab: clone the course, install what it needs
    REPO_ROOT = here / REPO_URL.rstrip("/").rsplit("/", 1)[-1]
    clone = ["git", "clone", "-q", "--depth", "1", REPO_URL, str(REPO_ROOT)]
    if not REPO_ROOT.exists() and subprocess.run(clone).returncode != 0:
        raise SetupError(f"não consegui clonar {REPO_URL}: confira a internet e o endereço, e rode a célula de novo")
    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(REPO_ROOT)]).returncode != 0:
        raise SetupError("a instalação das dependências do curso falhou (veja acima); rode a célula de novo")
if REPO_ROOT is None:
    raise SetupError(f"abra este notebook de dentro de uma cópia do curso: git clone {REPO_URL}")
if str(REPO_ROOT / "shared") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "shared"))'''.replace("{repo_url}", REPO_URL)
SETUP_CELL_METADATA = {"cellView": "form", "jupyter": {"source_hidden": True}}

PARAMETERS_TAG = "parameters"
# nbval's own cell tags (CONVENTIONS.md): a learner reads no marker comments.
CHECK_OUTPUT_TAG = "nbval-check-output"
# A checked cell whose output holds only on the CPU (the book's seeded numbers computed on the notebook's device)
# also carries this tag; on a GPU its output is not compared (conftest.py).
CPU_ONLY_TAG = "cpu-only-output"
MARKER_COMMENTS = ("# NBVAL_CHECK_OUTPUT", "# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP", "# CPU_ONLY_OUTPUT")
MAX_NOTEBOOK_BYTES = 1_000_000


def notebook_paths() -> list[Path]:
    return sorted(REPO_ROOT.glob("ch0*/*.ipynb"))


def load_notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def colab_badge(path: Path) -> str:
    rel = path.relative_to(REPO_ROOT).as_posix()
    return (
        f"[![Abrir no Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{GITHUB_REPO}/blob/main/{rel})"
    )


def cell_tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def is_checked(cell: dict) -> bool:
    """Whether nbval compares this cell's stored output (``--nbval-lax``: only tagged cells)."""
    return CHECK_OUTPUT_TAG in cell_tags(cell)


def output_is_checked_on(tags: list[str], device_type: str) -> bool:
    """Whether nbval compares a checked cell's output when the notebooks run on ``device_type``."""
    return device_type == "cpu" or CPU_ONLY_TAG not in tags
