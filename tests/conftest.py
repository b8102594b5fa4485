"""The suite's fixtures: a signing key, a site in tmp_path, and a real daemon process on it.

The code behind them is tests/helpers/daemon.py; a test imports from there, never from a conftest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iped.daemon.devkey import ensure_dev_key
from tests.helpers.daemon import SLOW_DEBOUNCE_MS, Daemon, DaemonProc, Site, make_site, spawn_daemon, start_daemon


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_dev_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def site(tmp_path: Path, dev_keys: tuple[Path, Path]) -> Site:
    return make_site(tmp_path, dev_keys)


@pytest.fixture
def daemon(site: Site) -> Iterator[DaemonProc]:
    d = start_daemon(site)
    yield d
    d.stop()


@pytest.fixture
def quiet_daemon(site: Site) -> Iterator[DaemonProc]:
    """A daemon whose file events wait a minute: only explicit reloads act, so each exit code
    (0 applied, 9 unchanged) is exact instead of racing the debounced inotify reconcile."""
    site.debounce_ms = SLOW_DEBOUNCE_MS
    site.write_config()
    d = start_daemon(site)
    yield d
    d.stop()


@pytest.fixture
def abused(site: Site) -> Iterator[Daemon]:
    """A daemon with its log in a file, for the tests that abuse it (SIGCONT before it stops)."""
    d = spawn_daemon(site)
    yield d
    d.stop()
