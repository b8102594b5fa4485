"""Issue 25 item 7: one no-daemon rule for the verbs that can run without a daemon (plan, rollback;
README "Command-line conventions"): they compute locally only with --no-daemon or when nothing
listens on the socket, and then say so; an error reply, a malformed one and a socket that is not
to be trusted stay the verb's answer. Before, ``plan`` took any failure (even an error reply or
another user's socket) for "no daemon" and ``rollback`` any unreachable one, both silently."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from iped.cli import main
from tests.helpers.daemon import Site

ERROR_REPLY = {"ok": False, "errno": 5, "errno_name": "EIO", "error": "the daemon's own failure"}


@contextmanager
def answering(path: Path, reply: object) -> Iterator[None]:
    """A socket at ``path`` answering every request with ``reply`` (bytes: sent as they are)."""
    data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.fspath(path))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(data + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(10)
        path.unlink()


def _socket(site: Site) -> Path:
    run = site.root / "run"  # the site's control_socket = "run/control.sock"
    run.mkdir(mode=0o700, exist_ok=True)
    return run / "control.sock"


@pytest.mark.parametrize("verb", ["plan", "rollback"])
def test_an_error_reply_is_the_verbs_error_not_a_local_run(
        verb: str, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    with answering(_socket(site), ERROR_REPLY):
        code = main([verb, "--config", str(site.config)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == "iped: error: EIO: the daemon's own failure\n"


def test_a_malformed_reply_is_an_error_not_a_local_plan(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    sock = _socket(site)
    with answering(sock, b"not json"):
        code = main(["plan", "--config", str(site.config)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == (f"iped: error: {sock}: malformed reply: not JSON (JSONDecodeError) (not iped's daemon, or a bug "
                   "in it; nothing was taken from it)\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="the owner/mode rule is root's: a user's own dev socket is trusted")
@pytest.mark.parametrize("verb", ["plan", "rollback"])
def test_a_socket_others_could_have_put_there_is_exit_3_not_a_local_run(
        verb: str, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    sock = _socket(site)
    sock.parent.chmod(0o777)  # any user could have replaced the socket
    with answering(sock, {"ok": True, "result": {}}):
        code = main([verb, "--config", str(site.config)])
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    assert err.startswith(f"iped: error: daemon unreachable: {sock.parent}: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("listening", ["no socket", "a socket nobody accepts on"])
def test_nothing_listening_computes_locally_and_says_so(
        listening: str, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    sock = _socket(site)
    stale = socket.socket(socket.AF_UNIX)
    if listening == "a socket nobody accepts on":
        stale.bind(os.fspath(sock))  # bound, never listening: ECONNREFUSED
    try:
        code = main(["plan", "--config", str(site.config), "--json"])
    finally:
        stale.close()
    out, err = capsys.readouterr()
    why = "No such file or directory" if listening == "no socket" else "Connection refused"
    assert err == f"iped: no daemon listening on {sock} ({why}): computing locally\n"
    assert code == 0 and json.loads(out)["daemon"] is False


@pytest.mark.parametrize("verb", ["plan", "rollback"])
def test_no_daemon_computes_locally_without_asking(verb: str, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    with answering(_socket(site), ERROR_REPLY):  # a daemon that would fail the request: never asked
        code = main([verb, "--no-daemon", "--config", str(site.config)])
    out, err = capsys.readouterr()
    if verb == "plan":
        assert code == 0 and out.startswith("plan (computed locally, backend emulator): would-apply"), out
        assert err == ""
    else:  # the local rollback's own answer: nothing applied in this process, so nothing to roll back
        assert code == 1 and err == "iped: error: ENOENT: no policy is active; nothing to roll back\n"
