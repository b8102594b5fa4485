"""The daemon's follower: emulator source end to end, counters, Prometheus textfile, source choice."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from iped.audit.counters import AuditCounters, prometheus_text, write_textfile
from iped.audit.follow import EmulatorSource, Follower, make_follower
from iped.audit.group import Event
from iped.audit.records import IpeAccess, RawRecord
from iped.backend import EmulatorBackend
from iped.settings import AuditSettings, AuditSource
from tests.helpers.paths import AUDIT_GOLDEN

GOLDEN = AUDIT_GOLDEN


def emulator_with_policy() -> object:
    from iped.emulator import Emulator, KernelConfig

    return Emulator(config=KernelConfig(boot_policy=(GOLDEN / "policy.pol").read_bytes()))


def test_emulator_denial_to_event_with_policy_line(tmp_path: Path) -> None:
    from iped.emulator import FileInfo, Task

    emu = emulator_with_policy()
    settings = AuditSettings(source=AuditSource.AUTO, prometheus_textfile=tmp_path / "iped_audit.prom")
    follower = make_follower(settings, EmulatorBackend(emu, "the audit follower's test"))
    assert follower is not None and follower.source.name == "emulator"
    with pytest.raises(PermissionError):
        emu.bprm_check(FileInfo("/tmp/evil", "vda1", 5), Task(77, "sh"))  # type: ignore[attr-defined]
    emu.bprm_check(FileInfo("/init", "rootfs", 6, boot_verified=True), Task(78, "sh"))  # type: ignore[attr-defined]
    events = follower.on_timeout(100.0)
    events += follower.on_timeout(200.0)  # single records without EOE complete by timeout
    accesses = [r for e in events for r in e.ipe if isinstance(r, IpeAccess)]
    assert [(a.path, a.action) for a in accesses] == [("/tmp/evil", "DENY")]
    c = follower.counters()
    assert c["source"] == "emulator" and c["decisions"] == {"allow": 0, "deny": 1}
    assert c["rules"] == {"DEFAULT action=DENY": 1}
    prom = (tmp_path / "iped_audit.prom").read_text()
    assert 'iped_audit_decisions_total{op="EXECUTE",hook="BPRM_CHECK",action="DENY",enforcing="1"} 1' in prom
    assert not list(tmp_path.glob(".*.tmp"))
    follower.close()


def test_fd_less_source_asks_for_polling() -> None:
    follower = Follower(EmulatorSource(lambda: []), clock=lambda: 0.0)
    t = follower.timeout()
    assert t is not None and 0 < t <= 1.0
    assert follower.fileno() >= 0
    follower.close()


def test_stamped_emulator_payload_kept() -> None:
    src = EmulatorSource(
        lambda: [
            (
                1422,
                "audit(5.006:7): policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-129",
            )
        ]
    )
    assert src.read() == [
        RawRecord(1422, 5, 6, 7, "policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-129")
    ]
    src.close()


def test_audit_off() -> None:
    assert make_follower(AuditSettings(source=AuditSource.NONE)) is None


def test_counters_loads_and_lost(tmp_path: Path) -> None:
    c = AuditCounters()
    c.count(
        Event(
            1,
            0,
            1,
            (
                RawRecord(
                    1422,
                    1,
                    0,
                    1,
                    "policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-126",
                ),
            ),
            True,
        )
    )
    c.count(
        Event(
            1,
            0,
            2,
            (
                RawRecord(
                    1422,
                    1,
                    0,
                    2,
                    'policy_name="p" policy_version=1.0.0 policy_digest=sha256:00 auid=0 ses=1 lsm=ipe res=1 errno=0',
                ),
            ),
            True,
        )
    )
    c.enobufs = 3
    c.group.serial_gaps = 5
    c.unparsed = 2
    d = c.as_dict()
    assert d["loads"] == [
        {"result": "failed", "errno": 126, "errno_name": "ENOKEY", "count": 1},
        {"result": "loaded", "errno": 0, "errno_name": None, "count": 1},
    ]
    assert d["lost"] == {"enobufs": 3, "serial_gaps": 5, "unparsed": 2}
    text = prometheus_text(c)
    assert 'iped_audit_policy_loads_total{result="failed",errno="ENOKEY"} 1' in text
    assert 'iped_audit_lost_total{reason="enobufs"} 3' in text
    assert 'iped_audit_lost_total{reason="serial_gaps"} 5' in text
    assert 'iped_audit_lost_total{reason="unparsed"} 2' in text
    target = tmp_path / "m.prom"
    write_textfile(c, target)
    assert target.read_text() == text


_NLMSG = struct.Struct("=IHHII")


def _frame(rtype: int, payload: bytes) -> bytes:
    return _NLMSG.pack(_NLMSG.size + len(payload), rtype, 0, 0, 0) + payload


def _access_event(serial: int) -> list[bytes]:
    stamp = f"audit(1700000000.{serial % 1000:03d}:{serial}): ".encode()
    body = (
        f'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid={serial} comm="sh" path="/bin/ls" dev="vda1" '
        f'ino={serial} rule="DEFAULT action=DENY"'
    ).encode()
    return [_frame(1420, stamp + body), _frame(1327, stamp + b"proctitle=6C73"), _frame(1320, stamp)]


def test_netlink_follower_counts_what_it_cannot_read(tmp_path: Path) -> None:
    """Frames in the kernel's netlink framing over a real socketpair, through the follower's own
    path (NetlinkSource.read -> grouper -> counters): unreadable records and missing serials are
    counted, visible in counters() and the textfile, never skipped silently."""
    from iped.audit.follow import _Netlink
    from iped.audit.netlink import NetlinkSource

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    counters = AuditCounters()
    clock = [100.0]
    follower = Follower(
        _Netlink(counters, src=NetlinkSource.over(ours)),
        counters=counters,
        textfile=tmp_path / "m.prom",
        clock=lambda: clock[0],
    )
    with theirs:
        for frame in [*_access_event(10), *_access_event(11)]:
            theirs.send(frame)
        theirs.send(_frame(1420, b"ipe_op=EXECUTE no stamp"))  # unreadable: no audit( stamp
        theirs.send(_NLMSG.pack(4096, 1420, 0, 0, 0) + b"audit(1.0:1): cut")  # truncated: nlmsg_len > datagram
        for frame in _access_event(14):  # serials 12 and 13 never come
            theirs.send(frame)
        theirs.send(_frame(2, b"\0" * 20))  # NLMSG_ERROR: a control message, no record
        events = follower.on_readable()
    assert [e.serial for e in events] == [10, 11, 14]
    clock[0] = 200.0
    assert follower.on_timeout(200.0) == []  # the missing serials are now overdue
    c = follower.counters()
    assert c["events"] == 3 and c["decisions"] == {"allow": 0, "deny": 3}
    assert c["lost"] == {"enobufs": 0, "serial_gaps": 2, "unparsed": 2}
    assert c["foreign_frames"] == 0
    prom = (tmp_path / "m.prom").read_text()
    assert 'iped_audit_lost_total{reason="unparsed"} 2' in prom
    assert 'iped_audit_lost_total{reason="serial_gaps"} 2' in prom
    follower.close()


def test_metrics_file_follows_events_at_most_once_a_second(tmp_path: Path) -> None:
    from iped.audit.follow import _Netlink
    from iped.audit.netlink import NetlinkSource

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    counters = AuditCounters()
    clock = [10.0]
    prom = tmp_path / "m.prom"
    follower = Follower(_Netlink(counters, src=NetlinkSource.over(ours)), counters=counters, textfile=prom,
                        clock=lambda: clock[0])  # fmt: skip

    def written_events() -> int:
        line = next(x for x in prom.read_text().splitlines() if x.startswith("iped_audit_events_total "))
        return int(line.split()[1])

    with theirs:
        for serial, now in ((1, 10.0), (2, 10.5), (3, 11.2)):
            clock[0] = now
            for frame in _access_event(serial):
                theirs.send(frame)
            follower.on_readable()
            assert written_events() == {1: 1, 2: 1, 3: 3}[serial]  # the second event waits for 11.0
        clock[0] = 11.4
        for frame in _access_event(4):
            theirs.send(frame)
        follower.on_readable()
        assert written_events() == 3
        timeout = follower.timeout()
        assert timeout is not None and timeout == pytest.approx(0.8)  # the write that is due
        follower.on_timeout(12.2)
        assert written_events() == 4
    follower.close()


def _mixed_event(serial: int) -> list[bytes]:
    """The records of one event of a kind chosen by the serial: the follower's C path takes some
    kinds whole (a plain access event, an event with no IPE record) and leaves the rest to Python."""
    stamp = f"audit(1700000000.{serial % 1000:03d}:{serial}): ".encode()
    syscall = _frame(1300, stamp + f'arch=c000003e syscall=59 success=no exit=-13 pid={serial} comm="sh"'.encode())
    eoe = _frame(1320, stamp)
    kind = serial % 10
    if kind == 0:  # no IPE record: grouped, never returned
        return [_frame(1400, stamp + b'apparmor="DENIED" operation="exec"'), syscall, eoe]
    if kind == 1:
        body = b'policy_name="p" policy_version=1.0.0 policy_digest=sha256:00 auid=0 ses=1 lsm=ipe res=1 errno=0'
        return [_frame(1422, stamp + body), syscall, eoe]
    if kind == 2:  # IPE's enforce switch
        return [_frame(1404, stamp + b"enforcing=1 old_enforcing=0 auid=0 ses=1 enabled=1 old-enabled=1 lsm=ipe res=1"),
                eoe]  # fmt: skip
    if kind == 3:  # another LSM's
        return [_frame(1404, stamp + b"enforcing=1 old_enforcing=0 auid=0 ses=1 lsm=selinux res=1"), eoe]
    decision = (
        f'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid={serial} comm="sh" path="/bin/ls" dev="vda1" '
        f'ino={serial} rule="DEFAULT action=DENY"'
    )
    if kind == 4:  # a comm with a space is printed in hex, unquoted: Python reads it
        decision = decision.replace('comm="sh"', "comm=7368206C")
    if kind == 6:
        decision = decision.replace("enforcing=1", "enforcing=0").replace("action=DENY", "action=ALLOW")
    if kind == 7:
        body = (b'old_active_pol_name="a" old_active_pol_version=1.0.0 old_policy_digest=sha256:00 '
                b'new_active_pol_name="b" new_active_pol_version=1.0.1 new_policy_digest=sha256:11 auid=0 ses=1 '
                b"lsm=ipe res=1")  # fmt: skip
        return [_frame(1421, stamp + body), syscall, eoe]
    access = [_frame(1420, stamp + decision.encode()), _frame(1327, stamp + b"proctitle=6C73"), eoe]
    if kind == 5:  # two decisions in one event
        second = decision.replace("DEFAULT action=DENY", "op=EXECUTE boot_verified=TRUE action=ALLOW")
        access.insert(1, _frame(1420, stamp + second.encode()))
    return access


@pytest.mark.parametrize("c_grouping", [True, False], ids=["c", "python"])
def test_netlink_follower_mixed_stream_like_feed_and_count(monkeypatch: pytest.MonkeyPatch, c_grouping: bool) -> None:
    """Every kind of event the audit group carries, with records repeated, missing, reordered
    and interleaved: the follower (C grouping of whole events and one Counter.update for their
    1420s, or Python alone) returns the IPE events of Grouper.feed record by record, in order,
    with its grouper stats, and the counters of AuditCounters.count per IPE event."""
    from iped.audit import group
    from iped.audit.follow import _Netlink
    from iped.audit.group import Grouper
    from iped.audit.netlink import NetlinkSource

    taken = [0]
    if c_grouping:
        scan: Any = getattr(group, "_scan", None)
        assert scan is not None, "the C helper is built in the test environment"
        group_runs = scan.group_runs

        def counting(*args: Any) -> tuple[int, int | None, int, int]:
            stop, last, records, events = group_runs(*args)
            taken[0] += events
            return stop, last, records, events

        monkeypatch.setattr(scan, "group_runs", counting)
    else:
        monkeypatch.setattr(group, "_scan", None)
    frames: list[bytes] = []
    for serial in range(1, 400):
        if serial % 23 == 5:
            continue  # never sent: a serial gap
        event = _mixed_event(serial)
        if serial % 7 == 3:
            event.insert(1, event[0])  # a record twice
        if serial % 13 == 4:
            event = event[:-1]  # no EOE: flushed by the timeout
        if serial % 31 == 2:
            frames.extend(event[-1:])  # the EOE first: spurious, the records then time out
            event = event[:-1]
        if serial % 5 == 2 and frames:
            frames[-1:-1] = event  # interleaved before the previous event's last record
        else:
            frames.extend(event)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    counters = AuditCounters()
    follower = Follower(_Netlink(counters, src=NetlinkSource.over(ours)), counters=counters, clock=lambda: 50.0)
    got: list[Event] = []
    with theirs:
        for start in range(0, len(frames), 100):  # several reads, runs cut between them
            for frame in frames[start : start + 100]:
                theirs.send(frame)
            got += follower.on_readable()
        got += follower.on_timeout(100.0)
    reference = Grouper(2.0, track_gaps=True)
    parsed: list[RawRecord] = []
    spare, _ = socket.socketpair()
    with spare, _:
        for frame in frames:
            NetlinkSource.over(spare)._frames(frame, parsed)
    want = [e for e in [e for rec in parsed for e in reference.feed(rec, 50.0)] + reference.expire(100.0) if e.is_ipe]
    assert got == want
    assert follower.grouper.stats == reference.stats
    expected = AuditCounters(source="netlink", group=reference.stats)
    for ipe_event in want:
        expected.count(ipe_event)
    assert counters.as_dict() == expected.as_dict()
    assert prometheus_text(counters) == prometheus_text(expected)
    kinds = {e.records[0].type for e in got}
    assert {1420, 1421, 1422, 1404} <= kinds and counters.config_changes and counters.enforce_changes
    assert reference.stats.serial_gaps and reference.stats.duplicates and reference.stats.incomplete_events
    assert reference.stats.spurious_eoe
    assert counters.rules["op=EXECUTE boot_verified=TRUE action=ALLOW"] > 0  # (the events with two decisions)
    if c_grouping:
        assert 50 < taken[0] < reference.stats.events  # both paths ran: the C one took whole events
    follower.close()


def test_follower_memory_for_done_stamps_is_bounded() -> None:
    """However many events come within the grouper's 120 s ttl, the daemon's follower keeps at
    most DONE_MAX (and a quarter) stamps of completed events."""
    from iped.audit.follow import DONE_MAX, _Netlink
    from iped.audit.netlink import NetlinkSource

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    counters = AuditCounters()
    follower = Follower(_Netlink(counters, src=NetlinkSource.over(ours)), counters=counters, clock=lambda: 50.0)
    most = 0
    with theirs:
        for start in range(1, DONE_MAX * 2, 50):  # (150 datagrams a read: within the send buffer)
            for serial in range(start, start + 50):
                for frame in _access_event(serial):
                    theirs.send(frame)
            follower.on_readable()
            most = max(most, len(follower.grouper._done))
    assert counters.events >= DONE_MAX * 2 - 1
    assert DONE_MAX <= most <= DONE_MAX * 5 // 4
    follower.close()


def test_counters_keep_at_most_access_keys_max_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose every decision names another rule (one fsverity_digest= rule per file):
    through the follower's path (C grouping, count_accesses) and count() per event, the tallies
    stay within ACCESS_KEYS_MAX (and a quarter); the least-hit rules are folded by action, so
    the decisions and their total stay exact, and a rule hit often keeps its own count."""
    from iped.audit import counters as counters_module
    from iped.audit.follow import _Netlink
    from iped.audit.netlink import NetlinkSource

    monkeypatch.setattr(counters_module, "ACCESS_KEYS_MAX", 40)
    hot = 'op=EXECUTE fsverity_digest="sha256":' + "ab" * 32 + " action=ALLOW"

    def rule(serial: int) -> str:
        if serial % 4 == 0:
            return hot
        return f'op=EXECUTE fsverity_digest="sha256":{serial:064x} action={"DENY" if serial % 3 == 0 else "ALLOW"}'

    def event(serial: int) -> list[bytes]:
        stamp = f"audit(1700000000.{serial % 1000:03d}:{serial}): ".encode()
        body = (
            f'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid={serial} comm="sh" path="/bin/t{serial}" '
            f'dev="vda1" ino={serial} rule="{rule(serial)}"'
        ).encode()
        return [_frame(1420, stamp + body), _frame(1327, stamp + b"proctitle=6C73"), _frame(1320, stamp)]

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    counters = AuditCounters()
    follower = Follower(_Netlink(counters, src=NetlinkSource.over(ours)), counters=counters, clock=lambda: 50.0)
    one_by_one = AuditCounters()
    got: list[Event] = []
    with theirs:
        for start in range(1, 1001, 50):
            for serial in range(start, start + 50):
                for frame in event(serial):
                    theirs.send(frame)
            got += follower.on_readable()
            assert len(counters.accesses) <= 50, len(counters.accesses)
    for e in got:
        one_by_one.count(e)
        assert len(one_by_one.accesses) <= 50
    follower.close()
    assert len(got) == 1000
    deny = sum(1 for s in range(1, 1001) if rule(s).endswith("DENY"))
    for c in (counters, one_by_one):
        assert c.as_dict()["decisions"] == {"allow": 1000 - deny, "deny": deny}
        assert sum(c.rules.values()) == 1000
        assert c.rules[hot] == 250
        assert c.rules["(other rules) action=DENY"] > 0 and c.rules["(other rules) action=ALLOW"] > 0
