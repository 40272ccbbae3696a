"""The course works on Colab: the setup cell clones the course and installs what the package imports.

- The repository address has one source (pyproject.toml's ``[project.urls]``); every copy must equal it, and
  ``python -m llmscratch.repo_url`` rewrites them all.
- The setup cell, run as Colab runs it (a ``google.colab`` module, an empty folder, the course served by git),
  clones the course, installs the package, and then ``import llmscratch`` and each chapter's imports work.
- A failed clone prints one Portuguese sentence, not a ``CalledProcessError`` traceback.
- Everything the package and the notebooks import is installed by the Colab branch (the package's dependencies)
  or ships with Colab.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from llmscratch import repo_url
from notebook_conventions import REPO_ROOT, REPO_URL, SETUP_CELL, cell_source, load_notebook, notebook_paths

# What Colab's default runtime ships (checked against Colab's package list, 2026-12), beyond what the setup
# cell installs: the modules the package or a notebook may import without listing them as dependencies.
COLAB_SHIPS_2026_12 = {"ipython", "ipywidgets", "psutil", "transformers", "numpy", "pillow", "google-colab"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_dependencies() -> set[str]:
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1)
    return {_normalise(re.match(r"\s*([\w.-]+)", line.strip(' ",')).group(1))
            for line in block.splitlines() if line.strip(' ",')}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level modules imported by the package and by the notebooks' code cells, with where."""
    sources = [(p.name, p.read_text(encoding="utf-8")) for p in (REPO_ROOT / "shared" / "llmscratch").glob("*.py")]
    for path in notebook_paths():
        for cell in load_notebook(path)["cells"]:
            if cell["cell_type"] == "code":
                sources.append((path.name, cell_source(cell)))
    found: dict[str, set[str]] = {}
    for where, source in sources:
        for node in ast.walk(ast.parse(source)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "llmscratch":
                    found.setdefault(top, set()).add(where)
    return found


def test_every_third_party_import_is_installed_on_colab():
    available = _declared_dependencies() | COLAB_SHIPS_2026_12
    distributions = packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "tiktoken", "rouge_score"} <= set(imports)  # the scan sees the package's imports
    for module, where in sorted(imports.items()):
        names = {_normalise(d) for d in distributions.get(module, [module])}
        assert names & available, (f"{module} (imported in {sorted(where)[:3]}) is neither a dependency in "
                                   "pyproject.toml (the Colab setup installs those) nor in Colab's list")


def test_the_repository_address_has_one_source():
    assert REPO_URL == repo_url.repository_url() and REPO_URL.startswith("https://github.com/")
    copies = repo_url.find_copies()
    kinds = {kind for _, kind, _ in copies}
    assert kinds == {"setup cell", "Colab badge", "git clone"}, kinds  # the scan finds every kind of copy
    assert len([c for c in copies if c[1] == "setup cell"]) == len(notebook_paths())
    for path, kind, address in copies:
        assert address == REPO_URL, f"{path.relative_to(REPO_ROOT)}: {kind} points at {address}, not {REPO_URL}"


def test_one_command_rewrites_every_copy(tmp_path):
    for path in [REPO_ROOT / "pyproject.toml", *repo_url.copy_files()]:
        target = tmp_path / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    new = "https://github.com/outra-org/curso-llm"
    changed = repo_url.rewrite(new + ".git", root=tmp_path)
    assert tmp_path / "pyproject.toml" in changed and repo_url.repository_url(tmp_path) == new
    copies = repo_url.find_copies(tmp_path)
    assert copies and {address for _, _, address in copies} == {new}
    with pytest.raises(ValueError, match="GitHub"):
        repo_url.rewrite("http://example.com/x", root=tmp_path)


# --- the setup cell as Colab runs it -------------------------------------------------------------------------

RUN_CELL = textwrap.dedent('''
    import sys, types
    sys.modules["google.colab"] = types.ModuleType("google.colab")  # what makes the setup cell take Colab's path
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    result = shell.run_cell(open(sys.argv[1], encoding="utf-8").read())
    if result.error_in_exec is None:
        checks = open(sys.argv[2], encoding="utf-8").read()
        result = shell.run_cell(checks)
    sys.exit(0 if result.error_in_exec is None else 1)
''')


def _course_served_by_git(tmp_path: Path) -> Path:
    """A bare repository holding the working tree's files (what GitHub would serve)."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    source = tmp_path / "source"
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q"], cwd=source, check=True)
    subprocess.run([*git, "add", "-A"], cwd=source, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "course"], cwd=source, check=True)
    served = tmp_path / "served" / repo_url.github_slug(REPO_URL).split("/")[1]
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(served)], check=True)
    return served


def _colab_python(tmp_path: Path) -> Path:
    """A fresh virtual environment (Colab's interpreter) that sees this environment's packages, as Colab's
    runtime has its own; the setup cell's ``pip install -e`` then installs only the course's package into it."""
    venv = tmp_path / "colab-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "outer.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    return python


def _run_setup_cell(tmp_path, url, checks="") -> subprocess.CompletedProcess:
    content = tmp_path / "content"  # Colab's working folder, empty
    content.mkdir(exist_ok=True)
    cell = tmp_path / "setup_cell.py"
    cell.write_text(SETUP_CELL.replace(f'REPO_URL = "{REPO_URL}"', f'REPO_URL = "{url}"'), encoding="utf-8")
    checks_file = tmp_path / "checks.py"
    checks_file.write_text(checks, encoding="utf-8")
    runner = tmp_path / "run_cell.py"
    runner.write_text(RUN_CELL, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_NO_BUILD_ISOLATION="0", GIT_TERMINAL_PROMPT="0")  # offline, as in CI
    return subprocess.run([str(_colab_python(tmp_path)), str(runner), str(cell), str(checks_file)], cwd=content,
                          env=env, capture_output=True, text=True, timeout=600)


def _chapter_imports() -> str:
    lines = set()
    for path in notebook_paths():
        for cell in load_notebook(path)["cells"]:
            if cell["cell_type"] == "code" and cell is not load_notebook(path)["cells"][1]:
                for node in ast.parse(cell_source(cell)).body:
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        lines.add(ast.unparse(node))
    return "\n".join(sorted(lines))


@pytest.mark.slow
def test_setup_cell_on_colab_clones_installs_and_imports(tmp_path):
    served = _course_served_by_git(tmp_path)
    clone = tmp_path / "content" / served.name
    imports = _chapter_imports()
    assert "from llmscratch.diagrams import show_diagram, show_roadmap" in imports
    checks = textwrap.dedent(f'''
        import llmscratch, pathlib
        assert pathlib.Path(llmscratch.__file__).is_relative_to({str(clone)!r}), llmscratch.__file__
        from importlib.metadata import distribution
        assert "{clone.name}" in distribution("llmscratch").read_text("direct_url.json"), "pip install -e <clone>"
    ''') + imports + "\nprint('every chapter import works')\n"
    result = _run_setup_cell(tmp_path, f"file://{served}", checks)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (clone / "shared" / "llmscratch" / "__init__.py").is_file()
    assert "every chapter import works" in result.stdout


def test_a_failed_clone_says_what_to_do_in_one_sentence(tmp_path):
    result = _run_setup_cell(tmp_path, "file:///nonexistent/llms-do-zero")
    assert result.returncode == 1
    assert "SetupError: não consegui clonar file:///nonexistent/llms-do-zero: confira a internet" in result.stdout
    assert "Traceback" not in result.stdout and "CalledProcessError" not in result.stdout + result.stderr
