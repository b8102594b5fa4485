"""Cheap paths stay cheap: the CLI and ``iped status``/``--help`` import no heavy module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parents[1] / "helpers" / "iped_with_hooks.py"
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


#: what the daemon must not have imported when it sends READY=1 in the production shape (signed
#: .p7s files the kernel already holds, a plainly valid iped.toml, not under systemd): each is
#: loaded on first use -- a blob the kernel does not hold, a control request, a record to explain;
#: pyudev (the dm monitor) right after READY=1
DAEMON_START_NOT_BEFORE_READY = (
    "pyudev", "pydantic", "cryptography", "asn1crypto", "iped.pkcs7", "iped.forked", "systemd",
    "iped.rollout", "iped.audit.explain", "iped.audit.render", "iped.daemon.rollback", "iped.daemon.devkey",
    "iped.daemon.status_text", "iped.commands.output", "iped.commands.remote", "iped.didyoumean",
    "email", "http", "urllib.request", "decimal", "asyncio", "concurrent", "multiprocessing",
    "logging",  # the daemon reports through its own reporter (iped.commands.daemon.LOGS)
)  # fmt: skip

#: runs the daemon through the tests' entry point; at READY=1 prints its modules and exits
READY_PROBE = """
import json, os, runpy, sys
import iped.daemon.notify as notify
def ready(self, status):
    print(json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)
notify.Notifier.ready = ready
sys.argv = [{hooks!r}, "daemon", "--config", {config!r}]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def modules_at_ready(config: Path, journal: Path) -> list[str]:
    from tests.helpers.iped_with_hooks import STATE_ENV

    # without pytest-cov's subprocess hook: coverage's own imports (decimal, multiprocessing) are
    # not the daemon's, and CI runs the suite under --cov
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")
           and not k.startswith(("COV_CORE_", "COVERAGE_"))}  # fmt: skip
    env[STATE_ENV] = str(journal)
    code = READY_PROBE.format(hooks=str(HOOKS), config=str(config))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120,
                          cwd=config.parent, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_daemon_start_imports_nothing_not_needed_before_ready(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    """The production shape's start (docs/daemon.md): the kernel holds the declared blobs, so the
    daemon compares bytes and verifies nothing; what it needs later is imported later."""
    from iped.pkcs7 import sign_policy

    key, cert = dev_keys
    (tmp_path / "policies.d").mkdir()
    text = b"policy_name=allow_all policy_version=0.0.1\nDEFAULT action=ALLOW\n"
    (tmp_path / "policies.d" / "allow_all.p7s").write_bytes(sign_policy(text, key.read_bytes(), cert.read_bytes()))
    config = tmp_path / "iped.toml"
    config.write_text(
        f'[policies]\ndir = "policies.d"\nactive = "allow_all"\ntrust_anchors = ["{cert}"]\n'
        '[daemon]\nbackend = "emulator"\nstate_dir = "state"\ncontrol_socket = "ctl.sock"\n')
    journal = tmp_path / "emulator.journal"
    first = modules_at_ready(config, journal)  # the first boot: the kernel verifies and takes the blob
    assert "iped.pkcs7" in first  # the probe is not vacuous: a blob it does not hold is verified
    held = modules_at_ready(config, journal)  # a restart: the kernel holds exactly these bytes
    banned = DAEMON_START_NOT_BEFORE_READY
    assert [m for m in held if any(m == b or m.startswith(b + ".") for b in banned)] == []
    assert "iped.daemon.loop" in held and "iped.emulator" in held


def test_udev_monitor_module_leaves_the_emulator_out() -> None:
    # the daemon imports iped.discovery for its dm monitor (after READY), on a kernel backend too
    assert heavy_modules_after("import iped.discovery", ("iped.emulator.types", "iped.emulator.ipe")) == []
