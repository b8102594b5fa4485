"""Netlink framing (iped.audit.netlink.split_frames), shared by the daemon's
multicast reader and the lab's audit reader: aligned frames, control frames, malformed tails."""

from __future__ import annotations

from iped.audit.netlink import split_frames
from tests.helpers.netlink_frames import pack_frame


def test_frames_round_trip_with_alignment_padding() -> None:
    first = pack_frame(1420, b"ipe_op=EXECUTE", flags=0, seq=1)  # 16 + 14 bytes: padded to 32
    data = first + b"\0\0" + pack_frame(1300, b"arch=c000003e", flags=0, seq=2)
    assert split_frames(data) == ([(1420, b"ipe_op=EXECUTE"), (1300, b"arch=c000003e")], False)


def test_control_frames_are_returned_with_their_type() -> None:
    assert split_frames(pack_frame(3, b"", flags=0, seq=0)) == ([(3, b"")], False)  # NLMSG_DONE


def test_a_frame_longer_than_the_datagram_stops_the_walk() -> None:
    good = pack_frame(1420, b"abcd", flags=0, seq=1)
    truncated = pack_frame(1421, b"x" * 40, flags=0, seq=2)[:30]
    assert split_frames(good + truncated) == ([(1420, b"abcd")], True)


def test_a_length_shorter_than_the_header_is_malformed() -> None:
    bogus = bytearray(pack_frame(1420, b"abcd", flags=0, seq=1))
    bogus[0:4] = (8).to_bytes(4, "little")
    assert split_frames(bytes(bogus)) == ([], True)
    assert split_frames(b"") == ([], False)
