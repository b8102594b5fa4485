"""The daemon's failure paths against a real IPE kernel (runs INSIDE the lab VM, as root).

Three promises, each where the real kernel can break it:

* a kernel error mid-plan is exit 4 with the previous active policy kept: the kernel refuses a
  load iped accepts, a policy signed by a fresh self-signed certificate that iped's
  ``trust_anchors`` hold but no kernel keyring does (ENOKEY);
* READY=1 only once the declared policy is active: with that policy declared active the daemon
  must send no READY=1, its STATUS= must say why (the load's ENOKEY, the file), and the start
  must fail at once (exit 78, which the unit does not restart on);
* stopping never weakens enforcement: after SIGTERM and after SIGKILL of the daemon, ``enforce``
  is still 1 and the same policy, same version, is active.

Policies get names unique to this run and versions above whatever this boot has active (the
kernel never activates a lower one); each keeps ``DEFAULT action=ALLOW`` (the test's own Python
runs from the 9p root), and what was loaded before is protected from the daemon's pruning.
Every kernel fact is read from securityfs, not from the daemon.
"""

from __future__ import annotations

import datetime
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from iped.daemon.readiness import EXIT_START_REFUSED
from iped.pkcs7 import sign_policy
from tests.helpers.daemon import notifications, request, wait_for
from tests.helpers.paths import ROOT

from .test_daemon_kernel import IPE, Lab, kernel_active, policy, sysfs
from .test_discovery_kernel import version_above_active


def fresh_signer(directory: Path) -> tuple[Path, Path]:
    """A new RSA key and self-signed code-signing certificate: enrolled in no keyring."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from iped.daemon.devkey import self_signed_cert

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iped guest test: trusted by iped, not the kernel")])
    now = datetime.datetime.now(datetime.UTC)
    cert = self_signed_cert(key, name, now - datetime.timedelta(days=1), now + datetime.timedelta(days=1),
                            code_signing=True)
    key_path, cert_path = directory / "fresh-signer.key", directory / "fresh-signer.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


_labs = itertools.count(1)


@pytest.fixture
def lab() -> Lab:
    """``a``: the good policy (signed by the daemon with the enrolled key); ``b``: the refused one,
    pre-signed ``.p7s`` by :func:`fresh_signer`, whose certificate is one of iped's anchors."""
    tag = f"{os.getpid()}_{next(_labs)}"
    root = Path(tempfile.mkdtemp(prefix="iped-daemon-failures-"))
    lab = Lab(root, f"iped_good_{tag}", f"iped_refused_{tag}", sorted(os.listdir(IPE / "policies")))
    lab.pols.mkdir()
    version = version_above_active()
    (lab.pols / "a.pol").write_text(policy(lab.a, version))
    key, cert = fresh_signer(root)
    lab.anchors.append(cert)
    (root / "refused.p7s").write_bytes(sign_policy(policy(lab.b, version).encode(), key.read_bytes(),
                                                   cert.read_bytes()))
    return lab


@contextmanager
def daemon(lab: Lab, notify_socket: Path | None = None) -> Iterator[subprocess.Popen[str]]:
    """``iped daemon`` on lab's config, answering pings; stopped with SIGTERM unless already gone."""
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    if notify_socket is not None:
        env["NOTIFY_SOCKET"] = os.fspath(notify_socket)
    with open(lab.root / "daemon.log", "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "iped", "daemon", "--config", str(lab.root / "iped.toml")],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    lab.proc = proc

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {(lab.root / 'daemon.log').read_text()}")
        return bool(lab.sock.exists() and request(lab.sock, "ping")["ok"])

    try:
        wait_for(up, timeout=60, what="daemon")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_kernel_refused_load_is_exit_4_and_keeps_the_active_policy(lab: Lab) -> None:
    lab.config(lab.a)
    with daemon(lab):
        good = kernel_active()
        assert good is not None and good[0] == lab.a, good
        assert sysfs("enforce") == "1"
        # iped verifies the .p7s against its anchors and accepts it; only the kernel refuses it
        (lab.root / "refused.p7s").rename(lab.pols / "refused.p7s")
        lab.config(lab.b)
        rc, rec = lab.reload()
        assert rc == 4, rec
        failure = rec["failure"]
        assert isinstance(failure, dict), rec
        assert failure["errno_name"] == "ENOKEY" and failure["step"]["kind"] == "load", failure
        assert failure["step"]["name"] == lab.b
        assert rec["done"] == 0, "a step before the refused load ran"
        # the kernel: nothing of the refused policy, the good one still active, enforce still on
        assert not (IPE / "policies" / lab.b).exists()
        assert kernel_active() == good and sysfs("enforce") == "1"
        st = request(lab.sock, "status")["result"]
        assert st["active"]["name"] == lab.a and st["in_sync"] is False
        # the same refusal again: still exit 4, never "unchanged" or an internal error
        assert lab.reload()[0] == 4
        assert kernel_active() == good


def test_no_ready_while_the_kernel_refuses_the_declared_policy(lab: Lab) -> None:
    (lab.root / "refused.p7s").rename(lab.pols / "refused.p7s")
    lab.config(lab.b)  # declared active: the policy the kernel refuses
    active_before = kernel_active()
    notify = lab.root / "notify.sock"
    env = {**os.environ, "NOTIFY_SOCKET": os.fspath(notify)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(os.fspath(notify))
        with open(lab.root / "daemon.log", "a") as log:
            # the start fails at once (no wait for READY that never comes): exit 78, no restart
            proc = subprocess.run([sys.executable, "-m", "iped", "daemon", "--config", str(lab.root / "iped.toml")],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, timeout=180, check=False)
        msgs = notifications(rx)
    notify.unlink()
    assert proc.returncode == EXIT_START_REFUSED, (lab.root / "daemon.log").read_text()
    assert not any(line == "READY=1" for m in msgs for line in m.splitlines()), msgs
    status = [line for m in msgs for line in m.splitlines() if line.startswith("STATUS=")][-1]
    assert status.startswith(f"STATUS=FAILED: declared active policy '{lab.b}' not activated"), status
    assert f"load {lab.b}" in status and "ENOKEY" in status and "refused.p7s" in status, status
    assert kernel_active() == active_before  # the startup plan's activation never ran
    assert not (IPE / "policies" / lab.b).exists()
    # declare the good policy instead: now, and only now, READY=1
    (lab.pols / "refused.p7s").unlink()
    lab.config(lab.a)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(os.fspath(notify))
        rx.settimeout(120)  # under TCG the daemon can take long to start
        with daemon(lab, notify):
            msgs = [rx.recv(4096).decode()]
            while not msgs[-1].startswith("READY=1"):
                msgs.append(rx.recv(4096).decode())
            assert f"active {lab.a}" in msgs[-1], msgs
            now = kernel_active()
            assert now is not None and now[0] == lab.a


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopping_never_weakens_enforcement(lab: Lab, sig: signal.Signals) -> None:
    lab.config(lab.a, enforce=True)
    with daemon(lab) as proc:
        assert request(lab.sock, "status")["result"]["ready"] is True
        before = kernel_active()
        assert before is not None and before[0] == lab.a
        assert sysfs("enforce") == "1", "the test must start from enforce=1, else it proves nothing"
        proc.send_signal(sig)
        assert proc.wait(30) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert sysfs("enforce") == "1"
    assert kernel_active() == before  # same name, same version, still active
