"""``python -m llmscratch``: see :mod:`llmscratch.cli` (``--help`` lists the commands)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
