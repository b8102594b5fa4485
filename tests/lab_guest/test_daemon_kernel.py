"""The daemon against a real IPE kernel (runs INSIDE the lab VM, as root, kernel backend).

The lab's rsa-signer (enrolled in the UEFI db -> .platform keyring) is the daemon's trust anchor
and local signing key, so the daemon signs ``*.pol`` files the kernel accepts. Policy names are
unique to this run; versions use major 65500, above everything the corpus and the other guest
tests activate, because the kernel never activates a lower version. Every policy keeps
``DEFAULT action=ALLOW`` (the 9p root is not boot_verified: the test's own Python must run), and
whatever was loaded before the test is protected from the daemon's pruning.
Each step is read back from securityfs, not from the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.daemon import request, wait_for
from tests.helpers.paths import ROOT

IPE = Path("/sys/kernel/security/ipe")
KEYS = ROOT / "tests" / "lab" / "keys"
MAJOR = 65500

pytestmark = pytest.mark.skipif(not IPE.is_dir() or os.geteuid() != 0, reason="needs root on an IPE kernel")


def sysfs(*parts: str) -> str:
    return (IPE.joinpath(*parts)).read_text()


def kernel_active() -> tuple[str, str] | None:
    """The (name, version) of the policy the kernel has active, read from securityfs."""
    for d in (IPE / "policies").iterdir():
        if (d / "active").read_text() == "1":
            return (d / "name").read_text(), (d / "version").read_text()
    return None


def policy(name: str, version: str, *rules: str) -> str:
    return "\n".join([f"policy_name={name} policy_version={version}", "DEFAULT action=ALLOW", *rules, ""])


@dataclass
class Lab:
    root: Path
    a: str
    b: str
    protect: list[str]
    proc: subprocess.Popen[str] | None = None
    anchors: list[Path] = field(default_factory=list)  # trusted by iped besides the lab's rsa-signer

    @property
    def pols(self) -> Path:
        return self.root / "policies.d"

    @property
    def sock(self) -> Path:
        return self.root / "control.sock"

    def private_key(self) -> Path:
        """The lab's RSA signing key as the daemon takes a key: mode 0600 (the checkout's copy is
        0644, which iped refuses everywhere: iped.trustpath.read_private_key)."""
        key = self.root / "rsa-signer.key"
        if not key.exists():
            key.write_bytes((KEYS / "rsa-signer.key").read_bytes())
            key.chmod(0o600)
        return key

    def config(self, active: str, enforce: bool = True) -> None:
        (self.root / "iped.toml").write_text(
            "[policies]\n"
            'dir = "policies.d"\n'
            f'active = "{active}"\n'
            f"enforce = {str(enforce).lower()}\n"
            f"trust_anchors = {json.dumps([str(KEYS / 'rsa-signer.crt'), *map(str, self.anchors)])}\n"
            f'signing_key = "{self.private_key()}"\n'
            f'signing_cert = "{KEYS / "rsa-signer.crt"}"\n'
            f"protect = {json.dumps(self.protect)}\n"
            "[daemon]\n"
            'backend = "kernel"\n'
            'state_dir = "state"\n'
            'control_socket = "control.sock"\n'
            'control_group = ""\n'
            "debounce_ms = 60000\n"  # only explicit reloads act: each step is deterministic
            "[audit]\n"
            'source = "none"\n'
        )

    def reload(self) -> tuple[int, dict[str, object]]:
        r = subprocess.run([sys.executable, "-m", "iped", "reload", "--socket", str(self.sock), "--json"],
                           capture_output=True, text=True, cwd=ROOT, check=False, timeout=120)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {"stderr": r.stderr}


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = f"{os.getpid()}"
    root = Path(tempfile.mkdtemp(prefix="iped-daemon-lab-"))
    lab = Lab(root, f"iped_daemon_a_{tag}", f"iped_daemon_b_{tag}", sorted(os.listdir(IPE / "policies")))
    lab.pols.mkdir()
    (lab.pols / "a.pol").write_text(policy(lab.a, f"{MAJOR}.0.0"))
    lab.config(lab.a)
    lab.proc = subprocess.Popen([sys.executable, "-m", "iped", "daemon", "--config", str(root / "iped.toml")],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: lab.sock.exists() and request(lab.sock, "ping")["ok"], timeout=60, what="daemon")
        yield lab
    finally:
        before_stop = sysfs("enforce"), kernel_active()
        lab.proc.send_signal(signal.SIGTERM)
        assert lab.proc.wait(30) == 0
        # stopping never weakens enforcement: enforce and the active policy stay as they were
        assert (sysfs("enforce"), kernel_active()) == before_stop


def test_daemon_drives_real_securityfs(lab: Lab) -> None:
    a, b = lab.a, lab.b
    # startup: loaded, signed by the enrolled key, active
    st = request(lab.sock, "status")["result"]
    assert st["backend"]["kind"] == "kernel", st["backend"]
    assert sysfs("policies", a, "version") == f"{MAJOR}.0.0"
    assert sysfs("policies", a, "active") == "1"
    assert st["ready"] is True

    # nothing to do
    assert lab.reload()[0] == 9

    # update in place (strictly higher version)
    (lab.pols / "a.pol").write_text(policy(a, f"{MAJOR}.1.0", "op=KMODULE boot_verified=FALSE action=ALLOW"))
    rc, rec = lab.reload()
    assert rc == 0, rec
    assert sysfs("policies", a, "version") == f"{MAJOR}.1.0" and sysfs("policies", a, "active") == "1"
    assert b"op=KMODULE" in (IPE / "policies" / a / "policy").read_bytes()

    # anti-rollback: refused by the planner, kernel untouched ...
    (lab.pols / "a.pol").write_text(policy(a, f"{MAJOR}.0.5", "op=FIRMWARE action=ALLOW"))
    rc, rec = lab.reload()
    assert rc == 1 and rec["errors"][0]["errno_name"] == "ESTALE", rec  # type: ignore[index]
    assert sysfs("policies", a, "version") == f"{MAJOR}.1.0"
    # ... and the kernel agrees with the planner (update with a lower version -> ESTALE)
    from tests.lab import keys

    blob = keys.sign_policy(policy(a, f"{MAJOR}.0.5").encode(), keys.RSA_SIGNER)
    with pytest.raises(OSError) as ei:
        fd = os.open(IPE / "policies" / a / "update", os.O_WRONLY)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
    assert ei.value.errno == 116  # ESTALE

    # switch the active policy to b (equal version is allowed), a is deleted after the switch
    (lab.pols / "a.pol").unlink()
    (lab.pols / "b.pol").write_text(policy(b, f"{MAJOR}.1.0"))
    lab.config(b)
    rc, rec = lab.reload()
    assert rc == 0, rec
    assert sysfs("policies", b, "active") == "1"
    assert not (IPE / "policies" / a).exists()

    # activating a lower version is refused up front
    (lab.pols / "c.pol").write_text(policy(f"{b}_low", f"{MAJOR}.0.0"))
    lab.config(f"{b}_low")
    rc, rec = lab.reload()
    assert rc == 1 and rec["errors"][0]["errno_name"] == "EINVAL", rec  # type: ignore[index]
    assert sysfs("policies", b, "active") == "1"
    (lab.pols / "c.pol").unlink()

    # enforce switch: off last, on first
    lab.config(b, enforce=False)
    rc, rec = lab.reload()
    assert rc == 0 and sysfs("enforce") == "0", rec
    lab.config(b, enforce=True)
    rc, rec = lab.reload()
    assert rc == 0 and sysfs("enforce") == "1", rec

    # roll a version, then roll back = roll forward with the previous content
    (lab.pols / "b.pol").write_text(policy(b, f"{MAJOR}.2.0", "op=KEXEC_IMAGE action=ALLOW"))
    assert lab.reload()[0] == 0
    assert sysfs("policies", b, "version") == f"{MAJOR}.2.0"
    r = subprocess.run([sys.executable, "-m", "iped", "rollback", "--socket", str(lab.sock), "--json"],
                       capture_output=True, text=True, cwd=ROOT, check=False, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sysfs("policies", b, "version") == f"{MAJOR}.2.1" and sysfs("policies", b, "active") == "1"
    assert b"KEXEC_IMAGE" not in (IPE / "policies" / b / "policy").read_bytes()
    assert lab.reload()[0] == 9  # declared state and kernel agree after the rollback
