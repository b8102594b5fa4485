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

from iped.audit.records import RawRecord, RecordError, parse_stamped

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
        socket is usable again right after the error is reported.
        """
        out: list[RawRecord] = []
        for _ in range(max_datagrams):
            try:
                data, addr = self._sock.recvfrom(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.stats.enobufs += 1
                    continue
                raise
            if addr[0] != 0:
                # only the kernel (port id 0) writes to this group; anything else is forged
                self.stats.foreign_sender += 1
                continue
            out.extend(self._frames(data))
        return out

    def _frames(self, data: bytes) -> list[RawRecord]:
        return split_frames(data, self.stats)


def split_frames(data: bytes, stats: NetlinkStats) -> list[RawRecord]:
    """The records in one datagram of nlmsg frames, counting every frame, the control ones
    (no record) and the malformed ones (a bad length ends the datagram; an unparseable record
    is skipped) in ``stats``."""
    out = []
    offset = 0
    size = len(data)
    while offset + _NLMSG_HDR.size <= size:
        length, rtype, _flags, _seq, _pid = _NLMSG_HDR.unpack_from(data, offset)
        if length < _NLMSG_HDR.size or offset + length > size:
            stats.malformed += 1
            break
        stats.frames += 1
        if rtype < 1000:
            # NLMSG_NOOP/ERROR/DONE and audit control replies carry no record
            stats.control += 1
        else:
            text = data[offset + _NLMSG_HDR.size : offset + length].decode("utf-8", "backslashreplace")
            try:
                out.append(parse_stamped(rtype, text))
            except RecordError:
                stats.malformed += 1
        offset += (length + 3) & ~3
    return out
