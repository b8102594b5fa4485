"""Hostile clients on the control socket of a real daemon process: the daemon keeps answering
``status`` while they run, its memory stays bounded, and it does not spin.

The bounds here are liveness and resource bounds (a reply at all within a generous deadline,
CPU seconds used over a window, RSS growth, log size); latency under abuse is measured by
benchmarks/bench_control_abuse.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from tests.helpers.daemon import Daemon, Site, clients, spawn_daemon

#: a reply slower than this means the loop was stalled (the old blocking send: 5 s per client)
LIVENESS_S = 4.0


def status_within(sock: Path, seconds: float = LIVENESS_S) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(seconds)
        while True:  # a full accept queue is waited on, as `iped status` does
            try:
                s.connect(os.fspath(sock))
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"accept queue of {sock} full for {seconds} s"
                time.sleep(0.05)
        s.sendall(b'{"op": "status"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, "daemon closed the connection without a reply"
            buf += chunk
    reply: dict[str, object] = json.loads(buf)
    assert reply["ok"], reply
    return reply


def test_clients_that_never_read_do_not_stall_the_daemon(abused: Daemon) -> None:
    rss_before = abused.rss_kib()
    flood = b'{"op": "status"}\n' * 4000
    with clients(abused.site.socket, 10) as hogs:
        for s in hogs:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with contextlib.suppress(BlockingIOError):
                s.send(flood)
        for _ in range(5):
            status_within(abused.site.socket)
            time.sleep(0.2)
        control = status_within(abused.site.socket)["result"]["control"]  # type: ignore[index]
        assert control["clients"] >= 10
    assert abused.rss_kib() - rss_before < 64 * 1024  # KiB: per-client buffers are capped
    status_within(abused.site.socket)


def test_garbage_and_floods_are_answered_and_the_daemon_stays_up(abused: Daemon) -> None:
    payloads = [os.urandom(70000), b"[" * 60000 + b"\n", b'{"op":"reload","dry_run":true}\n',
                b"\x00\xff\n" * 1000, b'{"op": "ping"}\n' * 2000]
    for payload in payloads:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(os.fspath(abused.site.socket))
            with contextlib.suppress(OSError):
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
        status_within(abused.site.socket)
    counters = status_within(abused.site.socket)["result"]["counters"]  # type: ignore[index]
    assert abused.proc.poll() is None
    assert counters is not None


def test_fd_exhaustion_neither_spins_nor_floods_the_log(site: Site) -> None:
    d = spawn_daemon(site, nofile=64)
    try:
        with clients(site.socket, 200) as idle:
            assert len(idle) > 64  # more connections than the daemon has descriptors
            status_within(site.socket)
            cpu0, log0 = d.cpu_seconds(), d.log.stat().st_size
            time.sleep(2.0)
            for _ in range(3):
                status_within(site.socket)
            cpu = d.cpu_seconds() - cpu0
            logged = d.log.stat().st_size - log0
        assert cpu < 1.0, f"daemon used {cpu:.2f} s CPU in a ~2 s window with idle clients: spinning"
        assert logged < 16 * 1024, f"{logged} bytes logged in ~2 s: {d.log.read_text()[-2000:]}"
        status_within(site.socket)
    finally:
        d.stop()
