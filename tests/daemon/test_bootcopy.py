"""Boot: the boot copy PID 1 loads (``[boot] keep_copy``), ``iped boot-check`` and its record, fail-closed.

The reconciler runs on the emulator (the same surface as securityfs); ``iped boot-check`` runs as
a real process against a securityfs-shaped directory tree (its backend reads plain files exactly
as it reads securityfs). docs/boot.md.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from iped.backend import EmulatorBackend
from iped.config import load_settings
from iped.daemon import runtime, service
from iped.daemon.bootcopy import sync
from iped.daemon.log import NullReporter
from iped.daemon.reconcile import Reconciler
from iped.outcome import Outcome
from tests.helpers.daemon import Site, iped
from tests.helpers.iped_with_hooks import FAULT_ENV, Fault, FaultyEmulatorBackend
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text
from tests.helpers.securityfs import fake_securityfs


def boot_site(site: Site, monkeypatch: pytest.MonkeyPatch, *, copy: bool = True, record: bool = False) -> Path:
    """``site`` with ``[boot] keep_copy`` in ``<root>/ipe``; returns that directory."""
    monkeypatch.delenv(FAULT_ENV, raising=False)
    copy_dir = site.root / "ipe"
    copy_dir.mkdir()
    site.extra = (f"[boot]\nkeep_copy = {str(copy).lower()}\ncopy_dir = \"ipe\"\n"
                  + ('record = "boot.json"\n' if record else ""))
    site.write_config()
    return copy_dir


def reconciler(site: Site, backend: EmulatorBackend | None = None) -> Reconciler:
    return runtime.make_reconciler(load_settings(site.config), NullReporter(), backend)


def kernel_blob(rec: Reconciler, name: str) -> bytes:
    return rec.backend.read(f"policies/{name}/pkcs7")


def test_boot_copy_is_the_blob_the_kernel_holds_active(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = boot_site(site, monkeypatch)
    rec = reconciler(site)
    assert rec.reconcile("start").outcome == Outcome.APPLIED
    target = copy_dir / "base.p7b"
    assert target.read_bytes() == kernel_blob(rec, "base")
    assert target.stat().st_mode & 0o777 == 0o644
    assert rec.boot_copy is not None and rec.boot_copy.state == "written"
    # a new version follows; another *.p7b (PID 1 would load and activate it too) and a temporary a
    # SIGKILL left behind go
    (copy_dir / "zzz.p7b").write_bytes(b"stale")
    (copy_dir / ".base.p7b.4242.tmp").write_bytes(b"half")
    site.put("base.pol", policy_text("base", "1.0.1"))
    assert rec.reconcile("reload").outcome == Outcome.APPLIED
    assert sorted(os.listdir(copy_dir)) == ["base.p7b"]
    assert target.read_bytes() == kernel_blob(rec, "base")
    assert b"policy_version=1.0.1" in target.read_bytes()
    assert rec.reconcile("reload").outcome == Outcome.UNCHANGED and rec.boot_copy.state == "current"


def test_boot_copy_is_off_by_default(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = boot_site(site, monkeypatch, copy=False)
    rec = reconciler(site)
    assert rec.reconcile("start").outcome == Outcome.APPLIED
    assert os.listdir(copy_dir) == [] and rec.boot_copy is None


def test_a_change_the_kernel_refuses_never_reaches_the_boot_copy(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = boot_site(site, monkeypatch)
    rec = reconciler(site)
    assert rec.reconcile("start").outcome == Outcome.APPLIED
    good = (copy_dir / "base.p7b").read_bytes()
    site.put("base.pol", policy_text("base", "2.0.0"))
    assert isinstance(rec.backend, EmulatorBackend)
    refusing = FaultyEmulatorBackend(rec.backend.emulator, "refuses the update", Fault("update", 1, errno.ENOKEY))
    failed = reconciler(site, refusing).reconcile("reload")
    assert failed.outcome == Outcome.FAILED and failed.failure is not None and failed.failure.errno == errno.ENOKEY
    assert (copy_dir / "base.p7b").read_bytes() == good
    # rejected before any write (anti-rollback): the copy stays too
    site.put("base.pol", policy_text("base", "0.9.0", "op=KMODULE action=DENY"))
    assert rec.reconcile("reload").outcome == Outcome.REJECTED
    assert (copy_dir / "base.p7b").read_bytes() == good


def test_boot_copy_waits_while_the_declared_policy_is_not_active(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = boot_site(site, monkeypatch)
    rec = reconciler(site)
    assert rec.reconcile("start").outcome == Outcome.APPLIED
    from iped.daemon.actual import read_actual

    result = sync(rec.backend, read_actual(rec.backend), "other", copy_dir)
    assert result.state == "waiting" and "'other' is not active" in result.message
    assert sorted(os.listdir(copy_dir)) == ["base.p7b"]


WRITER = """
import sys
from iped.fsutil import write_atomically
target, a, b = sys.argv[1], bytes([65]) * (1 << 22), bytes([66]) * (1 << 22)
print("go", flush=True)
while True:
    write_atomically(target, a, 0o644, sync_dir=True, exact_mode=True)
    write_atomically(target, b, 0o644, sync_dir=True, exact_mode=True)
