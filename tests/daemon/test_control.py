"""Control protocol over a real socketpair: replies, errors, SO_PEERCRED access rules."""

from __future__ import annotations

import errno
import json
import os
import socket
from typing import Any

from iped.daemon.control import (
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
