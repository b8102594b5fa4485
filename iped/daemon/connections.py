"""The control socket's clients in the loop's selector: limits, idle time-outs, fd exhaustion.

No client can stall or spin the single loop:

- replies are buffered per client and written as its socket accepts them (EVENT_WRITE); a client
  that leaves :data:`~iped.daemon.control.MAX_PENDING_OUTPUT` bytes unread is not read from until
  it catches up, so its memory stays bounded;
- at most :attr:`Clients.max_clients` connections are kept (derived from ``RLIMIT_NOFILE``); when
  a new one comes in over the cap, the longest-idle one is closed (non-admin clients first);
- a connection with no traffic for :data:`IDLE_TIMEOUT` seconds is closed;
- when ``accept()`` fails for lack of file descriptors (EMFILE/ENFILE), the longest-idle client
  is closed to make room, and failing that a reserved descriptor is given up to accept and drop
  the pending connection; if even that fails the listener is not polled for
  :data:`LISTENER_PAUSE` seconds instead of waking the loop for nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import socket
import time
from dataclasses import dataclass

from iped.daemon.control import Connection, ControlServer, encode_error
from iped.daemon.log import Reporter
from iped.daemon.throttle import Throttle

#: seconds without a byte in either direction after which a client is closed
IDLE_TIMEOUT = 30.0
#: upper bound on kept client connections, whatever the fd limit allows
MAX_CLIENTS = 256
#: descriptors kept free for everything else the daemon opens (policy files, state, inotify...)
FD_HEADROOM = 32
#: seconds the listener is not polled when no descriptor at all can be had
LISTENER_PAUSE = 0.5
#: SO_SNDBUF of a client connection (the kernel doubles it)
SEND_BUFFER = 32 * 1024
_FD_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class Source:
    """What a selector key stands for."""

    kind: str
    conn: Connection | None = None


def client_cap(nofile_soft: int, fds_in_use: int) -> int:
    """How many clients fit under the fd limit, keeping :data:`FD_HEADROOM` free (at least 1)."""
    return max(1, min(MAX_CLIENTS, nofile_soft - fds_in_use - FD_HEADROOM))


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 16


class Clients:
    """The listener and every client connection, as registered in the loop's selector."""

    def __init__(self, sel: selectors.BaseSelector, server: ControlServer, reporter: Reporter,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.sel = sel
        self.server = server
        self.idle_timeout = idle_timeout
        self.conns: dict[int, Connection] = {}
        self.listener: socket.socket | None = None
        self.paused_until: float | None = None
        self.reserve: int | None = None
        self.max_clients = MAX_CLIENTS
        self.dropped = {"idle": 0, "over_cap": 0, "no_fd": 0, "backlogged": 0}
        self.throttle = Throttle(reporter)

    # -- listener -------------------------------------------------------------------------
    def listen(self) -> None:
        self.listener = self.server.listen()
        self.sel.register(self.listener, selectors.EVENT_READ, Source("listener"))
        self.reserve = self._open_reserve()
        try:  # getrlimit is prlimit64 in glibc; a seccomp filter may refuse it
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        except OSError:
            soft = resource.RLIM_INFINITY
        self.max_clients = client_cap(soft, _open_fds()) if soft != resource.RLIM_INFINITY else MAX_CLIENTS

    @staticmethod
    def _open_reserve() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def on_listener(self) -> None:
        """Accept the pending connections (the listener is non-blocking); a bounded number per
        wake-up so a flood of connects cannot keep the loop here."""
        for _ in range(self.max_clients + 64):
            try:
                conn = self.server.accept()
            except OSError as e:
                if e.errno not in _FD_ERRNOS:
                    raise
                if not self._out_of_fds(e):
                    return
                continue
            if conn is None:
                return
            if len(self.conns) >= self.max_clients:
                self._close_idlest("over_cap")
            self._add(conn)
            # a client usually writes its request right after connect: answering it now keeps
            # it from being taken for an idle one while a flood of connects fills the cap
            self.on_client(conn)

    def _out_of_fds(self, e: OSError) -> bool:
        """accept() failed for lack of descriptors. True: room was made, accept again."""
        self.throttle.log("warning", "control socket: accept failed",
                          f"control socket: accept failed: {e.strerror}; {len(self.conns)} clients "
                          f"(cap {self.max_clients}); closing the longest-idle client, or the new connection")
        if self._close_idlest("no_fd"):
            return True
        if self.reserve is not None:  # drop the pending connection with the reserved descriptor
            os.close(self.reserve)
            self.reserve = None
            assert self.listener is not None
            try:
                sock, _ = self.listener.accept()
                sock.close()
                self.dropped["no_fd"] += 1
            except OSError:
                pass
            self.reserve = self._open_reserve()
            if self.reserve is not None:
                return True
        self._pause_listener()
        return False

    def _pause_listener(self) -> None:
        if self.paused_until is None and self.listener is not None:
            self.sel.unregister(self.listener)
            self.paused_until = time.monotonic() + LISTENER_PAUSE

    def _resume_listener(self) -> None:
        if self.paused_until is not None and self.listener is not None:
            self.sel.register(self.listener, selectors.EVENT_READ, Source("listener"))
            self.paused_until = None
            if self.reserve is None:
                self.reserve = self._open_reserve()

    # -- clients --------------------------------------------------------------------------
    def _add(self, conn: Connection) -> None:
        # a small kernel send buffer: a client that does not read costs few replies' work
        with contextlib.suppress(OSError):
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.conns[conn.fileno()] = conn
        self.sel.register(conn.sock, selectors.EVENT_READ, Source("conn", conn))

    def _close(self, conn: Connection) -> None:
        self.conns.pop(conn.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.sock.close()
        self._resume_listener()  # a descriptor is free again

    def _close_idlest(self, why: str) -> bool:
        """Close the client that has been quiet longest, first telling it why (best effort).
        Clients that may not administer go first: members of the read-only group cannot crowd
        root's ``iped reload`` out."""
        if not self.conns:
            return False
        admins = self.server.access.admin_uids
        conn = min(self.conns.values(), key=lambda c: (c.cred.uid in admins, c.last_active))
        conn.out.clear()
        conn.queue(encode_error(errno.EBUSY, f"closed: too many control connections (cap {self.max_clients})"))
        self.dropped[why] += 1
        self._close(conn)
        return True

    def on_client(self, conn: Connection) -> None:
        """Readable or writable: write buffered replies, read and answer requests, then
        re-register for what the client is waiting on."""
        alive = conn.flush() and self.server.on_readable(conn)
        if not alive:
            self._close(conn)
            return
        events = 0 if (conn.closing or conn.backlogged) else selectors.EVENT_READ
        if conn.out or conn.has_requests:  # writable at once when only requests wait: their turn comes next
            events |= selectors.EVENT_WRITE
        if events == 0:  # closing and nothing left to write
            self._close(conn)
            return
        key = self.sel.get_key(conn.sock)
        if key.events != events:
            self.sel.modify(conn.sock, events, key.data)

    # -- time -----------------------------------------------------------------------------
    def timeout(self, now: float) -> float | None:
        """Seconds until the next idle client expires or the paused listener resumes."""
        times = [c.last_active + self.idle_timeout for c in self.conns.values()]
        if self.paused_until is not None:
            times.append(self.paused_until)
        return max(0.0, min(times) - now) if times else None

    def on_timeout(self, now: float) -> None:
        for conn in [c for c in self.conns.values() if now - c.last_active >= self.idle_timeout]:
            self.dropped["backlogged" if conn.out else "idle"] += 1
            self._close(conn)
        if self.paused_until is not None and now >= self.paused_until:
            self._resume_listener()

    def counters(self) -> dict[str, int]:
        return {"clients": len(self.conns), "max_clients": self.max_clients,
                **{f"dropped_{k}": v for k, v in self.dropped.items()}}

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        if self.reserve is not None:
            os.close(self.reserve)
            self.reserve = None
        self.server.close()
