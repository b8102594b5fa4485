"""Control protocol over a real socketpair: replies, errors, SO_PEERCRED access rules."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from typing import Any

from iped.daemon.control import (
    MAX_PENDING_OUTPUT,
    AccessPolicy,
    Connection,
    ControlServer,
    PeerCred,
    decode_request,
    encode_error,
    peer_cred,
)


def request_line(op: str, **args: Any) -> bytes:
    """A request as iped.daemon.client.request sends it."""
    return json.dumps({"op": op, **args}).encode() + b"\n"


def make_server(read_gid: int | None = None, admins: frozenset[int] = frozenset({0})) -> ControlServer:
    calls: list[str] = []

    def status(req: dict[str, Any], cred: PeerCred) -> Any:
        calls.append("status")
        return {"uid": cred.uid}

    def reload(req: dict[str, Any], cred: PeerCred) -> Any:
        calls.append("reload")
        return {"outcome": "unchanged"}

    def boom(req: dict[str, Any], cred: PeerCred) -> Any:
        raise RuntimeError("handler bug")

    srv = ControlServer(None, {"status": status, "reload": reload, "ping": boom}, AccessPolicy(admins, read_gid))
    srv.calls = calls  # type: ignore[attr-defined]
    return srv


def exchange(srv: ControlServer, payload: bytes) -> list[dict[str, Any]]:
    a, b = socket.socketpair()
    with a, b:
        conn = Connection(b)
        a.sendall(payload)
        a.shutdown(socket.SHUT_WR)
        while srv.on_readable(conn):
            pass
        b.close()  # the server is done with this client: EOF for the reader below
        a.settimeout(5)
        data = b""
        while chunk := a.recv(65536):
            data += chunk
    return [json.loads(x) for x in data.splitlines()]


def test_peer_cred_of_socketpair_is_us() -> None:
    a, b = socket.socketpair()
    with a, b:
        cred = peer_cred(b)
    assert (cred.pid, cred.uid, cred.gid) == (os.getpid(), os.getuid(), os.getgid())


def test_requests_and_replies_over_socketpair() -> None:
    srv = make_server(admins=frozenset({os.getuid()}))
    replies = exchange(srv, request_line("status") + request_line("reload"))
    assert replies == [{"ok": True, "result": {"uid": os.getuid()}}, {"ok": True, "result": {"outcome": "unchanged"}}]


def test_malformed_and_failing_requests_are_error_replies() -> None:
    srv = make_server(admins=frozenset({os.getuid()}))
    replies = exchange(srv, b'garbage\n{"op": 3}\n{"op": "nope"}\n{"op": "ping"}\n\n{"op": "status"}\n')
    assert [r.get("errno") for r in replies[:4]] == [errno.EBADMSG, errno.EINVAL, errno.EINVAL, errno.EIO]
    assert "handler bug" in replies[3]["error"]
    assert replies[4]["ok"] is True


def test_oversized_line_is_refused() -> None:
    srv = make_server(admins=frozenset({os.getuid()}))
    replies = exchange(srv, b"x" * 70000)
    assert replies[0]["errno"] == errno.EMSGSIZE


def test_access_policy() -> None:
    pol = AccessPolicy(frozenset({0}), read_gid=1234)
    root, member, other = PeerCred(1, 0, 0), PeerCred(os.getpid(), 1000, 1234), PeerCred(os.getpid(), 1000, 1000)
    assert pol.allowed(root, "reload") and pol.allowed(root, "status")
    assert pol.allowed(member, "status") and not pol.allowed(member, "reload")
    assert not pol.allowed(other, "status") and not pol.allowed(other, "reload")
    srv = make_server(read_gid=1234)
    srv.access = pol
    reply = json.loads(srv.handle_line(request_line("reload"), member))
    assert reply["errno"] == errno.EACCES and "only root may change state" in reply["error"]
    assert srv.calls == []  # type: ignore[attr-defined]


def test_codec_roundtrip() -> None:
    assert decode_request(request_line("reload", dry_run=True)) == {"op": "reload", "dry_run": True}
    err = json.loads(encode_error(errno.ESTALE, "x"))
    assert err == {"ok": False, "errno": errno.ESTALE, "errno_name": "ESTALE", "error": "x"}


def test_unknown_errno_is_named_like_everywhere_else() -> None:
    # one formatter (iped.errnos.errno_name): E<n>, never a bare number
    assert json.loads(encode_error(4095, "x"))["errno_name"] == "E4095"


def test_arguments_an_op_does_not_take_are_refused_not_ignored() -> None:
    srv = make_server(admins=frozenset({os.getuid()}))
    replies = exchange(srv, b'{"op": "reload", "dry_run": true}\n{"op": "status", "verbose": 1}\n')
    assert [r.get("errno") for r in replies] == [errno.EINVAL, errno.EINVAL]
    assert "'reload' does not take 'dry_run'" in replies[0]["error"]
    assert srv.calls == []  # type: ignore[attr-defined]


def test_rollback_dry_run_must_be_a_boolean() -> None:
    calls: list[dict[str, Any]] = []

    def rollback(req: dict[str, Any], cred: PeerCred) -> Any:
        calls.append(req)
        return {}

    srv = ControlServer(None, {"rollback": rollback},
                        AccessPolicy(frozenset({os.getuid()}), None))
    replies = exchange(srv, b'{"op": "rollback", "dry_run": "no"}\n{"op": "rollback", "dry_run": false}\n')
    assert replies[0]["errno"] == errno.EINVAL and "boolean" in replies[0]["error"]
    assert replies[1]["ok"] and calls == [{"op": "rollback", "dry_run": False}]


def test_deeply_nested_json_is_a_bad_message() -> None:
    srv = make_server(admins=frozenset({os.getuid()}))
    replies = exchange(srv, b"[" * 40000 + b"\n" + b'{"op": {"a":' * 4000 + b"\n")
    assert [r["errno"] for r in replies] == [errno.EBADMSG, errno.EBADMSG]


def test_a_client_that_never_reads_is_buffered_not_waited_for() -> None:
    srv = ControlServer(None, {"status": lambda req, cred: {"policies": "x" * 2000}},
                        AccessPolicy(frozenset({os.getuid()}), None))
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn = Connection(b)
        a.sendall(request_line("status") * 3000)  # ~50 KB of requests, replies never read
        for _ in range(100):  # each turn returns at once: the old code blocked 5 s in sendall
            assert srv.on_readable(conn)
            if conn.backlogged:
                break
        assert conn.backlogged and len(conn.out) < 2 * MAX_PENDING_OUTPUT
        assert b"\n" in conn.buf  # the rest waits until the client reads its replies
        a.setblocking(False)
        received = b""
        while b"\n" in conn.buf or conn.out:  # the client reads: everything gets answered
            with contextlib.suppress(BlockingIOError):
                received += a.recv(1 << 20)
            assert conn.flush() and srv.answer(conn)
        with contextlib.suppress(BlockingIOError):
            while chunk := a.recv(1 << 20):
                received += chunk
    assert received.count(b"\n") == 3000


def test_failed_peer_cred_grants_nothing() -> None:
    # SO_PEERCRED fails (here: EBADF, the connection is already gone): the peer is nobody
    a, b = socket.socketpair()
    with a:
        b.close()
        conn = Connection(b)
    assert conn.cred == PeerCred(0, -1, -1)
    srv = make_server(read_gid=os.getgid(), admins=frozenset({0, os.getuid()}))
    for op in ("status", "reload"):
        reply = json.loads(srv.handle_line(request_line(op), conn.cred))
        assert reply["errno"] == errno.EACCES, reply
    assert srv.calls == []  # type: ignore[attr-defined]
