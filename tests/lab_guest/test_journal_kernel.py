"""``iped audit --source journal`` against a real IPE kernel (runs INSIDE the lab VM, as root).

The guest has no systemd as PID 1, so systemd-journald runs as a plain process: it joins the
kernel's audit multicast group and stores each record as an entry with ``_TRANSPORT=audit``,
exactly as on a host (journald-audit.c), in the runtime journal under /run/log/journal.
``Audit=yes`` keeps auditing on (journald's default, ``Audit=no``, would switch it off for
the other tests of this boot). Then a denied exec must come out of ``iped audit --source
journal`` with its rule and policy line, and a second run with the same ``--state-dir`` must
resume after it: no duplicates, and the next denial exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import GUEST_BUSYBOX, GUEST_TMP

from .test_audit_kernel import _sign, deny_initramfs_policy
from .test_discovery_kernel import version_above_active

IPE = Path("/sys/kernel/security/ipe")
JOURNALD = Path("/lib/systemd/systemd-journald")
RUNTIME_JOURNAL = Path("/run/log/journal")

pytestmark = pytest.mark.skipif(not IPE.is_dir() or os.geteuid() != 0, reason="needs root on an IPE kernel")


@pytest.fixture(scope="module")
def journald() -> Iterator[None]:
    assert JOURNALD.exists(), "systemd-journald is not installed on the host (package systemd)"
    cgroup = Path("/sys/fs/cgroup")
    if not (cgroup / "cgroup.controllers").exists():  # journald needs its cgroup
        subprocess.run(["mount", "-t", "cgroup2", "none", str(cgroup)], check=True)
    conf = Path("/run/systemd/journald.conf.d")
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "iped-lab.conf").write_text("[Journal]\nStorage=volatile\nAudit=yes\n")
    proc = subprocess.Popen([str(JOURNALD)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list(RUNTIME_JOURNAL.glob("*/system.journal")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            assert proc.stderr is not None
            pytest.fail(f"systemd-journald did not start: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def _activate_deny_busybox() -> Path:
    """A policy denying only what runs from the initramfs, active at a version above the rest."""
    name = f"iped_journal_{os.getpid()}"
    text = deny_initramfs_policy(name, version_above_active())
    policy_file = Path(GUEST_TMP) / f"{name}.pol"
    policy_file.write_bytes(text)
    (IPE / "new_policy").write_bytes(_sign(text))
    (IPE / "policies" / name / "active").write_bytes(b"1")
    return policy_file


def _denied_exec() -> None:
    with pytest.raises(PermissionError):  # the child's failed execve (EACCES)
        subprocess.run([GUEST_BUSYBOX, "true"], check=False)


def _audit(state: Path, policy: Path, since: float) -> list[dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, "-m", "iped", "audit", "--source", "journal", "--json", "--denials",
         "--since", str(since), "--state-dir", str(state), "--policy", str(policy)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "audit source: journal" in r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def _busybox(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == "access" and (o["path"] or "").endswith("/bin/busybox")]


def test_denial_from_the_journal_with_rule_line_and_cursor(journald: None) -> None:
    state = Path(GUEST_TMP) / f"journal-state-{os.getpid()}"
    policy = _activate_deny_busybox()
    since = time.time() - 1
    _denied_exec()

    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not found and time.monotonic() < deadline:  # (journald stores the entry a moment later)
        found = _busybox(_audit(state, policy, since))
        if not found:
            time.sleep(0.5)
    assert len(found) == 1, found
    obj = found[0]
    assert (obj["decision"], obj["blocked"], obj["op"], obj["hook"]) == ("DENY", True, "EXECUTE", "BPRM_CHECK")
    assert obj["rule"] == "op=EXECUTE boot_verified=TRUE action=DENY"
    assert obj["policy"] == {"file": str(policy), "line": 4, "kind": "rule"}
    assert (state / "audit-journal.cursor").read_text().startswith("s=")

    # a restart resumes after what was handled: the denial is not shown again ...
    assert _busybox(_audit(state, policy, since)) == []
    # ... and the next one is shown once
    _denied_exec()
    again: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not again and time.monotonic() < deadline:
        again = _busybox(_audit(state, policy, since))
        if not again:
            time.sleep(0.5)
    assert len(again) == 1 and again[0]["serial"] > obj["serial"], again
