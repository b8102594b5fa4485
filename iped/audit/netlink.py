"""The audit multicast group: a read-only copy of every kernel audit record (kernel/audit.c).

iped binds NETLINK_AUDIT group AUDIT_NLGRP_READLOG (nl_groups bit 1). That needs
CAP_AUDIT_READ and coexists with auditd and journald; iped never sends AUDIT_SET and never
becomes "the" audit daemon. The multicast copy carries standard nlmsg framing
(``kauditd_send_multicast_skb`` fixes up ``nlmsg_len``), so frames are walked the usual way.

There is no backpressure on multicast: when the receive buffer is full the kernel drops the
record and the next ``recv`` fails with ENOBUFS. Each ENOBUFS is counted (``enobufs``), and the
grouper's serial-gap tracking counts how many serials went missing.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from typing import Any

from iped.audit import native
from iped.audit.native import _scan
from iped.audit.records import RawRecord, RecordError, parse_stamped

#: read with the C helper when it is built (False: the Python reader, e.g. to compare them)
use_c_reader: bool = native.BUILT

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1
_NLMSG_HDR = struct.Struct("=IHHII")
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
DEFAULT_RCVBUF = 8 * 1024 * 1024


@dataclass
class NetlinkStats:
    frames: int = 0
    enobufs: int = 0
    foreign_sender: int = 0
    malformed: int = 0
    control: int = 0


class NetlinkSource:
    """A non-blocking reader of the audit multicast group; register :meth:`fileno` in a selector."""

    def __init__(self, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        """Open and bind the socket.

        Raises PermissionError (EPERM) without CAP_AUDIT_READ, OSError(EPROTONOSUPPORT) when
        the kernel has no audit support.
        """
        self.stats = NetlinkStats()
        self._kernel_only = True
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
        try:
            self.rcvbuf = self._set_rcvbuf(rcvbuf)
            self._sock.bind((0, AUDIT_NLGRP_READLOG))
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def _set_rcvbuf(self, size: int) -> int:
        """SO_RCVBUFFORCE (CAP_NET_ADMIN, ignores rmem_max) else SO_RCVBUF; return the real size."""
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
        except PermissionError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    @classmethod
    def over(cls, sock: socket.socket) -> NetlinkSource:
        """A reader of netlink-framed audit records arriving on ``sock``, one end of a
        ``socketpair`` (benchmarks/bench_follower.py, tests): the same reading and parsing, with
        no sender to check (only the kernel's port 0 may send on the audit group)."""
        src = cls.__new__(cls)
        src.stats = NetlinkStats()
        src._kernel_only = False
        src._sock = sock
        src.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sock.setblocking(False)
        return src

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NetlinkSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, max_datagrams: int = 1024) -> list[RawRecord]:
        """Drain what is queued (without blocking) and return the records in arrival order.

        ENOBUFS is counted and reading goes on: the kernel already dropped records, and the
        socket is usable again right after the error is reported. With the C helper built
        (``iped.audit._scan.recv_records``: recvmmsg, frames and plain stamps parsed in C, any
        other payload handed to :func:`parse_stamped`) the same records and counts as
        :meth:`read_py`, several datagrams per system call.
        """
        return self._read_c(max_datagrams, False) if use_c_reader and _scan is not None else self.read_py(max_datagrams)

    def read_runs(self, max_datagrams: int = 1024) -> list[list[RawRecord]]:
        """:meth:`read`'s records in runs: consecutive records of one stamp up to its EOE (the
        kernel sends an event's records back to back) in one list, no record twice in a run --
        what :meth:`Grouper.feed_run` takes, a Python call per event instead of per record.
        Without the C helper each record is a run of its own."""
        if use_c_reader and _scan is not None:
            return self._read_c(max_datagrams, True)
        return [[rec] for rec in self.read_py(max_datagrams)]

    def _read_c(self, max_datagrams: int, runs: bool) -> list[Any]:
        assert _scan is not None
        recs, enobufs, foreign, malformed, control, frames = _scan.recv_records(
            self._sock.fileno(), RawRecord, parse_stamped, RecordError, self._kernel_only, max_datagrams, runs
        )
        stats = self.stats
        stats.enobufs += enobufs
        stats.foreign_sender += foreign
        stats.malformed += malformed
        stats.control += control
        stats.frames += frames
        return recs

    def read_py(self, max_datagrams: int = 1024) -> list[RawRecord]:
        """:meth:`read` in Python, one ``recvfrom`` per datagram."""
        out: list[RawRecord] = []
        recvfrom = self._sock.recvfrom
        kernel_only = self._kernel_only
        frames = self._frames
        for _ in range(max_datagrams):
            try:
                data, addr = recvfrom(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.stats.enobufs += 1
                    continue
                raise
            if kernel_only and addr[0] != 0:
                # only the kernel (port id 0) writes to this group; anything else is forged
                self.stats.foreign_sender += 1
                continue
            frames(data, out)
        return out

    def _frames(self, data: bytes, out: list[RawRecord]) -> None:
        frame_records(data, self.stats, out)


def frame_records(data: bytes, stats: NetlinkStats, out: list[RawRecord]) -> list[RawRecord]:
    """Append the records of one datagram's nlmsg frames to ``out`` (and return it), counting
    every frame, the control ones (no record) and the malformed ones (a bad length ends the
    datagram; an unparseable record is skipped) in ``stats``."""
    frames, malformed = split_frames(data)
    stats.malformed += malformed
    for rtype, payload in frames:
        stats.frames += 1
        if rtype < 1000:
            # NLMSG_NOOP/ERROR/DONE and audit control replies carry no record
            stats.control += 1
            continue
        try:
            out.append(parse_stamped(rtype, payload.decode("utf-8", "backslashreplace")))
        except RecordError:
            stats.malformed += 1
    return out


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """The ``(nlmsg_type, payload)`` of each netlink frame in one datagram, in order.

    The second value is True when the walk stopped at a malformed header (a length shorter
    than the header or past the datagram); the frames before it are still returned.
    """
    frames: list[tuple[int, bytes]] = []
    offset = 0
    while offset + _NLMSG_HDR.size <= len(data):
        length, rtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size or offset + length > len(data):
            return frames, True
        frames.append((rtype, data[offset + _NLMSG_HDR.size : offset + length]))
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return frames, False
