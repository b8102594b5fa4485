"""Running the in-tree Ansible collection (ansible/ansible_collections/iped/ipe) from the checkout.

Every ansible process gets a fresh HOME under tmp_path: ansible-test passes only HOME and PATH to
what it runs, its caches live in ~/.ansible, and helpers running side by side must not share them.
The one exception is ``ansible-test sanity``'s virtualenvs and pip bootstrap (``sanity_home``): they
persist in the lab cache, so only the first run on a machine installs anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT, TESTS

COLLECTIONS = ROOT / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "iped" / "ipe"
BIN = Path(sys.executable).parent
IPED = BIN / "iped"
#: the Python ansible-test runs the collection's tests with (``--python``)
ANSIBLE_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: get-pip.py's stand-in (see its docstring)
GET_PIP = TESTS / "fleet" / "get_pip_from_wheel.py"


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


#: the default set of ansible-core 2.19 for a collection: a test dropped from (or added to) ansible-test's
#: default set shows here first. docs/fleet.md lists the same set.
SANITY_TESTS = (
    "action-plugin-docs", "ansible-doc", "changelog", "compile", "empty-init", "ignores", "import", "line-endings",
    "no-assert", "no-get-exception", "no-illegal-filenames", "no-smart-quotes", "pep8", "pslint", "pylint",
    "replace-urlopen", "runtime-metadata", "shebang", "shellcheck", "symlinks", "use-argspec-type-path",
    "use-compat-six", "validate-modules", "yamllint",
)
