"""The C netlink reader (``_scan.recv_records``) against NetlinkSource.read_py, datagram for datagram.

Both read the same datagrams from a real socketpair (the kernel's framing: nlmsghdr + payload)
and must give the same records and the same counters (frames, control, malformed), on
hand-made odd frames and on generated payloads (Hypothesis).
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iped.audit import native, netlink
from iped.audit.netlink import NetlinkSource
from iped.audit.records import RawRecord

_HDR = struct.Struct("=IHHII")


@pytest.fixture(autouse=True)
def c_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C reader must be built: without it ``read()`` *is* ``read_py()`` and nothing is compared."""
    assert native.BUILT, "iped.audit._scan is not built"
    monkeypatch.setattr(netlink, "use_c_reader", True)


def frame(rtype: int, payload: bytes, length: int | None = None) -> bytes:
    size = _HDR.size + len(payload) if length is None else length
    pad = b"\0" * (-len(payload) % 4)
    return _HDR.pack(size, rtype, 0, 0, 0) + payload + pad


def pair() -> tuple[socket.socket, socket.socket]:
    """(reader, sender): the sender's buffer (what bounds a socketpair's queue) holds a test's datagrams."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return ours, theirs


def read_both(datagrams: list[bytes]) -> tuple[list[RawRecord], netlink.NetlinkStats]:
    """What each reader gets from ``datagrams``; asserts they agree and returns the C one's."""
    results = []
    for use_c in (True, False):
        ours, theirs = pair()
        with ours, theirs:
            src = NetlinkSource.over(ours)
            for d in datagrams:
                theirs.send(d)
            records = src.read() if use_c else src.read_py()
            results.append((records, src.stats))
    (c_recs, c_stats), (py_recs, py_stats) = results
    assert c_recs == py_recs
    assert [type(r) for r in c_recs] == [RawRecord] * len(c_recs)
    assert c_stats == py_stats
    return c_recs, c_stats


ODD = [
    frame(1420, b'audit(1700000000.123:42): ipe_op=EXECUTE comm="sh" rule="DEFAULT action=DENY"'),
    frame(1320, b"audit(1700000000.123:42): "),  # EOE: empty body
    frame(1300, b"audit(1.2:3):no-space"),
    frame(1300, b"audit(1.2:3)no-colon"),
    frame(1300, b"audit(1.2:3): body\0\0\0"),  # NUL padding
    frame(1300, b"audit(1.2:3): body\n\0"),
    frame(1300, b"audit(1.2:3): body\x1dAUID=root\n"),  # enriched part
    frame(1420, 'audit(1.2:3): comm="é" path="/x\xff"'.encode("latin-1")),  # not UTF-8
    frame(1420, 'audit(1.2:3): comm="雪"'.encode()),
    frame(1300, b"audit(+1.2:3): sign"),  # int() reads it: the Python parser decides
    frame(1300, b"audit(1_0.2:3): underscore"),
    frame(1300, b"audit( 1.2:3): space"),
    frame(1300, b"audit(12345678901234567890.2:3): twenty digits"),
    frame(1300, b"audit(1.2): no serial"),
    frame(1300, b"audit(1.2:3 no close"),
    frame(1300, b"no stamp at all"),
    frame(1300, b""),
    frame(3, b"\0" * 4),  # NLMSG_DONE: control
    frame(1001, b"\0" * 40),  # an audit status reply: >= 1000, not stamped -> malformed
    frame(1300, b"audit(1.2:3): a") + frame(1300, b"audit(1.2:4): b"),  # two frames, one datagram
    _HDR.pack(4096, 1300, 0, 0, 0) + b"audit(1.2:3): truncated",  # nlmsg_len past the end
    _HDR.pack(8, 1300, 0, 0, 0) + b"audit(1.2:3): short",  # nlmsg_len below the header
    b"\1\2\3",  # shorter than a header: nothing
]


def test_odd_frames() -> None:
    records, stats = read_both(ODD)
    assert RawRecord(1420, 1700000000, 123, 42, 'ipe_op=EXECUTE comm="sh" rule="DEFAULT action=DENY"') in records
    assert RawRecord(1300, 1, 2, 3, "body") in records
    assert RawRecord(1300, 1, 2, 3, "no-space") in records
    assert RawRecord(1300, 1, 2, 4, "b") in records
    assert stats.control == 1 and stats.malformed >= 6


def test_many_datagrams_more_than_one_batch() -> None:
    datagrams = [frame(1420 + i % 3, f"audit(1700000000.{i % 1000:03d}:{i}): n={i}".encode()) for i in range(100)]
    records, stats = read_both(datagrams)
    assert [r.serial for r in records] == list(range(100))
    assert stats.frames == 100


def test_max_datagrams_is_honoured() -> None:
    ours, theirs = pair()
    with ours, theirs:
        src = NetlinkSource.over(ours)
        for i in range(40):
            theirs.send(frame(1300, f"audit(1.0:{i}): x".encode()))
        assert [r.serial for r in src.read(max_datagrams=25)] == list(range(25))
        assert [r.serial for r in src.read()] == list(range(25, 40))
        assert src.read() == []


_digits = st.text("0123456789", min_size=0, max_size=20) | st.sampled_from(["+1", "-1", "1_0", " 1", "٣", "0" * 19])
_body = st.binary(max_size=40) | st.text(max_size=20).map(lambda t: t.encode())


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    stamp = f"audit({draw(_digits)}.{draw(_digits)}:{draw(_digits)})".encode()
    sep = draw(st.sampled_from([b": ", b":", b"", b": \x1d"]))
    return stamp + sep + draw(_body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2000), payloads()), min_size=1, max_size=8))
def test_generated_payloads(frames: list[tuple[int, bytes]]) -> None:
    read_both([frame(rtype, payload) for rtype, payload in frames])


def test_bad_arguments() -> None:
    from iped.audit import _scan

    with pytest.raises(TypeError):
        _scan.recv_records(0, int, print, ValueError, True, 1, False)  # type: ignore[arg-type, type-var]
    with pytest.raises(OSError):
        _scan.recv_records(10_000, RawRecord, RawRecord, ValueError, True, 1, False)  # type: ignore[arg-type]


def test_runs_group_an_events_records() -> None:
    """read_runs: one list per event's back-to-back records up to its EOE; a repeated record,
    another stamp or an odd payload starts a new list; flattened, the records of read()."""

    def stamped(rtype: int, serial: int, body: str) -> bytes:
        return frame(rtype, f"audit(1.000:{serial}): {body}".encode())

    datagrams = [
        stamped(1420, 1, "a"), stamped(1300, 1, "b"), stamped(1320, 1, ""),
        stamped(1420, 2, "a"), stamped(1420, 2, "a"), stamped(1320, 2, ""),  # the same record twice
        stamped(1420, 3, "a"), stamped(1420, 4, "x"), stamped(1300, 3, "b"),  # interleaved events
        frame(1300, b"audit(+1.000:5): odd"), stamped(1320, 3, ""),
    ]  # fmt: skip
    ours, theirs = pair()
    with ours, theirs:
        src = NetlinkSource.over(ours)
        for d in datagrams:
            theirs.send(d)
        runs = src.read_runs()
    assert [[(r.type, r.serial) for r in run] for run in runs] == [
        [(1420, 1), (1300, 1), (1320, 1)],
        [(1420, 2)], [(1420, 2), (1320, 2)],
        [(1420, 3)], [(1420, 4)], [(1300, 3)], [(1300, 5)], [(1320, 3)],
    ]  # fmt: skip
    records, _ = read_both(datagrams)
    assert [r for run in runs for r in run] == records
