"""Running the in-tree Ansible collection (ansible/ansible_collections/iped/ipe) from the checkout.

Every ansible process gets a fresh HOME under tmp_path: ansible-test passes only HOME and PATH to
what it runs, its caches live in ~/.ansible, and helpers running side by side must not share them.
The one exception is ``ansible-test sanity``'s virtualenvs and pip bootstrap (``sanity_home``): they
persist in the lab cache, so only the first run on a machine installs anything.
"""

from __future__ import annotations

import fcntl
import os
import shutil
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
from tests.lab import cache_dir

__all__ = ["daemon", "dev_keys", "site"]

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "iped" / "ipe"
BIN = Path(sys.executable).parent
IPED = BIN / "iped"
#: the Python ansible-test runs the collection's tests with (``--python``)
ANSIBLE_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: get-pip.py's stand-in (see its docstring)
GET_PIP = Path(__file__).with_name("get_pip_from_wheel.py")


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


#: ansible-test's own answer to "which pip does a sanity virtualenv get" (python_requirements.get_venv_packages)
PIP_VERSION_OF_ANSIBLE_TEST = (
    "import sys\n"
    "from ansible_test._internal.host_configs import NativePythonConfig\n"
    "from ansible_test._internal.python_requirements import get_venv_packages\n"
    "print(get_venv_packages(NativePythonConfig(version=sys.argv[1]))['pip'])\n"
)


def seed_pip_bootstrap(cache: Path) -> Path:
    """Put ansible-test's pip bootstrap where it looks before downloading it: ``get_pip_<X_Y>.py``.

    The stand-in installs pip from its wheel, which comes from PyPI through pip's configured index
    (the only network this needs); ci-files.testing.ansible.com is never asked.
    """
    cache.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([sys.executable, "-c", PIP_VERSION_OF_ANSIBLE_TEST, ANSIBLE_PYTHON],
                             capture_output=True, text=True, check=True, timeout=1800).stdout.strip()
    if not (cache / f"pip-{version}-py3-none-any.whl").is_file():
        require_ok(subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                                   "--dest", str(cache), f"pip=={version}"],
                                  capture_output=True, text=True, timeout=300, check=False))
    script = cache / f"get_pip_{version.replace('.', '_')}.py"
    shutil.copyfile(GET_PIP, script)
    return script


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
