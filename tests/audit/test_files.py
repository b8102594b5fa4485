"""Offline readers: auditd/ausearch/kmsg lines, journal export streams, journal entries and the cursor file."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from iped.audit.files import iter_export, iter_file
from iped.audit.group import Event
from iped.audit.journal import CursorStore, record_from_entry
from iped.audit.records import RawRecord

BODY = 'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=5 comm="sh" path="/x" dev="vda1" ino=2 rule="DEFAULT action=DENY"'  # noqa: E501


def test_ausearch_raw_and_junk(tmp_path: Path) -> None:
    f = tmp_path / "audit.log"
    f.write_text(
        "----\n"
        f"type=IPE_ACCESS msg=audit(1700000000.123:42): {BODY}\n"
        "this is not audit\n"
        "type=1420 msg=audit(17000\n"  # truncated line
        "type=EOE msg=audit(1700000000.123:42): \n"
    )
    assert list(iter_file(f)) == [RawRecord(1420, 1700000000, 123, 42, BODY), RawRecord(1320, 1700000000, 123, 42, "")]


def _export_entry(fields: dict[str, bytes], binary: set[str] = frozenset()) -> bytes:  # type: ignore[assignment]
    out = b""
    for k, v in fields.items():
        if k in binary:
            out += k.encode() + b"\n" + struct.pack("<Q", len(v)) + v + b"\n"
        else:
            out += k.encode() + b"=" + v + b"\n"
    return out + b"\n"


def test_journal_export(tmp_path: Path) -> None:
    audit = {
        "__CURSOR": b"s=1;i=1",
        "__REALTIME_TIMESTAMP": b"1700000000999999",
        "_TRANSPORT": b"audit",
        "_SOURCE_REALTIME_TIMESTAMP": b"1700000000123000",
        "_AUDIT_TYPE": b"1420",
        "_AUDIT_ID": b"42",
        "MESSAGE": b"AUDIT1420 " + BODY.encode(),
    }
    kmsg = {
        "__CURSOR": b"s=1;i=2",
        "_TRANSPORT": b"kernel",
        "SYSLOG_FACILITY": b"0",  # the kernel's own printk (a /dev/kmsg write by userspace is not 0)
        "MESSAGE": b"audit: type=1422 audit(1700000001.000:43): policy_name=? res=0 errno=-74",
    }
    other = {"__CURSOR": b"s=1;i=3", "_TRANSPORT": b"stdout", "MESSAGE": b"hello"}
    data = _export_entry(audit, binary={"MESSAGE"}) + _export_entry(kmsg) + _export_entry(other)
    recs = list(iter_export(io.BytesIO(data)))
    assert recs == [
        RawRecord(1420, 1700000000, 123, 42, BODY),
        RawRecord(1422, 1700000001, 0, 43, "policy_name=? res=0 errno=-74"),
    ]
    f = tmp_path / "export"
    f.write_bytes(data)
    assert list(iter_file(f)) == recs


def test_record_from_reader_entry() -> None:
    import datetime

    stamp = datetime.datetime.fromtimestamp(1700000000.5, tz=datetime.UTC)
    entry = {
        "_AUDIT_TYPE": 1422,
        "_AUDIT_ID": 9,
        "MESSAGE": "IPE_POLICY_LOAD policy_name=? res=0",
        "_SOURCE_REALTIME_TIMESTAMP": stamp,
    }
    assert record_from_entry(entry) == RawRecord(1422, 1700000000, 500, 9, "policy_name=? res=0")


def test_cursor_store_atomic(tmp_path: Path) -> None:
    store = CursorStore(tmp_path / "state")
    assert store.load() is None
    store.save("s=abc;i=1")
    store.save("s=abc;i=2")
    assert store.load() == "s=abc;i=2"
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["audit-journal.cursor"]


def _events(events: list[Event]) -> list[tuple[object, ...]]:
    return [(e.sec, e.msec, e.serial, e.records, e.complete) for e in events]


def test_fused_file_path_matches_record_path(tmp_path: Path) -> None:
    """iter_file_events (the fused fast path) gives the events and counters of feed_many(iter_file)."""
    from iped.audit.files import iter_file_events
    from iped.audit.group import Grouper

    sc = 'arch=c000003e syscall=59 success=no exit=-13 a0=1 a1=2 a2=3 a3=4 items=1 ppid=1 pid=5 auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=1 comm="sh" exe="/bin/sh" key=(null)'  # noqa: E501
    lines = []
    for i in range(60):
        stamp = f"17000000{i // 7:02d}.{i % 1000:03d}:{100 + i + (i // 20) * 3}"
        recs = [f"type=IPE_ACCESS msg=audit({stamp}): {BODY}", f"type=SYSCALL msg=audit({stamp}): {sc}"]
        if i % 11 == 3:
            recs.append(recs[0])  # the same record twice
        if i % 13 != 5:
            recs.append(f"type=EOE msg=audit({stamp}):" + (" " if i % 2 else ""))  # some without the space
        if i % 9 == 4:
            recs.insert(0, "----")
        if i % 17 == 2:
            recs = [f"node=h{i} {r}" for r in recs]
        if i % 19 == 7:
            recs.append(f"type=USER_AUTH msg=audit({stamp}): pid=1 uid=0 msg='op=x'")
        lines.extend(recs)
    # interleave two events, a stray EOE, junk, a CRLF line and an enriched one
    lines[10:10] = [lines[20], "garbage line", "type=EOE msg=audit(1700000099.000:9): "]
    lines.append(f"type=IPE_ACCESS msg=audit(1700000099.500:999): {BODY}\r")
    lines.append(f'type=SYSCALL msg=audit(1700000099.500:999): {sc}\x1dUID="root"')
    f = tmp_path / "audit.log"
    f.write_text("\n".join(lines) + "\n")
    for track in (False, True):
        g1, g2 = Grouper(2.0, track_gaps=track), Grouper(2.0, track_gaps=track)
        fused = list(iter_file_events(f, g1)) + g1.flush()
        plain = list(g2.feed_many(iter_file(f))) + g2.flush()
        assert _events(fused) == _events(plain)
        assert g1.stats == g2.stats
        assert g1.stats.duplicates and g1.stats.incomplete_events
