"""``[boot] initramfs``: the daemon's initramfs copy, the initramfs-tools hook and init-bottom script.

The reconciler runs on the emulator. The hook and the script are the shipped files, run by ``sh``:
the hook with an ``iped`` on PATH that is this checkout (its ``--initramfs-blobs`` decides what
goes in), the script against a securityfs-shaped directory (plain files: what it writes and where
is what is checked; the kernel's answers are the lab's part). docs/boot.md.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iped.config import ConfigError, load_settings
from iped.daemon import runtime
from iped.daemon.initramfs import MAX_BLOB
from iped.daemon.log import NullReporter
from iped.daemon.reconcile import Reconciler
from iped.outcome import Outcome
from tests.helpers.daemon import Site, iped
from tests.helpers.iped_with_hooks import FAULT_ENV, Fault, FaultyEmulatorBackend
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text
from tests.helpers.securityfs import fake_securityfs

HOOK = ROOT / "initramfs-tools" / "hooks" / "iped"
SCRIPT = ROOT / "initramfs-tools" / "scripts" / "init-bottom" / "iped"


def initramfs_site(site: Site, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> Path:
    """``site`` with ``[boot] initramfs`` in ``<root>/initramfs``; returns that directory."""
    monkeypatch.delenv(FAULT_ENV, raising=False)
    copy_dir = site.root / "initramfs"
    copy_dir.mkdir()
    site.extra = f'[boot]\ninitramfs = true\ninitramfs_dir = "initramfs"\nrecord = "boot.json"\n{extra}'
    site.write_config()
    return copy_dir


def reconciler(site: Site) -> Reconciler:
    return runtime.make_reconciler(load_settings(site.config), NullReporter(), None)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("extra", "key", "words"), [
    ("initramfs = true\nkeep_copy = true\n", "boot.initramfs", "ESTALE"),
    ('initramfs_dir = "/etc/ipe"\n', "boot.initramfs_dir", "PID 1 loads"),
    ('initramfs_dir = "/usr/lib/ipe/"\n', "boot.initramfs_dir", "PID 1 loads"),
])
def test_settings_that_would_freeze_pid1_are_refused(tmp_path: Path, extra: str, key: str, words: str) -> None:
    config = tmp_path / "iped.toml"
    config.write_text(f"[boot]\n{extra}")
    with pytest.raises(ConfigError) as e:
        load_settings(config)
    assert [p.key for p in e.value.problems] == [key] and words in str(e.value)
    assert e.value.problems[0].line == 2


# ----------------------------------------------------------------------------- the daemon's copy


def test_the_copy_is_the_blob_the_kernel_holds_active(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = initramfs_site(site, monkeypatch)
    rec = reconciler(site)
    assert rec.reconcile("start").outcome == Outcome.APPLIED
    assert (copy_dir / "base.p7b").read_bytes() == rec.backend.read("policies/base/pkcs7")
    assert rec.initramfs_copy is not None and rec.initramfs_copy.state == "written" and rec.boot_copy is None
    # a new version follows, a leftover goes (the initramfs would activate every blob in turn)
    (copy_dir / "old.p7b").write_bytes(b"stale")
    site.put("base.pol", policy_text("base", "1.0.1"))
    assert rec.reconcile("reload").outcome == Outcome.APPLIED
    assert sorted(os.listdir(copy_dir)) == ["base.p7b"]
    assert b"policy_version=1.0.1" in (copy_dir / "base.p7b").read_bytes()
    mtime = (copy_dir / "base.p7b").stat().st_mtime_ns
    # unchanged: not rewritten, so iped-initramfs.path does not rebuild the initramfs for nothing
    assert rec.reconcile("reload").outcome == Outcome.UNCHANGED and rec.initramfs_copy.state == "current"
    assert (copy_dir / "base.p7b").stat().st_mtime_ns == mtime


def test_a_refused_or_lower_change_never_reaches_the_copy(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = initramfs_site(site, monkeypatch)
    rec = reconciler(site)
    assert rec.reconcile("start").outcome == Outcome.APPLIED
    good = (copy_dir / "base.p7b").read_bytes()
    site.put("base.pol", policy_text("base", "2.0.0"))
    from iped.backend import EmulatorBackend

    assert isinstance(rec.backend, EmulatorBackend)
    refusing = FaultyEmulatorBackend(rec.backend.emulator, "refuses the update", Fault("update", 1, errno.ENOKEY))
    failed = runtime.make_reconciler(load_settings(site.config), NullReporter(), refusing).reconcile("reload")
    assert failed.outcome == Outcome.FAILED
    assert (copy_dir / "base.p7b").read_bytes() == good
    site.put("base.pol", policy_text("base", "0.9.0", "op=KMODULE action=DENY"))
    assert rec.reconcile("reload").outcome == Outcome.REJECTED
    assert (copy_dir / "base.p7b").read_bytes() == good


# ----------------------------------------------------------------------------- the hook


def run_hook(site: Site, ipe: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    """The shipped hook, as update-initramfs runs it, with this checkout as ``iped``."""
    bin_dir = site.root / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "iped"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m iped "$@" --config {site.config} --ipe-root {ipe}\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DESTDIR": str(dest),
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(["sh", str(HOOK)], capture_output=True, text=True, env=env, check=False, timeout=120)


def shipped(dest: Path) -> dict[str, bytes]:
    base = dest / "usr/lib/iped-initramfs"
    return {p.name: p.read_bytes() for p in sorted(base.iterdir())} if base.is_dir() else {}


def test_hook_ships_the_kernels_active_blob(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = initramfs_site(site, monkeypatch)
    blob = b"signed base 1.0.0"
    (copy_dir / "base.p7b").write_bytes(blob)
    (copy_dir / ".base.p7b.77.tmp").write_bytes(b"half")  # a temporary a kill left: never shipped
    ipe = fake_securityfs(site.root, {"base": ("1.0.0", True, blob)})
    done = run_hook(site, ipe, site.root / "dest")
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(blob).hexdigest()
    assert shipped(site.root / "dest") == {"base.p7b": blob, "manifest": f"base {digest}\n".encode()}


@pytest.mark.parametrize("case", ["lower", "refused", "two", "symlink", "group-writable", "too-big"])
def test_hook_refuses_what_is_not_the_active_blob(site: Site, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Anything but exactly the kernel's active blob fails the hook: update-initramfs keeps the
    initramfs it had (never weaker, never lower)."""
    copy_dir = initramfs_site(site, monkeypatch)
    active = b"signed base 1.0.1"
    ipe = fake_securityfs(site.root, {"base": ("1.0.1", True, active)})
    target = copy_dir / "base.p7b"
    if case == "lower":  # an older signed blob put back in the copy's place
        target.write_bytes(b"signed base 1.0.0")
    elif case == "refused":  # never accepted by the kernel: not loaded at all
        target.write_bytes(active)
        (copy_dir / "other.p7b").unlink(missing_ok=True)
        ipe = fake_securityfs(site.root / "k2", {})
    elif case == "two":
        target.write_bytes(active)
        (copy_dir / "zzz.p7b").write_bytes(b"signed zzz")
    elif case == "symlink":
        (site.root / "elsewhere").write_bytes(active)
        target.symlink_to(site.root / "elsewhere")
    elif case == "too-big":  # held active, but over what the script's one write() carries whole
        active = b"s" * (MAX_BLOB + 1)
        ipe = fake_securityfs(site.root / "k3", {"base": ("1.0.1", True, active)})
        target.write_bytes(active)
    else:
        target.write_bytes(active)
        target.chmod(0o664)
    done = run_hook(site, ipe, site.root / "dest")
    assert done.returncode == 1 and "REFUSED" in done.stderr and "not updated" in done.stderr, done.stderr
    assert shipped(site.root / "dest") == {}


