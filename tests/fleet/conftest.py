"""Running the in-tree Ansible collection (ansible/ansible_collections/iped/ipe) from the checkout.

Every ansible process gets a fresh HOME under tmp_path: ansible-test passes only HOME and PATH to
what it runs, its caches live in ~/.ansible, and helpers running side by side must not share them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import (  # the daemon tests' fixtures, shared
    DaemonProc,
    Site,
    daemon,
    dev_keys,
    site,
    start_daemon,
)

__all__ = ["daemon", "dev_keys", "site"]

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "iped" / "ipe"
BIN = Path(sys.executable).parent
IPED = BIN / "iped"


def ansible_env(home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.pop("NOTIFY_SOCKET", None)
    return {**env, "HOME": str(home), "PATH": f"{BIN}:{env.get('PATH', os.defpath)}",
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_REMOTE_TEMP": str(home / "remote-tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "ANSIBLE_PIPELINING": "1", **extra}


def run_ansible(tool: str, *args: str, home: Path, cwd: Path = ROOT, timeout: float = 240,
                **extra: str) -> subprocess.CompletedProcess[str]:
    """Run an ansible-core tool from this venv; fails the test with its output on a non-zero exit."""
    proc = subprocess.run([str(BIN / tool), *args], cwd=cwd, env=ansible_env(home, **extra), capture_output=True,
                          text=True, timeout=timeout, check=False)
    return proc


def require_ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


#: the daemon must not converge on its own (inotify) before the command under test does
SLOW_DEBOUNCE_MS = 60000


@pytest.fixture
def slow_daemon(site: Site) -> Iterator[DaemonProc]:
    site.debounce_ms = SLOW_DEBOUNCE_MS
    site.write_config()
    d = start_daemon(site)
    yield d
    d.stop()
