"""Fixtures of the fleet suite: a fresh HOME per ansible process, and ansible-test's persistent
sanity virtualenvs (the code that runs ansible is tests/helpers/ansible.py)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.ansible import seed_pip_bootstrap
from tests.lab import cache_dir


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def sanity_home(home: Path) -> Iterator[Path]:
    """A fresh HOME whose ``~/.ansible/test/{cache,venv}`` are the persistent ``<lab cache>/ansible-test/``.

    ansible-test keys each sanity virtualenv by a hash of its pinned requirements, so a cached one is
    reused exactly when nothing changed. A lock keeps two suites from building the same one at once.
    """
    persistent = cache_dir() / "ansible-test"
    persistent.mkdir(exist_ok=True)
    with (persistent / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        seed_pip_bootstrap(persistent / "cache")
        (home / ".ansible" / "test").mkdir(parents=True)
        for name in ("cache", "venv"):
            (persistent / name).mkdir(exist_ok=True)
            (home / ".ansible" / "test" / name).symlink_to(persistent / name)
        yield home
