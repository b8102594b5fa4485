"""``iped audit --follow --json`` against a real IPE kernel (runs INSIDE the lab VM, as root).

A policy that denies only ``boot_verified=TRUE`` execs (with ``DEFAULT action=ALLOW``, so the
test's own Python keeps running) is signed with the lab's enrolled test key, loaded and
activated at a very high version; then the initramfs busybox is exec'd and must be denied,
and the denial must appear on ``iped audit``'s stdout with the right rule and policy line.
A deliberately broken load must appear with its errno explained on kernels that audit
failed loads (6.16+), and must not appear on 6.12 (which audits successes only).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import GUEST_BUSYBOX, GUEST_TMP, keys

IPE = Path("/sys/kernel/security/ipe")

pytestmark = pytest.mark.skipif(not IPE.is_dir() or os.geteuid() != 0, reason="needs root on an IPE kernel")


def _kernel() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()))


def _sign(text: bytes) -> bytes:
    return keys.sign_policy(text, keys.RSA_SIGNER)


def deny_initramfs_policy(name: str, version: str) -> bytes:
    """DEFAULT allow (so the test's own Python keeps running), deny only what runs from the
    initramfs; the DENY rule is on line 4."""
    return (
        f"policy_name={name} policy_version={version}\n"
        "DEFAULT action=ALLOW\n"
        "# deny only what runs from the initramfs\n"
        "op=EXECUTE boot_verified=TRUE action=DENY\n"
    ).encode()


_activations = itertools.count(1)


@pytest.fixture
def follower() -> Iterator[tuple[subprocess.Popen[str], Path]]:
    # Each activation needs a fresh name and a version above every earlier one in this boot.
    n = next(_activations)
    name = f"iped_audit_{os.getpid()}_{n}"
    text = deny_initramfs_policy(name, f"65000.{n}.0")
    policy_file = Path(GUEST_TMP) / f"{name}.pol"
    policy_file.write_bytes(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "iped", "audit", "--follow", "--json", "--source", "netlink",
         "--policy", str(policy_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    assert "audit source: netlink" in proc.stderr.readline()
    (IPE / "new_policy").write_bytes(_sign(text))
    (IPE / "policies" / name / "active").write_bytes(b"1")
    try:
        yield proc, policy_file
    finally:
        proc.terminate()
        proc.wait(10)


_pending: dict[int, bytes] = {}


def _read_until(proc: subprocess.Popen[str], want: Any, timeout: float = 90.0) -> dict[str, Any]:
    """The first JSON event ``want`` accepts; on failure, say what the follower did emit.

    Reads the pipe's fd directly: select() on the fd plus a buffered readline() would leave
    lines of one burst in Python's buffer while select() waits for bytes that never come.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        buf = _pending.get(fd, b"")
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            _pending[fd] = buf
            seen.append(line.decode())
            obj: dict[str, Any] = json.loads(line)
            if want(obj):
                return obj
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        _pending[fd] = buf + chunk
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    raise AssertionError(
        "expected audit event did not appear; the follower emitted:\n"
        + "\n".join(seen[-20:])
        + "\nand on stderr:\n"
        + err[-2000:]
    )


def test_denied_exec_is_followed_with_rule_and_line(follower: tuple[subprocess.Popen[str], Path]) -> None:
    proc, policy_file = follower
    with pytest.raises(PermissionError):  # subprocess re-raises the child's failed execve (EACCES)
        subprocess.run([GUEST_BUSYBOX, "true"], check=False)
    obj = _read_until(proc, lambda o: o["kind"] == "access" and o["path"] and o["path"].endswith("/bin/busybox"))
    assert (obj["decision"], obj["blocked"], obj["op"], obj["hook"]) == ("DENY", True, "EXECUTE", "BPRM_CHECK")
    assert obj["rule"] == "op=EXECUTE boot_verified=TRUE action=DENY"
    assert obj["policy"] == {"file": str(policy_file), "line": 4, "kind": "rule"}
    assert obj["process"] is not None and obj["schema_version"] == 1


def test_failed_load_audited_by_version(follower: tuple[subprocess.Popen[str], Path]) -> None:
    proc, _ = follower
    bad = _sign(b"policy_name=iped_audit_bad policy_version=1.0\nDEFAULT action=ALLOW\n")
    with pytest.raises(OSError) as exc:
        (IPE / "new_policy").write_bytes(bad)
    assert exc.value.errno == 74  # EBADMSG: incomplete version
    if _kernel() >= (6, 16):
        obj = _read_until(proc, lambda o: o["kind"] == "policy_load" and o["result"] == "failed")
        assert (obj["errno"], obj["errno_name"]) == (74, "EBADMSG")
        assert obj["explanation"].startswith("policy load/update failed: EBADMSG (invalid policy")
    else:
        # 6.12 audits successful loads only. A later successful load must come before any
        # policy_load event of the failed one: no event for the failed load, and the follower is
        # still alive and following (a dead follower would emit nothing at all). Loads by earlier
        # tests may still be in the follower's backlog: they name other policies.
        marker = f"iped_audit_marker_{os.getpid()}"
        (IPE / "new_policy").write_bytes(_sign(f"policy_name={marker} policy_version=0.0.1\n"
                                               "DEFAULT action=ALLOW\n".encode()))
        try:
            names = (marker, "iped_audit_bad")
            obj = _read_until(proc, lambda o: o["kind"] == "policy_load" and o["policy_name"] in names)
            assert (obj["result"], obj["policy_name"]) == ("loaded", marker), obj
            assert proc.poll() is None
        finally:
            (IPE / "policies" / marker / "delete").write_bytes(b"1")
