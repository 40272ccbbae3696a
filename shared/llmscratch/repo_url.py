"""The course's repository address: one source (``[project.urls]`` in pyproject.toml) and the copies of it.

The address must also live, as text, where the package is not importable yet: the setup cell of every notebook
(which clones the course on Colab), each notebook's Colab badge and the READMEs. ``find_copies`` lists them, a
test fails when one differs from pyproject.toml, and when the course is published under another address

    python -m llmscratch.repo_url https://github.com/OWNER/NAME

rewrites pyproject.toml and every copy at once. Introduced with the course's setup (README, "Publicar").
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
GITHUB_URL = re.compile(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")
# Where copies live, and how each kind of copy is recognised (group 1 is the address or the OWNER/NAME slug).
COPY_PATTERNS = {
    "setup cell": re.compile(r'REPO_URL = \\?"(https://github\.com/[\w.-]+/[\w.-]+)\\?"'),
    "Colab badge": re.compile(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/"),
    "git clone": re.compile(r"git clone (https://github\.com/[\w.-]+/[\w.-]+?)(?:\.git)?(?=[\s`]|$)", re.M),
}


def _pyproject(root: Path) -> Path:
    return root / "pyproject.toml"


def repository_url(root: Path = REPO_ROOT) -> str:
    """The course's address, as ``[project.urls] Repository`` in pyproject.toml says."""
    text = _pyproject(root).read_text(encoding="utf-8")
    section = re.search(r"^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    match = section and re.search(r'^Repository\s*=\s*"([^"]+)"', section.group(1), re.M)
    if not match:
        raise ValueError(f"{_pyproject(root)} has no [project.urls] Repository = \"...\" line")
    return match.group(1)


def github_slug(url: str) -> str:
    """``OWNER/NAME`` of a GitHub address (what Colab's badge links need)."""
    match = GITHUB_URL.match(url)
    if not match:
        raise ValueError(f"not a GitHub repository address: {url!r} (expected https://github.com/OWNER/NAME)")
    return f"{match.group(1)}/{match.group(2)}"


def copy_files(root: Path = REPO_ROOT) -> list[Path]:
    """The files that may hold a copy of the address: notebooks and READMEs."""
    return sorted([*root.glob("ch0*/*.ipynb"), *root.glob("*.md"), *root.glob("ch0*/*.md")])


def find_copies(root: Path = REPO_ROOT) -> list[tuple[Path, str, str]]:
    """Every copy of the address: ``(file, kind, address)``, the address normalised to ``https://github.com/...``."""
    copies = []
    for path in copy_files(root):
        text = path.read_text(encoding="utf-8")
        for kind, pattern in COPY_PATTERNS.items():
            for match in pattern.finditer(text):
                found = match.group(1)
                copies.append((path, kind, found if found.startswith("https://") else f"https://github.com/{found}"))
    return copies


def rewrite(new_url: str, root: Path = REPO_ROOT) -> list[Path]:
    """Point pyproject.toml and every copy at ``new_url``; returns the files changed."""
    old_url = repository_url(root)
    old_slug, new_slug = github_slug(old_url), github_slug(new_url)
    new_url = f"https://github.com/{new_slug}"
    changed = []
    for path in [_pyproject(root), *copy_files(root)]:
        text = path.read_text(encoding="utf-8")
        updated = text.replace(old_url, new_url).replace(f"github/{old_slug}/blob/", f"github/{new_slug}/blob/")
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m llmscratch.repo_url https://github.com/OWNER/NAME", file=sys.stderr)
        return 2
    try:
        changed = rewrite(argv[0])
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"rewrote {path.relative_to(REPO_ROOT)}")
    print(f"the course's address is now {repository_url()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
