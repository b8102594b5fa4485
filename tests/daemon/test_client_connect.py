"""The CLI's client on a daemon whose accept queue is full: it waits in the kernel, bounded by its timeout."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iped.daemon.client import DaemonUnreachableError, request


@pytest.fixture
def full_queue(tmp_path: Path) -> Iterator[tuple[socket.socket, Path, list[socket.socket]]]:
    """A listener nobody accepts on, its queue filled by connects that never complete."""
    path = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.fspath(path))
    listener.listen(1)
    fillers: list[socket.socket] = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        fillers.append(s)
        try:
            s.connect(os.fspath(path))
        except BlockingIOError:
            break
    fillers.pop().close()
    try:
        yield listener, path, fillers
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_a_queue_that_stays_full_is_reported_after_the_timeout(
    full_queue: tuple[socket.socket, Path, list[socket.socket]],
) -> None:
    _, path, _ = full_queue
    with pytest.raises(DaemonUnreachableError, match=r"accept queue stayed full for 0\.3 s"):
        request(path, "status", timeout=0.3)


def test_the_waiting_client_connects_once_the_daemon_accepts(
    full_queue: tuple[socket.socket, Path, list[socket.socket]],
) -> None:
    """The client sleeps in connect() (SO_SNDTIMEO) and is let in when the queue drains: its
    request goes out on the connection the daemon accepts after the queued ones."""
    listener, path, fillers = full_queue
    got: dict[str, Any] = {}

    def client() -> None:
        try:
            got["reply"] = request(path, "status", timeout=30)
        except DaemonUnreachableError as e:
            got["error"] = e

    thread = threading.Thread(target=client)
    thread.start()
    accepted = [listener.accept()[0] for _ in range(len(fillers) + 1)]  # the queued ones, then the client's
    try:
        line = accepted[-1].makefile("rb").readline()
        assert b'"op": "status"' in line
        accepted[-1].sendall(b'{"ok": true}\n')
        thread.join(30)
    finally:
        for s in accepted:
            s.close()
    assert got == {"reply": {"ok": True}}
