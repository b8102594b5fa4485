"""``python -m iped``: the same entry point as the ``iped`` console script."""

from __future__ import annotations

import sys

from iped.cli import main

if __name__ == "__main__":
    sys.exit(main())
