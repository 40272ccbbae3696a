"""Imported first by every benchmark: time this clone's package (``shared/llmscratch``), installed or not.

Offline, the data files and tiktoken's vocabulary come from ``LLMSCRATCH_DATA_MIRROR`` and ``TIKTOKEN_CACHE_DIR``
(as in ``.ci/run``); where they are unset and the course material sits next to the clone (``../shared``, the
layout ``.ci/run`` expects), it is used.
"""

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT / "shared"  # the package's source root (not the course material in ../shared)
if (SHARED / "llmscratch").is_dir() and str(SHARED) not in sys.path:
    sys.path.insert(0, str(SHARED))
for _var, _sub in (("LLMSCRATCH_DATA_MIRROR", "data"), ("TIKTOKEN_CACHE_DIR", "tiktoken_cache")):
    if not os.environ.get(_var) and (REPO_ROOT.parent / "shared" / _sub).is_dir():
        os.environ[_var] = str(REPO_ROOT.parent / "shared" / _sub)
