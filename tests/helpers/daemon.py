"""A real ``iped`` for tests: a site (config, drop-in dir, state dir in tmp_path), the CLI as a
process, the control socket, and a daemon process with bounded waits on it.

The fixtures built on these (``site``, ``daemon``, ``quiet_daemon``, ``abused``) are in tests/conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iped.daemon.log import StderrReporter
from tests.helpers.iped_with_hooks import HOOK_ENVS
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text

#: a debounce no test outlasts: the daemon never converges on its own (inotify) before the command
#: under test does, so only explicit reloads act
SLOW_DEBOUNCE_MS = 60000


class RecordingReporter(StderrReporter):
    """Keeps every log line as (level, message, kind) for a test to look at; prints nothing."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, str | None]] = []

    @property
    def lines(self) -> list[str]:
        return [f"{level}: {message}" for level, message, _ in self.messages]

    def log(self, level: str, message: str, kind: str | None = None) -> None:
        self.messages.append((level, message, kind))


@dataclass
class Site:
    """A config + drop-in dir + state dir in tmp_path."""

    root: Path
    key: Path
    cert: Path
    active: str | None = "base"
    enforce: bool = True
    extra: str = ""
    debounce_ms: int = 50
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "iped.toml"

    @property
    def policies(self) -> Path:
        return self.root / "policies.d"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "control.sock"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def write_config(self) -> None:
        active = f'active = "{self.active}"\n' if self.active else ""
        self.config.write_text(
            "[policies]\n"
            'dir = "policies.d"\n'
            f"{active}"
            f"enforce = {str(self.enforce).lower()}\n"
            f'signing_key = "{self.key}"\n'
            f'signing_cert = "{self.cert}"\n'
            "[daemon]\n"
            'backend = "emulator"\n'
            'state_dir = "state"\n'
            'control_socket = "run/control.sock"\n'
            'control_group = "nogroup"\n'
            f"debounce_ms = {self.debounce_ms}\n"
            "[audit]\n"
            'source = "auto"\n' + self.extra
        )

    def put(self, filename: str, data: bytes) -> Path:
        """Atomic replace, as config management does (temp file + rename)."""
        path = self.policies / filename
        tmp = self.policies / f".{filename}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path


def make_site(root: Path, keys: tuple[Path, Path]) -> Site:
    """A config declaring ``base`` active, its drop-in dir holding base.pol 1.0.0."""
    s = Site(root, *keys)
    s.policies.mkdir()
    s.put("base.pol", policy_text("base", "1.0.0"))
    s.write_config()
    return s


def iped_argv(env: dict[str, str]) -> list[str]:
    """How to run iped: ``python -m iped``, or the tests' entry point when ``env`` asks for one
    of its hooks (tests/helpers/iped_with_hooks.py; the package itself reads no such switch)."""
    hooked = any(env.get(name) for name in HOOK_ENVS)
    return [sys.executable, "-m", "tests.helpers.iped_with_hooks" if hooked else "iped"]


def iped(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
         preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    return subprocess.run([*iped_argv(full), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=full, preexec_fn=preexec, check=False)


def request(sock: Path, op: str, **args: Any) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(os.fspath(sock))
        s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply: dict[str, Any] = json.loads(buf)
    return reply


def notifications(rx: socket.socket) -> list[str]:
    """The sd_notify datagrams queued on ``rx`` so far (sd_notify sends synchronously: a message
    sent before this call is queued)."""
    rx.setblocking(False)
    got = []
    while True:
        try:
            got.append(rx.recv(4096).decode())
        except BlockingIOError:
            return got


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except (OSError, ValueError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last={last!r}")


def wait_child(pid: int, timeout: float = 60.0, flags: int = 0) -> int:
    """``os.waitpid(pid, flags)``'s status, bounded: a child still running (or, with WUNTRACED,
    neither stopped nor exited) after ``timeout`` seconds is killed, reaped and the test fails."""
    deadline = time.monotonic() + timeout
    while True:
        got, status = os.waitpid(pid, flags | os.WNOHANG)
        if got == pid:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} still running after {timeout:g} s (killed)")
        time.sleep(0.01)


@dataclass
class DaemonProc:
    site: Site
    proc: subprocess.Popen[str]

    def status(self) -> dict[str, Any]:
        reply = request(self.site.socket, "status")
        assert reply["ok"], reply
        result: dict[str, Any] = reply["result"]
        return result

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.stderr.read() if self.proc.stderr is not None else ""


def start_daemon(site: Site, stderr: Any = subprocess.PIPE, preexec: Callable[[], None] | None = None,
                 wrapper: tuple[str, ...] = (), extra_env: dict[str, str] | None = None) -> DaemonProc:
    """``iped daemon --config``, answering ping; ``stderr``: where its log goes; ``preexec``: run in
    the child before exec (e.g. a lower RLIMIT_NOFILE; the suite starts no threads); ``wrapper``:
    the command that execs the daemon's argv (e.g. ``unshare --mount``); ``extra_env``: added to
    its environment (a hook's variable runs it through the tests' entry point, :func:`iped_argv`)."""
    env = {**os.environ, **site.env, **(extra_env or {})}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([*wrapper, *iped_argv(env), "daemon", "--config", str(site.config)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                            preexec_fn=preexec)  # noqa: PLW1509
    d = DaemonProc(site, proc)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {d.stop()}")
        return bool(request(site.socket, "ping")["ok"])

    wait_for(up, what="daemon to answer ping")
    return d


@dataclass
class Daemon(DaemonProc):
    """A daemon whose log goes to a file, and whose CPU time and RSS a test can read (/proc)."""

    log: Path = Path("/dev/null")

    def status_ok(self) -> bool:
        return bool(request(self.site.socket, "status")["ok"])

    def cpu_seconds(self) -> float:
        """utime + stime of the daemon so far (/proc/PID/stat fields 14 and 15)."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a test may have stopped it
        return super().stop()


def spawn_daemon(site: Site, nofile: int | None = None) -> Daemon:
    """``iped daemon --config`` with its log in a file; ``nofile``: soft RLIMIT_NOFILE."""

    def limit() -> None:
        if nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    log = site.root / "daemon.log"
    with open(log, "wb") as out:
        d = start_daemon(site, stderr=out, preexec=limit)
    return Daemon(site, d.proc, log)


def tampered_signature(site: Site) -> bytes:
    """A signed policy whose signature no longer matches (its last byte, inside the signature, flipped)."""
    from iped.pkcs7 import sign_policy  # the crypto stack only for the tests that sign

    blob = bytearray(sign_policy(policy_text("tampered", "1.0.0"), site.key.read_bytes(), site.cert.read_bytes()))
    blob[-1] ^= 0xFF
    return bytes(blob)


@contextlib.contextmanager
def clients(sock: Path, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections (fewer if the daemon's queue is full), closed on exit."""
    conns: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(os.fspath(sock))
            except BlockingIOError:
                s.close()
                continue
            conns.append(s)
        yield conns
    finally:
        for s in conns:
            s.close()
