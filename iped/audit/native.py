"""The C helpers of the ``_scan`` extension, or None: ``_scan.c`` (block scanner, 1420 parser) and
``_netlink.c`` (netlink reader, grouper).

The one place that tries the optional import: a checkout run without ``pip install`` has no
compiled ``_scan`` and every caller falls back to its Python path. Callers bind the name
(``from iped.audit.native import _scan``) so that a test can set their copy to None.
"""

from __future__ import annotations

from typing import Final

__all__ = ["BUILT", "_scan"]  # callers bind _scan

try:
    from iped.audit import _scan
except ImportError:  # a checkout run without `pip install`: the Python paths alone
    _scan = None  # type: ignore[assignment]

#: the C module is built (``pip install`` compiles it; a bare checkout has only the Python paths)
BUILT: Final = _scan is not None
