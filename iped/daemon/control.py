"""Control socket: JSON lines over AF_UNIX, with SO_PEERCRED access control.

Protocol (one JSON object per line, one reply line per request)::

    -> {"op": "status"}            <- {"ok": true, "result": {...}}
    -> {"op": "reload"}            <- {"ok": true, "result": {"outcome": "applied", ...}}
    -> {"op": "frobnicate"}        <- {"ok": false, "errno": 22, "error": "..."}

Who may do what: uid 0 (and the daemon's own uid, which can write securityfs anyway) may run
every op; members of the configured read-only group may run the read ops (``status``, ``plan``,
``ping``); everyone else gets an EACCES error reply. A malformed line gets an EINVAL/EBADMSG
reply, and so does an argument the op does not take (``{"op": "reload", "dry_run": true}`` is
refused, not run as a real reload); a handler that raises gets an error reply; the server never
dies of a request.

Replies never block the loop: each client has its own output buffer, written as the socket
accepts it; a client that does not read its replies stops being read from (see
:mod:`iped.daemon.connections` for the limits on clients).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from iped.errnos import errno_name

MAX_LINE = 64 * 1024
#: a client whose unread replies pass this many bytes is not read from until it catches up
MAX_PENDING_OUTPUT = 64 * 1024
#: request lines of one client answered per turn, so that one pipelining client cannot keep the
#: loop from the others
ANSWER_BATCH = 16


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One op of the control socket: whether it only reads (the control group may call it) and
    the arguments it takes besides "op", with their JSON types. Its handler is the daemon's
    ``_op_<name>`` method (:class:`iped.daemon.loop.Daemon`)."""

    read_only: bool
    arguments: Mapping[str, type] = field(default_factory=lambda: MappingProxyType({}))


#: every op the control socket knows, declared once
OPS: Mapping[str, OpSpec] = MappingProxyType({
    "status": OpSpec(read_only=True),
    "plan": OpSpec(read_only=True, arguments=MappingProxyType({"config": str})),
    "ping": OpSpec(read_only=True),
    "reload": OpSpec(read_only=False),
    "rollback": OpSpec(read_only=False, arguments=MappingProxyType({"dry_run": bool})),
})


class ProtocolError(Exception):
    def __init__(self, errno_: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_
        self.message = message


def decode_request(line: bytes) -> dict[str, Any]:
    """Parse one request line. Raises ProtocolError(EBADMSG/EINVAL) for anything malformed."""
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(errno.EBADMSG, f"request is not JSON: {e}") from None
    except RecursionError:
        raise ProtocolError(errno.EBADMSG, "request is not JSON: nested too deeply") from None
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        raise ProtocolError(errno.EINVAL, 'request must be a JSON object with a string "op"')
    return req


def check_arguments(req: dict[str, Any]) -> None:
    """Refuse (EINVAL) an argument the op does not take, or one of the wrong type: a misspelt
    ``dry_run`` must not turn into the real thing. Ops not in :data:`OPS` take none."""
    op = req["op"]
    spec = OPS.get(op)
    allowed = spec.arguments if spec is not None else {}
    for key, value in req.items():
        if key == "op":
            continue
        if key not in allowed:
            takes = ", ".join(sorted(allowed)) or "no arguments"
            raise ProtocolError(errno.EINVAL, f"op {op!r} does not take {key!r} (it takes {takes})")
        if type(value) is not allowed[key]:
            raise ProtocolError(errno.EINVAL, f"op {op!r}: {key!r} must be a JSON "
                                f"{'boolean' if allowed[key] is bool else allowed[key].__name__}")


def encode_reply(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}, sort_keys=True).encode() + b"\n"


def encode_error(errno_: int, message: str) -> bytes:
    return json.dumps({"ok": False, "errno": errno_, "errno_name": errno_name(errno_),
                       "error": message}).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


def peer_cred(sock: socket.socket) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCred(pid, uid, gid)


