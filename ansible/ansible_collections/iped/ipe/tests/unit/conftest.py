"""ansible-test units runs ``pytest -n auto``; without pytest-xdist (not a dependency of iped's
test extra) accept ``-n`` and run serially: these tests take well under a second."""

from __future__ import annotations

import importlib.util


def pytest_addoption(parser):
    if importlib.util.find_spec("xdist") is None:
        # _addoption: short lowercase options are reserved for pytest's own plugins, as xdist's is
        parser.getgroup("xdist")._addoption("-n", dest="numprocesses", default=None,
                                            help="ignored: pytest-xdist is not installed")