"""


def test_sigkill_while_writing_the_boot_copy_leaves_old_or_new(tmp_path: Path) -> None:
    """PID 1 at the next boot reads either blob whole, never part of one; the temporary a kill
    leaves does not end in .p7b (PID 1 never loads it) and the next sync removes it."""
    target = tmp_path / "base.p7b"
    target.write_bytes(b"A" * (1 << 22))
    seen = set()
    for round_ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
        time.sleep(0.05 + 0.037 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        data = target.read_bytes()
        assert data in (b"A" * (1 << 22), b"B" * (1 << 22)), f"round {round_}: a partial blob of {len(data)} bytes"
        seen.add(data[:1])
        assert [p.name for p in tmp_path.glob("*.p7b")] == ["base.p7b"]
    from iped.daemon.bootcopy import _others

    assert all(p.name.endswith(".tmp") for p in _others(tmp_path, target))


# ----------------------------------------------------------------------------- boot-check


def boot_check(site: Site, ipe: Path, cmdline: str = "quiet") -> tuple[subprocess.CompletedProcess[str], Any]:
    (site.root / "cmdline").write_text(cmdline + "\n")
    done = iped("boot-check", "--config", str(site.config), "--ipe-root", str(ipe), "--cmdline",
                str(site.root / "cmdline"))
    record_path = site.root / "boot.json"
    return done, json.loads(record_path.read_text()) if record_path.exists() else {}


def test_boot_check_records_the_policy_pid1_loaded(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = boot_site(site, monkeypatch, record=True)
    (copy_dir / "base.p7b").write_bytes(b"signed base 1.0.0")
    ipe = fake_securityfs(site.root, {"base": ("1.0.0", True, b"signed base 1.0.0")})
    done, record = boot_check(site, ipe)
    assert done.returncode == 0, done.stderr
    assert record["loaded_by"] == "pid1" and record["loaded_from"] == str(copy_dir / "base.p7b")
    assert record["in_force"] is True and record["kernel"]["active"]["version"] == "1.0.0"
    assert "in force at boot" in done.stderr


@pytest.mark.parametrize("case", [
    (False, "quiet", True, 0),                  # off: reported, the boot goes on
    (True, "quiet", True, 1),                   # on: the unit fails (the drop-in halts)
    (False, "quiet iped.fail_closed=1", True, 1),  # the command line turns it on
    (True, "quiet", False, 0),                  # enforce = false: reported, never halts
])
def test_boot_check_fails_closed_only_when_asked(site: Site, monkeypatch: pytest.MonkeyPatch,
                                                 case: tuple[bool, str, bool, int]) -> None:
    fail_closed, cmdline, enforce, rc = case
    boot_site(site, monkeypatch, record=True)  # the boot copy was removed: PID 1 loaded nothing
    site.enforce = enforce
    site.extra += f"fail_closed = {str(fail_closed).lower()}\n"
    site.write_config()
    ipe = fake_securityfs(site.root, {})
    done, record = boot_check(site, ipe, cmdline)
    assert done.returncode == rc, done.stderr
    assert record["in_force"] is False and record["kernel"]["active"] is None
    assert "'base' was NOT active before iped.service" in done.stderr
    assert ("FAIL-CLOSED" in done.stderr) is (rc == 1)
    if not enforce:
        assert "enforce = false" in done.stderr


def test_an_older_blob_put_back_in_the_boot_copy_is_not_in_force(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """PID 1 loaded the declared policy, but at a lower version than iped last wrote to the boot
    copy (an older signed blob put back): not in force, and fail-closed stops the boot."""
    copy_dir = boot_site(site, monkeypatch, record=True)
    site.extra += "fail_closed = true\n"
    site.write_config()
    rec = reconciler(site)
    site.put("base.pol", policy_text("base", "1.0.1"))
    assert rec.reconcile("start").outcome == Outcome.APPLIED
    deployed = json.loads((site.state / "boot-copy.json").read_text())
    assert (deployed["name"], deployed["version"]) == ("base", "1.0.1")
    assert rec.boot_copy is not None and deployed["blob_digest"] == rec.boot_copy.blob_digest
    (copy_dir / "base.p7b").write_bytes(b"old signed base")
    ipe = fake_securityfs(site.root, {"base": ("1.0.0", True, b"old signed base")})
    done, record = boot_check(site, ipe)
    assert done.returncode == 1, done.stderr
    assert record["in_force"] is False and "LOWER than 1.0.1" in record["reason"]


def test_boot_check_keeps_the_first_record_of_a_boot(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """iped-boot.service started again later in the boot (an upgrade restarts iped, which pulls it
    in) must not replace what was in force at boot with what iped has loaded since."""
    copy_dir = boot_site(site, monkeypatch, record=True)
    ipe = fake_securityfs(site.root, {})
    done, first = boot_check(site, ipe)
    assert done.returncode == 0 and first["in_force"] is False
    (copy_dir / "base.p7b").write_bytes(b"signed base 1.0.0")
    later = fake_securityfs(site.root / "later", {"base": ("1.0.0", True, b"signed base 1.0.0")})
    done, again = boot_check(site, later)
    assert done.returncode == 0 and "recorded at this boot already" in done.stderr
    assert again == first


def test_boot_check_with_a_broken_config_never_halts(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    boot_site(site, monkeypatch)
    site.config.write_text("[policies\n")
    ipe = fake_securityfs(site.root, {})
    done, _ = boot_check(site, ipe)
    assert done.returncode == 0 and "invalid, checking with the defaults" in done.stderr


# ----------------------------------------------------------------------------- iped after PID 1


def pid1_loads(rec: Reconciler, blob: bytes, name: str) -> None:
    """What systemd 257's ipe_setup() does with <name>.p7b: new_policy, then active (ipe-setup.c)."""
    rec.backend.write("new_policy", blob)
    rec.backend.write(f"policies/{name}/active", b"1")


