"""The notebook rules of CONVENTIONS.md as data, shared by the static notebook test and the drift test."""

from __future__ import annotations

import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GITHUB_REPO = "llmscratch-br/llms-do-zero"

# Cell 2 of every notebook, character for character.
SETUP_CELL = '''\
# Setup: make the course package `llmscratch` importable (clone, nbval or Colab).
import pathlib
import subprocess
import sys

REPO_URL = "https://github.com/llmscratch-br/llms-do-zero"


def find_repo_root(start: pathlib.Path) -> pathlib.Path | None:
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "shared" / "llmscratch").is_dir():
            return folder
    return None


REPO_ROOT = find_repo_root(pathlib.Path.cwd().resolve())
if REPO_ROOT is None and "google.colab" in sys.modules:
    REPO_ROOT = pathlib.Path("/content/llms-do-zero")
    if not REPO_ROOT.exists():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(REPO_ROOT)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "tiktoken", "regex"], check=True)
if REPO_ROOT is None:
    raise RuntimeError("Open this notebook from a clone of the course: " + REPO_URL)
if str(REPO_ROOT / "shared") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "shared"))'''

PARAMETERS_TAG = "parameters"
# A checked cell whose output holds only on the CPU (the book's seeded numbers computed on the notebook's device)
# carries this line under "# NBVAL_CHECK_OUTPUT"; on a GPU its output is not compared.
CPU_ONLY_MARKER = "# CPU_ONLY_OUTPUT"
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


def output_is_checked_on(source: str, device_type: str) -> bool:
    """Whether nbval compares a checked cell's output when the notebooks run on ``device_type``."""
    cpu_only = any(line.strip() == CPU_ONLY_MARKER for line in source.splitlines())
    return device_type == "cpu" or not cpu_only
