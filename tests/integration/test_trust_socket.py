"""Issue 24 item 1: root's CLI never takes another user's socket for the daemon, the dev daemon
never binds where another user could swap its socket or hold its lock, and a forged or broken
reply is one error line, with the control characters it carried escaped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.daemon import iped, request, wait_for
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None
                                or os.path.exists("/run/iped/control.sock"),
                                reason="needs root, setpriv, and no system daemon on this host")

#: run as nobody with the system python (the suite's interpreter lives under /root): creates the
#: directory ``argv[1]``, then with ``serve`` binds ``control.sock`` there and answers every
#: request with ``argv[3]``; with ``lock`` creates ``control.sock.lock`` open to all and holds it
FAKE_DAEMON = r"""
import fcntl, os, socket, sys
d, mode = sys.argv[1], sys.argv[2]
os.mkdir(d, 0o755)
if mode == "lock":
    fd = os.open(d + "/control.sock.lock", os.O_RDWR | os.O_CREAT, 0o666)
    os.fchmod(fd, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")
    s = socket.socket(socket.AF_UNIX)
    s.bind(d + "/control.sock")
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind(d + "/control.sock")
    os.chmod(d + "/control.sock", 0o666)
    s.listen(8)
print("ready", flush=True)
while mode == "serve":
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(sys.argv[3].encode() + b"\n")
    c.close()
sys.stdin.read()
"""


@pytest.fixture
def sticky_tmp() -> Iterator[Path]:
    """A root-owned 1777 directory, as /tmp is, that the test can remove afterwards."""
    d = Path(tempfile.mkdtemp(prefix="iped-trust-", dir="/tmp"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_nobody(directory: Path, mode: str, reply: object = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
                             "-c", FAKE_DAEMON, str(directory), mode, json.dumps(reply)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=30)


def _dev_env(runtime: Path) -> dict[str, str]:
    """The dev daemon's well-known directory is $XDG_RUNTIME_DIR/iped-dev."""
    return {"XDG_RUNTIME_DIR": str(runtime)}


def test_root_cli_refuses_a_dev_socket_another_user_planted(sticky_tmp: Path) -> None:
    planted = sticky_tmp / "iped-dev"
    fake = _as_nobody(planted, "serve", {"ok": True, "result": {"outcome": "applied", "steps": []}})
    try:
        r = iped("reload", env=_dev_env(sticky_tmp))
        status = iped("status", env=_dev_env(sticky_tmp))
    finally:
        _stop(fake)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "applied" not in r.stdout
    assert r.stderr.strip().splitlines() == [
        f"iped: using the control socket {planted}/control.sock (not the system one, /run/iped/control.sock)",
        f"iped: error: daemon unreachable: {planted}: owned by uid 65534 (nobody), who is not root: that user can "
        "change what iped would take as the daemon's replies; refusing to talk to a daemon there (hint: chown root "
        f"{planted}, or remove it if you did not create it)"]
    assert status.returncode == 3 and status.stdout == ""


def test_the_cli_names_a_socket_that_is_not_the_system_one(tmp_path: Path) -> None:
    sock = tmp_path / "iped-dev" / "control.sock"
    sock.parent.mkdir(mode=0o700)
    with _FakeDaemon(sock, {"ok": True, "result": {}}):
        r = iped("status", env=_dev_env(tmp_path))
        explicit = iped("status", "--socket", str(sock))
    assert r.returncode == 0, r.stderr
    assert r.stderr == f"iped: using the control socket {sock} (not the system one, /run/iped/control.sock)\n"
    assert explicit.returncode == 0 and explicit.stderr == ""  # given by the caller: nothing to say


def test_dev_daemon_neither_binds_nor_locks_where_another_user_created_the_directory(sticky_tmp: Path) -> None:
    planted = sticky_tmp / "iped-dev"
    holder = _as_nobody(planted, "lock")  # holds the dev lock, and a socket of its own in the directory
    proc = subprocess.Popen([sys.executable, "-m", "iped", "daemon", "--dev"], cwd=ROOT,
                            env={**os.environ, **_dev_env(sticky_tmp)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        warning = proc.stderr.readline()
        assert warning.startswith(f"iped: warning: not using {planted}: belongs to uid 65534, not to this user "
                                  "(uid 0)"), warning
        private = Path(warning.split("the control socket is ", 1)[1].split(" instead", 1)[0])
        assert private.parent.stat().st_uid == 0 and private.parent.stat().st_mode & 0o777 == 0o700
        wait_for(lambda: private.exists() and request(private, "ping")["ok"], what="dev daemon on its own socket")
        assert sorted(os.listdir(planted)) == ["control.sock", "control.sock.lock"]  # nobody's, untouched
        assert os.stat(planted / "control.sock").st_uid == 65534
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        _stop(holder)
    assert proc.returncode == 0


def test_a_daemon_lock_others_can_open_is_refused(tmp_path: Path) -> None:
    from iped.daemon.lock import DaemonLockError, acquire

    run = tmp_path / "run"
    run.mkdir()
    lock = run / "control.sock.lock"
    lock.write_text("")
    lock.chmod(0o644)  # anyone may open it, and flock needs no more than that
    with pytest.raises(DaemonLockError, match=r"the daemon lock is accessible by group or others"):
        acquire(run / "control.sock")
    run.chmod(0o777)
    lock.chmod(0o600)
    with pytest.raises(DaemonLockError, match=f"^{run}: writable by every user"):
        acquire(run / "control.sock")


class _FakeDaemon:
    """A root-owned socket answering every request with ``reply`` (raw bytes: sent as they are)."""

    def __init__(self, path: Path, reply: object) -> None:
        self.path = path
        self.reply = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(os.fspath(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.recv(65536)
                c.sendall(self.reply + b"\n")

    def __enter__(self) -> _FakeDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.path.unlink()


@pytest.mark.parametrize(("verb", "reply", "why"), [
    ("rollback", {"ok": True, "result": {}}, "the 'rollback' result has no 'name' string"),
    ("rollback", {"ok": True, "result": ["x"]}, "the 'rollback' result is not a JSON object"),
    ("reload", {"ok": True}, "the 'reload' result is not a JSON object"),
    ("reload", {"ok": True, "result": {"outcome": 7}}, "the 'reload' result has no 'outcome' string"),
    ("status", b"\x1b]0;owned\x07 not json", "not JSON (JSONDecodeError)"),
    ("status", {"result": {}}, 'not a JSON object with a boolean "ok"'),
    ("status", {"ok": True, "result": "x"}, "the 'status' result is not a JSON object"),
])
def test_a_malformed_reply_is_one_error_line(tmp_path: Path, verb: str, reply: object, why: str) -> None:
    sock = tmp_path / "control.sock"
    with _FakeDaemon(sock, reply):
        r = iped(verb, "--socket", str(sock))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr == (f"iped: error: {sock}: malformed reply: {why} (not iped's daemon, or a bug in it; nothing "
                        "was taken from it)\n")


def test_control_characters_from_the_daemon_are_escaped_in_text_output(tmp_path: Path) -> None:
    evil = "evil\x1b[2J\x1b]0;pwned\x07"
    status = {"backend": {"kind": "emulator", "reason": evil}, "status_line": evil, "policies": [
        {"name": evil, "version": "0.0.1", "active": True, "source": f"/etc/{evil}.pol"}, "not-an-object"],
        "declared": {"dir": evil, "errors": [{"message": evil}]}, "drift": [evil],
        "last_plans": [{"seq": 1, "trigger": evil, "outcome": "applied", "steps": [{}]}]}
    record = {"outcome": "rejected", "errors": [{"message": evil}], "steps": [{"description": evil}], "done": 0}
    sock = tmp_path / "control.sock"
    with _FakeDaemon(sock, {"ok": True, "result": status}):
        st = iped("status", "--socket", str(sock))
    with _FakeDaemon(sock, {"ok": True, "result": record}):
        rl = iped("reload", "--socket", str(sock))
    with _FakeDaemon(sock, {"ok": False, "errno_name": "EIO", "error": evil}):
        err = iped("status", "--socket", str(sock))
    assert st.returncode == 0 and rl.returncode == 1 and err.returncode == 1, (st.stderr, rl.stderr, err.stderr)
    for out in (st.stdout, rl.stdout, err.stderr):
        assert "\x1b" not in out and "\x07" not in out
        assert "evil\\x1b[2J\\x1b]0;pwned\\x07" in out
    assert "  * evil\\x1b[2J\\x1b]0;pwned\\x07" in st.stdout