def _supplementary_groups(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """uid 0 and the daemon's uid administer; ``read_gid`` members may read."""

    admin_uids: frozenset[int]
    read_gid: int | None

    def allowed(self, cred: PeerCred, op: str) -> bool:
        if cred.uid in self.admin_uids:
            return True
        spec = OPS.get(op)
        if spec is None or not spec.read_only or self.read_gid is None:
            return False
        return cred.gid == self.read_gid or self.read_gid in _supplementary_groups(cred.pid)


def resolve_group(name: str | None) -> int | None:
    if not name:
        return None
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


Handler = Callable[[dict[str, Any], PeerCred], Any]


class Connection:
    """One client: buffers bytes until a full line, then dispatches it; buffers its replies until
    the socket takes them (never a blocking send from the loop)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.out = bytearray()
        self.closing = False  # no more requests: close once ``out`` is written
        self.last_active = time.monotonic()
        try:
            self.cred = peer_cred(sock)
        except OSError:
            self.cred = PeerCred(0, -1, -1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def queue(self, data: bytes) -> bool:
        """Append a reply and write what the socket takes now. False: the peer is gone."""
        self.out += data
        return self.flush()

    def flush(self) -> bool:
        """Write buffered replies without blocking. False: the peer is gone."""
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            del self.out[:sent]
            self.last_active = time.monotonic()
        return True

    @property
    def backlogged(self) -> bool:
        """Too many unread replies: read no more requests until the client catches up."""
        return len(self.out) >= MAX_PENDING_OUTPUT

    @property
    def has_requests(self) -> bool:
        """Complete request lines wait in ``buf`` for the client's next turn."""
        return b"\n" in self.buf and not self.backlogged

    @property
    def finished(self) -> bool:
        return self.closing and not self.out


class ControlServer:
    """Dispatches requests; the loop owns the sockets' readiness."""

    def __init__(self, path: Path | None, handlers: dict[str, Handler], access: AccessPolicy,
                 group_gid: int | None = None) -> None:
        unknown = sorted(set(handlers) - set(OPS))
        if unknown:
            raise ValueError(f"handlers for ops the control socket does not declare (control.OPS): {unknown}")
        self.path = path
        self.handlers = handlers
        self.access = access
        self.listener: socket.socket | None = None
        self.group_gid = group_gid

    def listen(self) -> socket.socket:
        """Bind the socket (mode 0660, group = read group) replacing a stale one."""
        assert self.path is not None
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        remove_stale_socket(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        old = os.umask(0o117)
        try:
            s.bind(os.fspath(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)
        if self.group_gid is not None:
            with contextlib.suppress(OSError):
                os.chown(self.path, -1, self.group_gid)
        s.listen(64)
        self.listener = s
        return s

    def accept(self) -> Connection | None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        sock.setblocking(False)
        return Connection(sock)

    def handle_line(self, line: bytes, cred: PeerCred) -> bytes:
        """Turn one request line into one reply line; never raises."""
        try:
            req = decode_request(line)
            op = req["op"]
            if op not in self.handlers:
                raise ProtocolError(errno.EINVAL, f"unknown op {op!r}; known: {', '.join(sorted(self.handlers))}")
            check_arguments(req)
            if not self.access.allowed(cred, op):
                why = ("it is neither root nor in the control group" if OPS[op].read_only
                       else "only root may change state")
                raise ProtocolError(errno.EACCES, f"uid {cred.uid} may not {op!r}: {why}")
            return encode_reply(self.handlers[op](req, cred))
        except ProtocolError as e:
            return encode_error(e.errno, e.message)
        except Exception as e:  # a failing handler is an error reply, never a dead loop
            return encode_error(errno.EIO, f"internal error: {type(e).__name__}: {e}")

    def on_readable(self, conn: Connection) -> bool:
        """Read what is there, answer complete lines. Returns False when the connection is done
        (:attr:`Connection.closing` with replies still buffered counts as not done)."""
        if not conn.closing and not conn.backlogged and b"\n" not in conn.buf:
            try:
                chunk = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                return False
            if chunk is not None:
                conn.last_active = time.monotonic()
                if chunk:
                    conn.buf += chunk
                else:
                    conn.closing = True  # EOF: answer what was asked, then close
        return self.answer(conn)

    def answer(self, conn: Connection) -> bool:
        """Answer up to :data:`ANSWER_BATCH` complete request lines in ``conn.buf`` while the
        client reads its replies (the rest waits for the next turn: :attr:`Connection.has_requests`)."""
        start = 0
        for _ in range(ANSWER_BATCH):
            end = conn.buf.find(b"\n", start)
            if end < 0 or conn.backlogged:
                break
            line, start = conn.buf[start:end], end + 1
            if line.strip() and not conn.queue(self.handle_line(line, conn.cred)):
                return False
        conn.buf = conn.buf[start:]
        if len(conn.buf) > MAX_LINE:
            conn.buf = b""
            conn.closing = True
            conn.queue(encode_error(errno.EMSGSIZE, f"request line longer than {MAX_LINE} bytes"))
        if conn.closing and b"\n" not in conn.buf:
            conn.buf = b""  # a last line without newline is not a request
        return conn.flush() and not conn.finished

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def remove_stale_socket(path: Path) -> None:
    """Unlink a socket left at ``path`` by an earlier daemon; refuse to unlink anything else
    (a ``control_socket`` pointing at a regular file must not delete it). Raises
    FileExistsError. Only the holder of the daemon lock (iped.daemon.lock) may call this."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, f"control_socket {path} exists and is not a socket; "
                              "refusing to remove it (fix [daemon] control_socket)", os.fspath(path))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
