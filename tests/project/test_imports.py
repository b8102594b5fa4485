"""Cheap paths stay cheap: the CLI and ``iped status``/``--help`` import no heavy module."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pydantic", "cryptography", "asn1crypto", "iped.emulator", "systemd", "pyudev", "iped.pkcs7")

PROBE = """
import json, sys
{setup}
heavy = {heavy!r}
print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))))
"""


def heavy_modules_after(setup: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    code = PROBE.format(setup=setup, heavy=heavy)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_import_cli_is_light() -> None:
    assert heavy_modules_after("import iped.cli") == []


@pytest.mark.parametrize(
    "argv",
    [["status", "--help"], ["--help"], ["--version"], ["status"], ["daemon", "--help"], ["audit", "--help"]],
    ids=" ".join,
)
def test_cheap_invocations_import_nothing_heavy(argv: list[str]) -> None:
    # stdout is redirected inside the probe so help text does not hide the module list.
    setup = (
        "import contextlib, io\n"
        "from iped.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    main({argv!r})\n"
    )
    assert heavy_modules_after(setup) == []


def test_validate_help_does_not_import_crypto() -> None:
    setup = (
        "import contextlib, io\n"
        "from iped.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['validate', '--help'])\n"
        "    main(['sign', '--help'])\n"
    )
    assert [m for m in heavy_modules_after(setup) if m != "iped.pkcs7"] == []


def test_validate_does_load_what_it_needs(tmp_path: object) -> None:
    # The probe is not vacuous: a real validate run does import the parser.
    setup = (
        "import contextlib, io\n"
        "from iped.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    main(['validate', '/dev/null'])\n"
    )
    assert "iped.emulator.policy_parser" in heavy_modules_after(setup)


def test_status_sets_up_no_logging_and_imports_no_shutil() -> None:
    """``iped status`` (daemon there or not) pays for neither logging nor argparse's shutil (and
    the bz2/lzma it pulls): together they were most of its start-up beyond Python's own."""
    setup = (
        "import contextlib, io\n"
        "from iped.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    main(['status', '--socket', '/nonexistent/iped.sock'])\n"
        "    main(['status', '--json', '--socket', '/nonexistent/iped.sock'])\n"
    )
    assert heavy_modules_after(setup, ("logging", "shutil", "lzma", "bz2")) == []
