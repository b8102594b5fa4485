"""From nothing written to an enforced policy, on a real IPE kernel (runs INSIDE the lab VM, as root).

The rollout of docs/rollout.md end to end: in permissive mode (``enforce=0``) with the starter
policy active, three programs run — the initramfs busybox (``boot_verified``), a busybox copy on
an fs-verity file and one on a dm-verity volume built here. The kernel's own 1420 records of that
window, read from the audit netlink group with iped's netlink source, become an auditd log that
``iped survey`` (no-go: exactly those three programs) and ``iped suggest`` (one rule of each kind)
read. The suggestion, signed with the lab's enrolled signer, updates the starter in place; then
``survey`` of the suggestion says go, and with ``enforce=1`` the three programs still run while
an unrelated busybox copy on tmpfs is refused (EACCES).

Enforcing is delicate here: the test's own Python lives on the 9p root, which has no IPE
property, so under the suggestion it could exec nothing and map no new library. The enforcing
window therefore only execs static binaries from a process whose modules are all imported
already, and ``enforce`` is written back to 0 in a ``finally``. At the end an allow-all policy
above every version of this boot is activated, so later guest tests start as after the corpus.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iped.audit.netlink import NetlinkSource
from iped.audit.records import AUDIT_IPE_ACCESS, RawRecord
from tests.lab import GUEST_BUSYBOX, GUEST_OUT, GUEST_TMP, keys
from tests.lab_guest.test_discovery_kernel import version_above_active

IPE = Path("/sys/kernel/security/ipe")

pytestmark = pytest.mark.skipif(not IPE.is_dir() or os.geteuid() != 0, reason="needs root on an IPE kernel")

_names = itertools.count(1)


def _sh(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr[-500:]}"
    return proc.stdout


def _block_name(path: Path) -> str:
    st = path.stat()
    return Path(os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")).name


@dataclass(frozen=True)
class Programs:
    """The three programs of the permissive period, and one that nothing will allow (each a busybox
    named after its ``true`` applet)."""

    initramfs: Path
    fsverity: Path
    dmverity: Path
    unrelated: Path
    fsverity_digest: str  # ALG:HEX as `fsverity measure` prints it
    dmverity_roothash: str  # ALG:HEX from veritysetup format

    @property
    def ran(self) -> tuple[Path, Path, Path]:
        return (self.initramfs, self.fsverity, self.dmverity)


@pytest.fixture(scope="module")
def programs() -> Iterator[Programs]:
    """busybox copies on an fs-verity file, a dm-verity volume and tmpfs (torn down afterwards)."""
    work = Path(tempfile.mkdtemp(prefix="iped-rollout-", dir=GUEST_TMP))
    busybox = Path(GUEST_BUSYBOX)
    undo: list[tuple[str, ...]] = []
    try:
        # fs-verity: ext4 with the verity feature on a loop device
        img = work / "fsv.img"
        with img.open("wb") as fh:
            fh.truncate(16 << 20)
        _sh("mkfs.ext4", "-q", "-b", "4096", "-O", "verity", "-E", "root_owner=0:0", str(img))
        loop = _sh("losetup", "--find", "--show", str(img)).strip()
        undo.append(("losetup", "-d", loop))
        fsv = work / "fsv"
        fsv.mkdir()
        _sh("mount", "-t", "ext4", loop, str(fsv))
        undo.append(("umount", str(fsv)))
        shutil.copy(busybox, fsv / "true")
        os.chmod(fsv / "true", 0o755)
        _sh("fsverity", "enable", str(fsv / "true"))
        digest = _sh("fsverity", "measure", str(fsv / "true")).split()[0]

        # dm-verity: an ext4 image holding a busybox copy, under a verity mapping
        src = work / "dmv-src"
        src.mkdir()
        shutil.copy(busybox, src / "true")
        os.chmod(src / "true", 0o755)
        data, hashes = work / "dmv.img", work / "dmv.hash"
        with data.open("wb") as fh:
            fh.truncate(16 << 20)
        _sh("mkfs.ext4", "-q", "-b", "4096", "-d", str(src), "-E", "root_owner=0:0", str(data))
        m = re.search(r"Root hash:\s+([0-9a-f]+)", _sh("veritysetup", "format", str(data), str(hashes)))
        assert m is not None, "veritysetup format printed no root hash"
        dloop = _sh("losetup", "--find", "--show", "--read-only", str(data)).strip()
        undo.append(("losetup", "-d", dloop))
        hloop = _sh("losetup", "--find", "--show", "--read-only", str(hashes)).strip()
        undo.append(("losetup", "-d", hloop))
        mapping = f"iped-rollout-{os.getpid()}"
        _sh("veritysetup", "open", dloop, mapping, hloop, m.group(1))
        undo.append(("veritysetup", "close", mapping))
        dmv = work / "dmv"
        dmv.mkdir()
        _sh("mount", "-t", "ext4", "-o", "ro", f"/dev/mapper/{mapping}", str(dmv))
        undo.append(("umount", str(dmv)))

        # unrelated: a copy on tmpfs, no IPE property at all
        tmpfs = work / "tmpfs"
        tmpfs.mkdir()
        _sh("mount", "-t", "tmpfs", "iped-rollout", str(tmpfs))
        undo.append(("umount", str(tmpfs)))
        shutil.copy(busybox, tmpfs / "true")
        os.chmod(tmpfs / "true", 0o755)

        yield Programs(busybox, fsv / "true", dmv / "true", tmpfs / "true", digest, f"sha256:{m.group(1)}")
    finally:
        for argv in reversed(undo):
            subprocess.run(argv, capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _runs(path: Path) -> bool:
    """execve() the program: True if the kernel let it run, False if it refused (EACCES)."""
    try:
        proc = subprocess.run([str(path), "true"], capture_output=True, check=False)
    except PermissionError:
        return False
    assert proc.returncode == 0, f"{path} ran but failed: {proc.stderr!r}"
    return True


def _activate(text: bytes, name: str) -> None:
    (IPE / "new_policy").write_bytes(keys.sign_policy(text, keys.RSA_SIGNER))
    (IPE / "policies" / name / "active").write_bytes(b"1")


def _collect(source: NetlinkSource, wanted: set[str], timeout: float = 60.0) -> list[RawRecord]:
    """Every record read until a 1420 record named each ``wanted`` path (plus a short grace,
    for the SYSCALL/EOE records of the same events)."""
    records: list[RawRecord] = []
    missing = set(wanted)
    deadline = time.monotonic() + timeout
    grace: float | None = None
    while time.monotonic() < (grace if grace is not None else deadline):
        select.select([source.fileno()], [], [], 0.2)
        for rec in source.read():
            records.append(rec)
            if rec.type == AUDIT_IPE_ACCESS:
                missing = {p for p in missing if f'path="{p}"' not in rec.body}
        if not missing and grace is None:
            grace = time.monotonic() + 1.0
    assert not missing, f"no 1420 record for {sorted(missing)}; read: {[r.to_log_line() for r in records]}"
    return records


def _iped(*argv: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([sys.executable, "-m", "iped", *argv, "--json"],
                          capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"iped {' '.join(argv)}: exit {proc.returncode}, no JSON:\n"
                             f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}") from None  # fmt: skip
    return proc.returncode, doc, proc.stderr


@pytest.fixture
def restored() -> Iterator[None]:
    """Afterwards (even after a failure): permissive, then an allow-all policy above every version
    of this boot active (later guest tests start as after the corpus), and the switches as found."""
    enforce_before = (IPE / "enforce").read_text().strip()
    success_audit_before = (IPE / "success_audit").read_text().strip()
    try:
        yield
    finally:
        (IPE / "enforce").write_text("0")
        allow_all = f"iped_rollout_end_{os.getpid()}_{next(_names)}"
        text = f"policy_name={allow_all} policy_version={version_above_active()}\nDEFAULT action=ALLOW\n"
        _activate(text.encode(), allow_all)
        (IPE / "success_audit").write_text(success_audit_before)
        (IPE / "enforce").write_text(enforce_before)


@pytest.mark.usefixtures("restored")
def test_permissive_survey_suggest_enforce(programs: Programs) -> None:
    from iped.rollout.policies import starter_policy

    name = f"iped_rollout_{os.getpid()}_{next(_names)}"
    work = Path(GUEST_OUT) / name  # the records, the starter and the suggestion, kept for the host
    work.mkdir()
    ran = {str(p) for p in programs.ran}

    # 1. permissive period under the starter policy, observed on the audit netlink group (earlier
    # guest tests may have left enforce=1 with a policy denying busybox copies by digest)
    (IPE / "enforce").write_text("0")
    (IPE / "success_audit").write_text("0")
    starter = starter_policy(name).replace(b"policy_version=0.0.1", f"policy_version={version_above_active()}".encode())
    (work / "starter.pol").write_bytes(starter)
    with NetlinkSource() as source:
        _activate(starter, name)
        for path in programs.ran:
            assert _runs(path), f"{path} must run in permissive mode"
        records = _collect(source, ran)
    log = work / "permissive.log"
    log.write_text("".join(f"{r.to_log_line()}\n" for r in records))

    # 2. survey of the starter: no-go, exactly the three programs, all EXECUTE by its DEFAULT
    rc, report, err = _iped("survey", "--policy", str(work / "starter.pol"), "--source", str(log))
    assert rc == 1 and report["verdict"] == "no-go", (rc, report, err)
    assert {p["program"] for p in report["by_program"]} == ran, report["by_program"]
    assert [r["rule"] for r in report["by_rule"]] == ["DEFAULT op=EXECUTE action=DENY"], report["by_rule"]
    assert report["unknown"] == [], report["unknown"]

    # 3. suggest from the kernel's own records; the base is the kernel's active policy (the starter)
    rc, suggestion, err = _iped("suggest", "--source", str(log))
    assert rc == 0, (suggestion, err)
    assert suggestion["base"]["name"] == name, suggestion["base"]
    rules = sorted(r["rule"] for r in suggestion["rules"])
    assert rules == sorted([
        "op=EXECUTE boot_verified=TRUE action=ALLOW",
        f"op=EXECUTE dmverity_roothash={programs.dmverity_roothash} action=ALLOW",
        f"op=EXECUTE fsverity_digest={programs.fsverity_digest} action=ALLOW",
    ]), rules  # fmt: skip
    assert suggestion["flagged"] == [] and suggestion["verification"]["unexpected"] == [], suggestion
    text = suggestion["policy"]["text"].encode()
    (work / "suggested.pol").write_text(suggestion["policy"]["text"])

    # 4. survey of the suggestion, before enforcing: go
    rc, report, err = _iped("survey", "--policy", str(work / "suggested.pol"), "--source", str(log))
    assert rc == 0 and report["verdict"] == "go", (rc, report, err)

    # 5. load it (an update in place: one revision higher), then enforce
    (IPE / "policies" / name / "update").write_bytes(keys.sign_policy(text, keys.RSA_SIGNER))
    assert (IPE / "policies" / name / "version").read_text().strip() == suggestion["policy"]["version"]
    assert (IPE / "policies" / name / "active").read_text().strip() == "1"
    outcome: dict[str, bool] = {}
    try:
        (IPE / "enforce").write_text("1")
        for path in (*programs.ran, programs.unrelated):
            outcome[str(path)] = _runs(path)
    finally:
        (IPE / "enforce").write_text("0")
    assert outcome == {**dict.fromkeys(ran, True), str(programs.unrelated): False}, outcome

    # 6. the suggestion can go once something else is active (see `restored` for the rest)
    _activate(f"policy_name={name}_next policy_version={version_above_active()}\nDEFAULT action=ALLOW\n".encode(),
              f"{name}_next")  # fmt: skip
    (IPE / "policies" / name / "delete").write_text("1")
    assert not (IPE / "policies" / name).exists()
    assert _runs(programs.unrelated)
