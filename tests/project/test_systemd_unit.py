"""The shipped unit: systemd-analyze verify passes, exposure stays <= 2.0, and the daemon's code
runs under MemoryDenyWriteExecute (checked with the kernel's own W^X switch, PR_SET_MDWE)."""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text

UNIT = ROOT / "systemd" / "iped.service"



@pytest.fixture
def analyze() -> str:
    """systemd-analyze: packaging/dev.sh installs it (systemd, a dependency of systemd-journal-remote),
    so its absence is a broken set-up, never a reason to skip."""
    path = shutil.which("systemd-analyze")
    assert path is not None, "systemd-analyze is not installed: run packaging/dev.sh setup (Debian package systemd)"
    return path


def unit_root(tmp_path: Path) -> Path:
    """A throw-away root with the unit and an executable /usr/bin/iped, so verify can check ExecStart."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/iped.service")
    shim = root / "usr/bin/iped"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m iped \"$@\"\n")
    shim.chmod(0o755)
    return root


def test_unit_verifies(tmp_path: Path, analyze: str) -> None:
    root = unit_root(tmp_path)
    r = subprocess.run([analyze, "verify", f"--root={root}", "iped.service"],
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode == 0, r.stderr
    # and the check is real: without the binary it fails
    (root / "usr/bin/iped").unlink()
    r = subprocess.run([analyze, "verify", f"--root={root}", "iped.service"],
                       capture_output=True, text=True, check=False, timeout=120)
    assert r.returncode != 0 and "/usr/bin/iped" in r.stderr


def test_security_exposure_at_most_2(analyze: str) -> None:
    r = subprocess.run([analyze, "security", "--offline=yes", str(UNIT)],
                       capture_output=True, text=True, check=False, timeout=120)
    m = re.search(r"Overall exposure level for iped\.service: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0


def test_unit_contract() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "ExecReload=/usr/bin/iped reload --unchanged-ok", "ProtectSystem=strict",
                 "ReadWritePaths=-/sys/kernel/security/ipe", "StateDirectory=iped", "RuntimeDirectory=iped",
                 "CapabilityBoundingSet=CAP_MAC_ADMIN CAP_AUDIT_READ", "RestrictAddressFamilies=AF_UNIX AF_NETLINK",
                 "NoNewPrivileges=yes", "MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service"):
        assert line in text.splitlines(), line
    assert not any(line.startswith(("PrivateNetwork=", "ExecStop=")) for line in text.splitlines())


def test_docs_hardening_list_names_the_units_writable_paths() -> None:
    """docs/daemon.md's hardening paragraph names exactly the unit's ReadWritePaths= (it listed
    /etc/iped/policies.d, which the unit never had: rollback writes the state dir)."""
    unit_paths = {p for line in UNIT.read_text().splitlines() if line.startswith("ReadWritePaths=")
                  for p in line.split("=", 1)[1].split()}
    doc = (ROOT / "docs" / "daemon.md").read_text()
    paragraph = doc[doc.index("Hardening: "):].split("\n\n", 1)[0]
    doc_paths = set(re.findall(r"`(?:ReadWritePaths=)?(-?/[^`\s]+)`", paragraph))
    assert unit_paths == {"-/sys/kernel/security/ipe", "-/etc/ipe", "-/etc/iped/initramfs"} and \
        doc_paths == unit_paths, (doc_paths, unit_paths)


def test_daemon_code_runs_without_writable_executable_memory(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    """PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN) is what MemoryDenyWriteExecute= asks of the kernel."""
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "a.pol").write_bytes(policy_text("a", "1.0.0"))
    cfg = tmp_path / "iped.toml"
    cfg.write_text(f'[policies]\ndir = "p"\nactive = "a"\nsigning_key = "{dev_keys[0]}"\n'
                   f'signing_cert = "{dev_keys[1]}"\n[daemon]\nbackend = "emulator"\nstate_dir = "s"\n')
    code = textwrap.dedent(f"""
        import ctypes, mmap, sys
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(65, 1, 0, 0, 0) != 0:
            print("PRCTL-FAILED", ctypes.get_errno()); sys.exit(0)
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            print("MDWE-NOT-ENFORCED"); sys.exit(1)
        except OSError:
            pass
        import pyudev, inotify_simple
        mon = pyudev.Monitor.from_netlink(pyudev.Context(), source="udev")
        from iped.cli import main
        sys.exit(main(["apply", "--once", "--config", "{cfg}"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT, timeout=120)
    if r.stdout.startswith("PRCTL-FAILED"):
        err = int(r.stdout.split()[1])
        if err == errno.EINVAL:  # the only errno of a kernel that does not know PR_SET_MDWE
            pytest.skip("kernel without PR_SET_MDWE (< 6.3): EINVAL")
        pytest.fail(f"prctl(PR_SET_MDWE) failed: {errno.errorcode.get(err, err)}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "applied" in r.stdout