def test_hook_ships_nothing_when_off_or_before_the_first_deploy(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    initramfs_site(site, monkeypatch)
    ipe = fake_securityfs(site.root, {})
    done = run_hook(site, ipe, site.root / "dest")
    assert done.returncode == 0 and shipped(site.root / "dest") == {} and "no *.p7b" in done.stderr
    site.extra = ""
    site.write_config()
    done = run_hook(site, ipe, site.root / "dest")
    assert done.returncode == 0 and shipped(site.root / "dest") == {} and "is off" in done.stderr


def test_hook_refuses_an_invalid_config(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking with the defaults would ship nothing: a weaker initramfs."""
    initramfs_site(site, monkeypatch)
    site.config.write_text(site.config.read_text() + "\n[boot]\nnonsense = 1\n")
    done = run_hook(site, fake_securityfs(site.root, {}), site.root / "dest")
    assert done.returncode == 1 and "invalid" in done.stderr


# ----------------------------------------------------------------------------- the init-bottom script


#: an initramfs-tools image without busybox has klibc's sh, cat, dd, mkdir, mount
KLIBC = Path("/usr/lib/klibc/bin")


def run_script(blobs: Path, ipe: Path, record: Path) -> subprocess.CompletedProcess[str]:
    """The script under klibc's sh and tools (packaging/dev.sh installs klibc-utils): what busybox
    or coreutils would accept and klibc not (``dd bs=4M``) fails here as in the initramfs."""
    assert (KLIBC / "dd").is_file(), "klibc-utils is not installed: run packaging/dev.sh setup"
    return subprocess.run([str(KLIBC / "sh"), str(SCRIPT), str(blobs), str(ipe), str(record)], capture_output=True,
                          text=True, check=False, timeout=60, env={"PATH": str(KLIBC)})


def carried(tmp_path: Path, name: str, blob: bytes) -> Path:
    blobs = tmp_path / "usr/lib/iped-initramfs"
    blobs.mkdir(parents=True)
    (blobs / f"{name}.p7b").write_bytes(blob)
    (blobs / "manifest").write_text(f"{name} {hashlib.sha256(blob).hexdigest()}\n")
    return blobs


def test_script_loads_new_then_activates_and_records(tmp_path: Path) -> None:
    blob = b"signed base 1.0.0" * 500  # larger than a pipe or klibc cat buffer: one write
    blobs = carried(tmp_path, "base", blob)
    ipe = tmp_path / "ipe"
    (ipe / "policies").mkdir(parents=True)
    # securityfs creates policies/NAME when new_policy takes a blob; a plain directory cannot, so
    # the script's activation fails here and is recorded as such
    done = run_script(blobs, ipe, tmp_path / "run/iped-initramfs/activated")
    assert done.returncode == 0
    assert (ipe / "new_policy").read_bytes() == blob
    lines = (tmp_path / "run/iped-initramfs/activated").read_text().splitlines()
    assert lines[0] == f"policy base sha256={hashlib.sha256(blob).hexdigest()} load=ok active=failed"
    assert lines[1].startswith("uptime ") and "FAILED to activate IPE policy base" in done.stdout


def test_script_updates_a_loaded_policy(tmp_path: Path) -> None:
    blob = b"signed base 1.0.1"
    blobs = carried(tmp_path, "base", blob)
    ipe = tmp_path / "ipe"
    (ipe / "policies/base").mkdir(parents=True)
    done = run_script(blobs, ipe, tmp_path / "activated")
    assert done.returncode == 0 and "IPE policy base activated in the initramfs" in done.stdout
    assert (ipe / "policies/base/update").read_bytes() == blob and not (ipe / "new_policy").exists()
    assert (ipe / "policies/base/active").read_text() == "1\n"
    assert "load=ok active=ok" in (tmp_path / "activated").read_text()


def test_script_without_ipe_records_it_and_goes_on(tmp_path: Path) -> None:
    blobs = carried(tmp_path, "base", b"x")
    done = run_script(blobs, tmp_path / "no-ipe", tmp_path / "activated")
    assert done.returncode == 0 and "no IPE in this kernel" in done.stdout
    assert (tmp_path / "activated").read_text() == "no-ipe\n"


# ----------------------------------------------------------------------------- the boot record


def initramfs_boot_check(site: Site, ipe: Path, record_text: str) -> dict[str, Any]:
    (site.root / "activated").write_text(record_text)
    (site.root / "cmdline").write_text("quiet\n")
    (site.root / "boot.json").unlink(missing_ok=True)
    done = iped("boot-check", "--config", str(site.config), "--ipe-root", str(ipe), "--cmdline",
                str(site.root / "cmdline"), "--initramfs-record", str(site.root / "activated"))
    assert done.returncode == 0, done.stderr
    record: dict[str, Any] = json.loads((site.root / "boot.json").read_text())
    return record


def test_boot_check_says_the_initramfs_loaded_it(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    copy_dir = initramfs_site(site, monkeypatch)
    blob = b"signed base 1.0.0"
    digest = hashlib.sha256(blob).hexdigest()
    (copy_dir / "base.p7b").write_bytes(blob)
    ipe = fake_securityfs(site.root, {"base": ("1.0.0", True, blob)})
    record = initramfs_boot_check(site, ipe, f"policy base sha256={digest} load=ok active=ok\nuptime 1.5\n")
    assert record["loaded_by"] == "initramfs" and record["in_force"] is True
    assert "before switch_root" in record["reason"]
    assert record["initramfs"] == [{"name": "base", "blob_digest": digest, "load": "ok", "active": "ok"}]
    # a record of another blob, or of a failed activation, is not the initramfs's doing
    for text in ("policy base sha256=00 load=ok active=ok\n", f"policy base sha256={digest} load=ok active=failed\n"):
        record = initramfs_boot_check(site, ipe, text)
        assert record["loaded_by"] == "before-iped", text


def test_status_shows_the_initramfs_copy_and_when_it_is_stale(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from iped.commands.remote import render_status
    from iped.daemon import service

    copy_dir = initramfs_site(site, monkeypatch)
    rec = reconciler(site)
    assert rec.reconcile("start").outcome == Outcome.APPLIED
    status = service.status(rec)
    assert status["boot"]["initramfs"]["current"] is True and status["boot"]["notes"] == []
    text = render_status(status)
    assert f"initramfs copy: on  {copy_dir}: base sha256:" in text and "  current" in text, text
    (copy_dir / "base.p7b").write_bytes(b"an older blob")
    status = service.status(rec)
    assert status["boot"]["initramfs"]["current"] is False
    assert any("initramfs copy" in n and "not the kernel's active blob" in n for n in status["boot"]["notes"])
    assert "NOT the active blob" in render_status(status)
