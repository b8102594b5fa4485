"""Synthetic IPE audit streams for the rollout tests: a permissive period on a made-up host.

The 1420 bodies are written by the emulator (byte-exact kernel format) under the policy that
was active during the period; each event also has a kernel-shaped SYSCALL record and an EOE,
so the stream reads like an auditd log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from iped.audit.records import AUDIT_EOE, AUDIT_IPE_ACCESS, AUDIT_SYSCALL, RawRecord
from iped.rollout import engine
from iped.rollout.policies import starter_policy
from iped.rollout.shadow import Process, syscall_body
from tests.helpers.policies import policy_text

ROOTHASH = "a1" * 32
DIGEST = "b2" * 32
DENIED_DIGEST = "c3" * 32
CAT_DIGEST = "d4" * 32

#: the made-up host: every kind of file IPE can tell apart
FACTS: dict[str, dict[str, object]] = {
    "/init/bin/busybox": {"dev": "rootfs", "ino": 15, "boot_verified": True},
    "/usr/bin/ls": {"dev": "dm-0", "ino": 101, "dmverity_roothash": f"sha256:{ROOTHASH}", "dmverity_signature": True},
    # on the verity volume *and* fs-verity: the volume's one rule beats a per-file digest
    "/usr/bin/cat": {
        "dev": "dm-0",
        "ino": 102,
        "dmverity_roothash": f"sha256:{ROOTHASH}",
        "dmverity_signature": True,
        "fsverity_digest": f"sha256:{CAT_DIGEST}",
    },
    "/usr/lib/modules/fs.ko": {"dev": "dm-0", "ino": 103, "dmverity_roothash": f"sha256:{ROOTHASH}"},
    "/opt/app/run": {"dev": "vda2", "ino": 7, "fsverity_digest": f"sha256:{DIGEST}"},
    "/opt/app/evil": {"dev": "vda2", "ino": 8, "fsverity_digest": f"sha256:{DENIED_DIGEST}"},
    "/home/u/script": {"dev": "vda2", "ino": 9},
}

#: (op, hook, path or None, comm, how many times)
ACCESSES: list[tuple[str, str, str | None, str, int]] = [
    ("EXECUTE", "BPRM_CHECK", "/init/bin/busybox", "init", 2),
    ("EXECUTE", "BPRM_CHECK", "/usr/bin/ls", "bash", 5),
    ("EXECUTE", "BPRM_CHECK", "/usr/bin/cat", "bash", 3),
    ("EXECUTE", "MMAP", "/usr/bin/cat", "cat", 3),
    ("EXECUTE", "BPRM_CHECK", "/opt/app/run", "systemd", 1),
    ("EXECUTE", "BPRM_CHECK", "/opt/app/evil", "bash", 1),
    ("EXECUTE", "BPRM_CHECK", "/home/u/script", "bash", 4),
    ("EXECUTE", "MMAP", None, "java", 2),
    ("KMODULE", "KERNEL_READ", "/usr/lib/modules/fs.ko", "modprobe", 1),
    ("KMODULE", "KERNEL_LOAD", None, "insmod", 1),
]

#: the base policy of the suggestion tests: a DENY rule on purpose, DEFAULTs at the top
BASE = (
    b"""policy_name=site policy_version=1.0.0
# the site's policy
DEFAULT action=ALLOW
DEFAULT op=EXECUTE action=DENY
DEFAULT op=KMODULE action=DENY
op=EXECUTE fsverity_digest=sha256:"""
    + DENIED_DIGEST.encode()
    + b""" action=DENY
"""
)

ALLOW_ALL = policy_text("site", "1.0.0")


def write_facts(directory: Path) -> Path:
    path = directory / "facts.json"
    path.write_text(json.dumps(FACTS))
    return path


@dataclass(frozen=True)
class Period:
    """A permissive period: the log file and how many records it holds."""

    log: Path
    records: int


def write_period(directory: Path, active: bytes | None = None, *, start: int = 1_790_000_000) -> Period:
    """The audit log of a permissive period under ``active`` (default: the starter policy)."""
    from iped.rollout.facts import load_facts

    files = load_facts(str(write_facts(directory))).files
    emu = engine.PolicyEngine(active or starter_policy("site"))
    lines: list[str] = []
    serial = 100
    for op, hook, path, comm, times in ACCESSES:
        for _ in range(times):
            serial += 1
            sec = start + serial
            info = files[path] if path is not None else None
            body = emu.evaluate_body(op, hook, info, engine.Task(1000 + serial, comm))
            syscall = syscall_body(Process(1000 + serial, 1, 0, comm, f"/usr/bin/{comm}")).rsplit(" key=", 1)[0]
            for rtype, text in ((AUDIT_IPE_ACCESS, body), (AUDIT_SYSCALL, syscall), (AUDIT_EOE, "")):
                lines.append(RawRecord(rtype, sec, 0, serial, text).to_log_line())
    log = directory / "audit.log"
    log.write_text("\n".join(lines) + "\n")
    return Period(log, sum(n for *_, n in ACCESSES))
