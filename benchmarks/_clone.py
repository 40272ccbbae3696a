"""Imported first by every benchmark: time this clone's package (``shared/llmscratch``), installed or not."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT / "shared"  # the package's source root (not the course material in ../shared)
if (SHARED / "llmscratch").is_dir() and str(SHARED) not in sys.path:
    sys.path.insert(0, str(SHARED))
