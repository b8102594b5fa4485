"""The daemon's start imports only what its configuration needs (issue 15: start -> READY on the
boot path, RSS after start). Pinned by the modules a fresh interpreter holds, not by timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.policies import policy_text

#: what an emulator daemon without signing material, started outside systemd, must not load
#: (pyudev is the loop's dm monitor, which every backend keeps)
NOT_NEEDED = ("pydantic", "pydantic_core", "cryptography", "asn1crypto", "systemd.journal")

START = """
import json, sys
from iped.daemon import runtime
from iped.daemon.log import make_reporter
from iped.daemon.loop import Daemon
from iped.daemon.notify import Notifier
settings = runtime.load_for_command(sys.argv[1])
rec = runtime.make_reconciler(settings, make_reporter())
daemon = Daemon(rec, Notifier({}), rec.reporter)
daemon.setup()  # what Daemon.run() does up to READY=1: setup, then the startup reconcile
record = daemon.reload("startup", record_unchanged=True)
print(json.dumps({"outcome": record.outcome, "backend": rec.backend.kind, "ready": daemon.ready,
                  "modules": sorted(sys.modules)}))
daemon.stop()
"""


def start(tmp_path: Path, config: str) -> dict[str, object]:
    """``iped daemon``'s way to READY=1 (settings, reconciler, loop setup, the startup reconcile),
    in a fresh interpreter: which modules it loaded."""
    (tmp_path / "p").mkdir(exist_ok=True)
    (tmp_path / "p" / "base.pol").write_bytes(policy_text("base"))
    (tmp_path / "iped.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")}
    out = subprocess.run([sys.executable, "-c", START, str(tmp_path / "iped.toml")], env=env, check=True,
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def loaded(modules: object, name: str) -> bool:
    assert isinstance(modules, list)
    return any(m == name or m.startswith(name + ".") for m in modules)


EMULATOR = ('[policies]\ndir = "p"\nactive = "base"\n'
            '[daemon]\nbackend = "emulator"\nstate_dir = "s"\ncontrol_socket = "c.sock"\n[audit]\nsource = "none"\n')


def test_emulator_start_without_signing_loads_no_heavy_module(tmp_path: Path) -> None:
    got = start(tmp_path, EMULATOR)
    assert got["backend"] == "emulator"
    assert got["outcome"] == "rejected"  # base.pol is plain text and there is no key to sign it with
    assert got["ready"] is False  # the declared active policy refused at start: exit 78, as on a kernel
    assert [m for m in NOT_NEEDED if loaded(got["modules"], m)] == []
    assert not loaded(got["modules"], "iped.audit")  # [audit] source = none


def test_an_invalid_config_still_gets_pydantic_and_its_errors(tmp_path: Path) -> None:
    """The fast path declines, pydantic words the error: the discipline above costs no message."""
    (tmp_path / "iped.toml").write_text(EMULATOR.replace('state_dir = "s"', "state_dir = 5"))
    out = subprocess.run([sys.executable, "-m", "iped", "daemon", "--config", str(tmp_path / "iped.toml")],
                         capture_output=True, text=True, cwd=tmp_path, check=False, timeout=120)
    assert out.returncode != 0
    assert f"{tmp_path / 'iped.toml'}:6: daemon.state_dir: Input is not a valid path" in out.stderr
