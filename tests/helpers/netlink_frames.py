"""Netlink frames as a user-space sender writes them: what the tests feed
iped.audit.netlink.split_frames, and what the lab's audit marker sends to the kernel."""

from __future__ import annotations

import struct

#: struct nlmsghdr: len, type, flags, seq, pid (as iped.audit.netlink reads it)
NLMSG_HDR = struct.Struct("=IHHII")


def pack_frame(rtype: int, payload: bytes, *, flags: int, seq: int) -> bytes:
    """One netlink frame (port id 0) carrying ``payload``."""
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), rtype, flags, seq, 0) + payload