def test_iped_after_pid1_loaded_the_declared_policy_has_nothing_to_do(site: Site,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = boot_site(site, monkeypatch, record=True)
    first = reconciler(site)
    assert first.reconcile("start").outcome == Outcome.APPLIED
    blob = (copy_dir / "base.p7b").read_bytes()
    # the next boot: a fresh kernel, PID 1 loads the boot copy, then iped starts
    rebooted = reconciler(site)
    pid1_loads(rebooted, blob, "base")
    record = rebooted.reconcile("start")
    assert (record.outcome, record.steps) == (Outcome.UNCHANGED, ())
    assert rebooted.boot_copy is not None and rebooted.boot_copy.state == "current"


def test_a_different_policy_loaded_by_pid1_is_named_in_the_plan(site: Site, monkeypatch: pytest.MonkeyPatch,
                                                                 dev_keys: tuple[Path, Path]) -> None:
    copy_dir = boot_site(site, monkeypatch, record=True)
    from iped.pkcs7 import sign_policy

    other = sign_policy(policy_text("other", "1.0.0"), dev_keys[0].read_bytes(), dev_keys[1].read_bytes())
    (copy_dir / "other.p7b").write_bytes(other)
    rec = reconciler(site)
    pid1_loads(rec, other, "other")
    ipe_tree = fake_securityfs(site.root, {"other": ("1.0.0", True, other)})
    done, _ = boot_check(site, ipe_tree)
    assert done.returncode == 0
    doc = service.plan(rec).as_dict()
    assert doc["schema_version"] == 2 and doc["boot"]["record"]["loaded_by"] == "pid1"
    assert any("other 1.0.0 (PID 1 loaded it from" in n and "not the declared 'base'" in n
               for n in doc["boot"]["notes"]), doc["boot"]
    assert [s["description"].split()[0] for s in doc["steps"]] == ["load", "activate", "delete"]
    status = service.status(rec)
    assert status["boot"]["summary"].startswith("FAILED: declared policy 'base' was NOT active")
    assert status["boot"]["copy"]["current"] is False


# ----------------------------------------------------------------------------- the units


SYSTEMD = ROOT / "systemd"


@pytest.mark.parametrize("unit", ["iped.service", "iped-boot.service"])
def test_units_exposure_at_most_1_5(unit: str) -> None:
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(SYSTEMD / unit)],
                       capture_output=True, text=True, check=False, timeout=120)
    level = [ln for ln in (r.stdout + r.stderr).splitlines() if "Overall exposure level" in ln]
    assert level, r.stdout + r.stderr
    assert float(level[0].split(":")[1].split()[0]) <= 1.5, level[0]


