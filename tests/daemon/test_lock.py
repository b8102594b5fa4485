"""One daemon per control socket, decided by a lock and not by a ping; clients wait for a busy
daemon; a control_socket path that is not a socket is never removed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tests.helpers.daemon import Daemon, Site, iped, spawn_daemon
from tests.helpers.paths import ROOT


def second_daemon(site: Site) -> subprocess.CompletedProcess[str]:
    """A second ``iped daemon`` on the same config; a daemon that starts runs until the timeout."""
    return iped("daemon", "--config", str(site.config), timeout=30)


def test_second_daemon_refuses_while_a_stopped_first_one_holds_the_lock(abused: Daemon) -> None:
    sock = abused.site.socket
    inode = os.stat(sock).st_ino
    abused.proc.send_signal(signal.SIGSTOP)  # busy: answers nothing, yet alive
    try:
        second = second_daemon(abused.site)
    finally:
        abused.proc.send_signal(signal.SIGCONT)
    assert second.returncode == 1, second.stderr
    assert "another iped daemon" in second.stderr and f"pid {abused.proc.pid}" in second.stderr
    assert os.stat(sock).st_ino == inode  # its socket was left alone
    assert abused.status_ok()


def test_lock_is_free_again_once_the_daemon_is_gone(site: Site) -> None:
    first = spawn_daemon(site)
    first.proc.kill()
    first.proc.wait(timeout=30)
    again = spawn_daemon(site)  # a stale socket and lock file of a killed daemon are taken over
    try:
        assert again.status_ok()
    finally:
        again.stop()


def test_status_waits_while_the_accept_queue_is_full(abused: Daemon) -> None:
    sock = os.fspath(abused.site.socket)
    abused.proc.send_signal(signal.SIGSTOP)
    fillers: list[socket.socket] = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            fillers.append(s)
            try:
                s.connect(sock)
            except BlockingIOError:
                break
        else:
            raise AssertionError("the accept queue never filled")
        status = subprocess.Popen([sys.executable, "-m", "iped", "status", "--socket", sock, "--json"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # status is now waiting on the full queue
        abused.proc.send_signal(signal.SIGCONT)
        out, err = status.communicate(timeout=30)
    finally:
        abused.proc.send_signal(signal.SIGCONT)
        for s in fillers:
            s.close()
    assert status.returncode == 0, err
    assert '"ready": true' in out


def test_control_socket_that_is_a_regular_file_is_not_deleted(site: Site) -> None:
    site.socket.parent.mkdir()
    site.socket.write_text("precious\n")
    result = second_daemon(site)
    assert result.returncode == 1, result.stderr
    assert "is not a socket" in result.stderr and str(site.socket) in result.stderr
    assert site.socket.read_text() == "precious\n"
    assert not (site.socket.parent / "control.sock.lock").exists()
