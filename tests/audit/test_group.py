"""Grouping: EOE, timeouts driven by the ``now`` passed in, duplicates, reordering, interleaving, loss."""

from __future__ import annotations

import random
from pathlib import Path

from iped.audit.files import iter_file_events
from iped.audit.group import Event, Grouper
from iped.audit.records import RawRecord

ACCESS = 'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid={pid} comm="sh" path="/x" dev="vda1" ino=3 rule="DEFAULT action=DENY"'  # noqa: E501


def event_records(serial: int, sec: int = 100) -> list[RawRecord]:
    return [
        RawRecord(1420, sec, 5, serial, ACCESS.format(pid=serial)),
        RawRecord(
            1300, sec, 5, serial, f'arch=c000003e syscall=59 success=no exit=-13 pid={serial} comm="sh" exe="/bin/sh"'
        ),
        RawRecord(1327, sec, 5, serial, "proctitle=7368"),
        RawRecord(1320, sec, 5, serial, ""),
    ]


def feed_all(g: Grouper, recs: list[RawRecord], now: float = 0.0) -> list[Event]:
    out: list[Event] = []
    for r in recs:
        out.extend(g.feed(r, now))
    return out


def test_eoe_completes_event() -> None:
    g = Grouper()
    events = feed_all(g, event_records(7))
    assert len(events) == 1
    (e,) = events
    assert e.complete and e.serial == 7 and [r.type for r in e.records] == [1420, 1300, 1327]
    assert e.syscall is not None and e.syscall.exe == "/bin/sh"
    assert e.proctitle is not None and e.proctitle.argv == ("sh",)
    assert e.is_ipe


def test_interleaved_events() -> None:
    a, b = event_records(1), event_records(2)
    stream = [a[0], b[0], a[1], b[1], b[2], b[3], a[2], a[3]]
    events = feed_all(Grouper(), stream)
    assert [(e.serial, len(e.records), e.complete) for e in events] == [(2, 3, True), (1, 3, True)]


def test_timeout_by_now_not_wall_clock() -> None:
    g = Grouper(timeout=2.0)
    recs = event_records(3)[:2]  # no PROCTITLE, no EOE: a truncated event
    assert feed_all(g, recs, now=10.0) == []
    assert g.expire(11.9) == []
    assert g.deadline() == 12.0
    (e,) = g.expire(12.0)
    assert not e.complete and len(e.records) == 2
    assert g.stats.incomplete_events == 1
    # the EOE arriving after expiry is a duplicate of a done event, not a new one
    assert g.feed(event_records(3)[3], 12.5) == []
    assert g.stats.duplicates == 1


def test_feed_expires_old_events() -> None:
    g = Grouper(timeout=2.0)
    g.feed(event_records(1)[0], 0.0)
    out = g.feed(event_records(2)[0], 5.0)
    assert [e.serial for e in out] == [1]


def test_duplicates_dropped() -> None:
    # the same stream seen twice (kmsg + netlink, or two merged sources)
    recs = event_records(4)
    stream = [recs[0], recs[0], recs[1], recs[2], recs[1], recs[3], *recs]
    g = Grouper()
    events = feed_all(g, stream)
    assert len(events) == 1 and len(events[0].records) == 3
    assert g.stats.duplicates == 2 + 4


def test_spurious_eoe() -> None:
    g = Grouper()
    assert g.feed(RawRecord(1320, 1, 0, 99, ""), 0.0) == []
    assert g.stats.spurious_eoe == 1


def test_single_record_user_messages() -> None:
    (e,) = Grouper().feed(RawRecord(1100, 1, 0, 5, "pid=1 uid=0 msg='x'"), 0.0)
    assert e.complete and not e.is_ipe


def test_serial_gaps_counted_after_timeout() -> None:
    g = Grouper(timeout=2.0, track_gaps=True)
    feed_all(g, event_records(10), now=0.0)
    feed_all(g, event_records(15), now=0.5)  # 11..14 missing
    feed_all(g, event_records(12), now=1.0)  # 12 was only late
    assert g.stats.reordered == 1
    g.expire(2.4)  # missing since 0.5: not yet past the 2 s timeout
    assert g.stats.serial_gaps == 0
    g.expire(2.5)
    assert g.stats.serial_gaps == 3  # 11, 13, 14 never came


def test_serial_reset_is_not_loss() -> None:
    g = Grouper(timeout=1.0, track_gaps=True)
    feed_all(g, event_records(5_000_000), now=0.0)
    feed_all(g, event_records(3), now=0.1)  # reboot: serials restart
    g.expire(10.0)
    assert (g.stats.serial_gaps, g.stats.serial_resets) == (0, 1)