def test_boot_unit_with_the_fail_closed_drop_in_verifies(tmp_path: Path) -> None:
    """Both units and the drop-in as installed: systemd-analyze verify accepts them, iped.service
    pulls iped-boot in ahead of itself and may write the boot copy, the drop-in halts on failure."""
    root = tmp_path / "root"
    system = root / "etc/systemd/system"
    (system / "iped-boot.service.d").mkdir(parents=True)
    for unit in ("iped.service", "iped-boot.service"):
        (system / unit).write_bytes((SYSTEMD / unit).read_bytes())
    (system / "iped-boot.service.d/fail-closed.conf").write_bytes((SYSTEMD / "fail-closed.conf").read_bytes())
    (root / "usr/bin").mkdir(parents=True)
    shim = root / "usr/bin/iped"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m iped \"$@\"\n")
    shim.chmod(0o755)
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", "iped-boot.service", "iped.service"],
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    main = (SYSTEMD / "iped.service").read_text().splitlines()
    assert "Wants=iped-boot.service" in main and "ReadWritePaths=-/etc/ipe" in main
    assert any(ln.startswith("After=") and "iped-boot.service" in ln for ln in main)
    assert "FailureAction=halt" in (SYSTEMD / "fail-closed.conf").read_text().splitlines()
    assert "FailureAction" not in (SYSTEMD / "iped-boot.service").read_text()


def test_status_says_what_pid1_loaded_and_whether_the_copy_is_current(site: Site,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from iped.commands.remote import render_status

    copy_dir = boot_site(site, monkeypatch, record=True)
    first = reconciler(site)
    assert first.reconcile("start").outcome == Outcome.APPLIED
    rebooted = reconciler(site)
    pid1_loads(rebooted, (copy_dir / "base.p7b").read_bytes(), "base")
    ipe = fake_securityfs(site.root, {"base": ("1.0.0", True, (copy_dir / "base.p7b").read_bytes())})
    assert boot_check(site, ipe)[0].returncode == 0
    assert rebooted.reconcile("start").outcome == Outcome.UNCHANGED
    text = render_status(service.status(rebooted))
    assert f"boot:           in force: declared policy 'base' in force at boot (base 1.0.0), loaded by PID 1 from " \
           f"{copy_dir / 'base.p7b'}" in text, text
    assert f"boot copy:      on  {copy_dir}: base sha256:" in text and "  current  fail_closed: off" in text, text
