"""ansible-test's get-pip.py, without its download: installs pip from the wheel lying beside this file.

ansible-test bootstraps pip into each empty sanity virtualenv by running
``~/.ansible/test/cache/get_pip_<X_Y>.py`` (fetched from ci-files.testing.ansible.com when absent) with
``pip==X.Y --no-setuptools --no-wheel``. ``tests/fleet/conftest.py`` copies this script there under
that name and puts ``pip-X.Y-py3-none-any.whl`` (from PyPI, through pip's configured index) beside it.
A pip wheel runs from a zip on ``sys.path``, so it installs itself: no network, and the same
``pip install`` options the real script passes.
"""

from __future__ import annotations

import sys
from pathlib import Path

PREFIX = "get_pip_"
#: the real get-pip.py's own options: setuptools and wheel are never installed here anyway
OWN_OPTIONS = ("--no-setuptools", "--no-wheel")


def wheel_beside(script: Path) -> Path:
    if not script.stem.startswith(PREFIX):
        raise SystemExit(f"{script}: named {script.name}; ansible-test runs it as {PREFIX}<X_Y>.py")
    version = script.stem.removeprefix(PREFIX).replace("_", ".")
    wheel = script.with_name(f"pip-{version}-py3-none-any.whl")
    if not wheel.is_file():
        raise SystemExit(f"{wheel}: missing; the bootstrap installs pip {version} from this wheel")
    return wheel


def main() -> int:
    wheel = wheel_beside(Path(__file__).resolve())
    sys.path.insert(0, str(wheel))
    from pip._internal.cli.main import main as pip_main  # importable only once the wheel is on sys.path

    args = [arg for arg in sys.argv[1:] if arg not in OWN_OPTIONS]
    return pip_main(["install", "--upgrade", "--force-reinstall", "--no-index", "--find-links", str(wheel.parent),
                     *args])


if __name__ == "__main__":
    sys.exit(main())