def test_reordered_stream_gives_same_events() -> None:
    # events interleave in any order; within one event the kernel keeps record order (EOE last)
    rng = random.Random(1420)
    queues = [event_records(s) for s in range(1, 41)]
    shuffled = []
    while queues:
        q = rng.choice(queues)
        shuffled.append(q.pop(0))
        if not q:
            queues.remove(q)
    g = Grouper(timeout=2.0, track_gaps=True)
    events = feed_all(g, shuffled) + g.flush()
    by_serial = {e.serial: e for e in events}
    assert sorted(by_serial) == list(range(1, 41))
    for e in by_serial.values():
        assert sorted(r.type for r in e.records) == [1300, 1327, 1420]
    g.expire(100.0)
    assert g.stats.serial_gaps == 0


def test_flush_in_stamp_order() -> None:
    g = Grouper()
    g.feed(event_records(9, sec=200)[0], 0.0)
    g.feed(event_records(8, sec=100)[0], 0.0)
    assert [e.serial for e in g.flush()] == [8, 9]


def test_done_stamps_are_forgotten_on_a_gapless_stream() -> None:
    """Complete events back to back with no gaps put nothing in flight; the done stamps (kept
    to drop late duplicates) must still be forgotten after ``done_ttl`` (they once piled up)."""
    g = Grouper(timeout=2.0, track_gaps=True, done_ttl=10.0)
    out: list[Event] = []
    for serial in range(1, 2001):  # 10 events a second for 200 s of record time
        recs = event_records(serial, sec=serial // 10)
        g.feed_run(out, recs[:3], recs[3], float(serial // 10))
    assert len(out) == 2000 and g.stats.events == 2000
    assert len(g._done) <= 2 * 10 * 10 + 10  # at most two ttl windows of stamps
    # a duplicate inside the window is still dropped
    recs = event_records(1995, sec=199)
    g.feed_run(out, recs[:3], recs[3], 200.0)
    assert len(out) == 2000 and g.stats.duplicates == 4  # (its four records)
    deadline = g.deadline()
    assert deadline is not None and deadline <= 200.0 + 10.0


def test_bulk_file_forgets_done_stamps(tmp_path: Path) -> None:
    """The same through iter_file_events on an auditd log of gapless access events."""
    f = tmp_path / "audit.log"
    with f.open("w") as fh:
        for serial in range(1, 3001):
            fh.writelines(r.to_log_line() + "\n" for r in event_records(serial, sec=serial // 10))
    g = Grouper(timeout=2.0, track_gaps=True, done_ttl=10.0)
    assert sum(1 for _ in iter_file_events(f, g)) == 3000
    assert len(g._done) <= 2 * 10 * 10 + 10


def test_live_grouper_keeps_at_most_done_max_stamps() -> None:
    """A live source's done stamps are bounded by ``done_max`` whatever the event rate (with the
    120 s ttl alone, a million events in that time kept a million stamps): through the follower's
    run path and through feed_many, the oldest are forgotten first, a duplicate of a recent event
    is still dropped, and one of a forgotten event is read as a new (incomplete) one."""
    for path in ("runs", "records"):
        g = Grouper(timeout=2.0, track_gaps=True, done_ttl=120.0, done_max=100)
        events: list[Event] = []
        for start in range(1, 2001, 50):  # 2000 events in one second, 50 per read
            batch = [event_records(serial, sec=1) for serial in range(start, start + 50)]
            if path == "runs":
                g.feed_ipe_runs([list(run) for run in batch], 1.0, events, [], [])
            else:
                events += g.feed_many([rec for run in batch for rec in run], 1.0)
            assert len(g._done) <= 125  # done_max and a quarter of slack
        assert len(events) == 2000 and len(g._done) >= 100
        dup = list(g.feed_many(event_records(1990, sec=1), 1.0))
        assert dup == [] and g.stats.duplicates == 4, path
        assert list(g.feed_many(event_records(1, sec=1)[:1], 1.0)) == []  # forgotten: a new event in flight
        assert [e.complete for e in g.expire(10.0)] == [False], path


def test_file_grouper_keeps_stamps_for_the_ttl() -> None:
    """Without done_max (files: the records' own time) only the ttl forgets a stamp."""
    g = Grouper(timeout=2.0, track_gaps=True, done_ttl=120.0)
    list(g.feed_many([rec for serial in range(1, 2001) for rec in event_records(serial, sec=1)], 1.0))
    assert len(g._done) == 2000


def test_file_grouper_with_done_max_keeps_at_most_that_many(tmp_path: Path) -> None:
    """``iped audit --source FILE``'s grouper (done_max set) keeps at most done_max stamps through
    the bulk path too, whose fast case adds stamps inline: 3000 events in one second kept 3000."""
    f = tmp_path / "audit.log"
    with f.open("w") as fh:
        for serial in range(1, 3001):
            fh.writelines(r.to_log_line() + "\n" for r in event_records(serial, sec=1))
    g = Grouper(timeout=2.0, track_gaps=True, done_ttl=120.0, done_max=100)
    n = 0
    for _ in iter_file_events(f, g):
        n += 1
        assert len(g._done) <= 125 + 2000  # (a block's worth of events between two checks)
    assert n == 3000 and 100 <= len(g._done) <= 125
