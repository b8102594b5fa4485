"""Two promises of the daemon's life cycle, where they can fail, in process:

* READY=1 only once the declared policy is active: a backend posing as the kernel refuses the
  declared policy's load, and the daemon must say NOT READY, and why, instead of READY=1;
* stopping never weakens enforcement: SIGTERM to the running loop leaves ``enforce`` and the
  active policy's name and version as they were, and writes nothing to securityfs.

(After SIGKILL nothing of the emulator survives the process; the kernel side of both, SIGTERM
and SIGKILL, is tests/lab_guest/test_daemon_failures_kernel.py.)
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from iped.backend import Backend, EmulatorBackend
from iped.config import load_settings
from iped.daemon import runtime
from iped.daemon.actual import read_actual
from iped.daemon.log import NullReporter
from iped.daemon.loop import Daemon
from iped.daemon.notify import Notifier
from iped.pkcs7 import sign_policy
from tests.helpers.backends import PosingAsKernel
from tests.helpers.daemon import Site, notifications, request, wait_for
from tests.helpers.iped_with_hooks import Fault, FaultyEmulatorBackend
from tests.helpers.policies import policy_text


class RecordingBackend(PosingAsKernel):
    """Posing as the kernel, and keeping every write (path, data) in order."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.writes: list[tuple[str, bytes]] = []

    def write(self, path: str, data: bytes) -> int:
        self.writes.append((path, data))
        return super().write(path, data)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Notifier]]:
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(os.fspath(tmp_path / "notify.sock"))
    rx.setblocking(False)
    with rx:
        yield rx, Notifier({"NOTIFY_SOCKET": os.fspath(tmp_path / "notify.sock")})


def test_no_ready_while_the_kernel_refuses_the_declared_policy(
        site: Site, notify_socket: tuple[socket.socket, Notifier]) -> None:
    rx, notifier = notify_socket
    settings = load_settings(site.config)
    emulator = runtime.make_backend(settings)
    assert isinstance(emulator, EmulatorBackend)
    # the kernel refuses the first load of the declared active policy: a signer it does not trust
    kernel = PosingAsKernel(FaultyEmulatorBackend(emulator.emulator, "scripted", Fault("new_policy", 1, errno.ENOKEY)))
    d = Daemon(runtime.make_reconciler(settings, NullReporter(), kernel), notifier, NullReporter())
    try:
        assert d.reload("startup", record_unchanged=True).outcome == "failed"
        msgs = notifications(rx)
        assert not any(m.startswith("READY=1") for m in msgs), msgs
        (status,) = msgs
        assert status.startswith("STATUS=NOT READY: declared policy 'base' is not active: ")
        assert "load base 1.0.0" in status and "ENOKEY" in status
        assert d.status()["ready"] is False
        # the kernel takes it on the next try: now, and only now, READY=1
        assert d.reload("reload", record_unchanged=True).outcome == "applied"
        (ready,) = notifications(rx)
        assert ready.startswith("READY=1\nSTATUS=in sync: active base 1.0.0") and "(applied, reload)" in ready
        assert d.status()["ready"] is True
    finally:
        for s in (d._sigr, d._sigw):
            s.close()


def test_no_ready_while_another_policy_is_active(
        site: Site, monkeypatch: pytest.MonkeyPatch, notify_socket: tuple[socket.socket, Notifier]) -> None:
    """READY=1 means the *declared* policy is active, not any policy: with another one already
    active (an earlier deployment, a boot policy) and the declared one refused, it is NOT READY."""
    rx, notifier = notify_socket
    settings = load_settings(site.config)
    emulator = runtime.make_backend(settings)
    assert isinstance(emulator, EmulatorBackend)
    other = sign_policy(policy_text("other", "1.0.0"), site.key.read_bytes(), site.cert.read_bytes())
    emulator.emulator.write("new_policy", other)
    emulator.emulator.write("policies/other/active", b"1")
    kernel = PosingAsKernel(FaultyEmulatorBackend(emulator.emulator, "scripted", Fault("new_policy", 1, errno.ENOKEY)))
    d = Daemon(runtime.make_reconciler(settings, NullReporter(), kernel), notifier, NullReporter())
    try:
        assert d.reload("startup", record_unchanged=True).outcome == "failed"
        msgs = notifications(rx)
        assert not any(m.startswith("READY=1") for m in msgs), msgs
        (status,) = msgs
        assert status.startswith("STATUS=NOT READY: declared policy 'base' is not active: ") and "ENOKEY" in status
        assert d.status()["ready"] is False
        actual = read_actual(kernel)
        assert actual.active is not None and actual.active.name == "other"  # the kernel as it was
    finally:
        for s in (d._sigr, d._sigw):
            s.close()


@pytest.fixture
def restored_signals() -> Iterator[None]:
    """The loop installs its own SIGHUP/SIGTERM/SIGINT handlers: put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    yield
    signal.set_wakeup_fd(-1)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("restored_signals")
def test_sigterm_leaves_enforce_and_the_active_policy(site: Site) -> None:
    settings = load_settings(site.config)
    assert settings.policies.enforce is True
    backend = RecordingBackend(runtime.make_backend(settings))
    d = Daemon(runtime.make_reconciler(settings, NullReporter(), backend), Notifier({}), NullReporter())
    writes_before_sigterm: list[int] = []

    def stop_when_ready() -> None:
        try:
            wait_for(lambda: request(site.socket, "status")["result"]["ready"], what="ready")
        finally:
            writes_before_sigterm.append(len(backend.writes))
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread, which runs the loop

    killer = threading.Thread(target=stop_when_ready)
    killer.start()
    try:
        assert d.run() == 0
    finally:
        killer.join()
        if d.monitor is not None:
            d.monitor.close()
    after = read_actual(backend)
    assert after.enforce is True
    assert after.active is not None and (after.active.name, str(after.active.version)) == ("base", "1.0.0")
    assert backend.writes[writes_before_sigterm[0]:] == [], "stopping wrote to securityfs"
    assert ("enforce", b"0") not in backend.writes
