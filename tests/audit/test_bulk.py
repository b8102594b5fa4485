"""The bulk auditd-log path (iped.audit.bulk via iter_file_events) against the general record path,
with the C block scanner and with the Python one."""

from __future__ import annotations

from pathlib import Path

import pytest

from iped.audit import bulk
from iped.audit.files import iter_file, iter_file_events
from iped.audit.group import Event, Grouper
from iped.audit.records import Proctitle, Syscall, parse_typed

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True, params=["c", "python"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with each block scanner (the C one must be built: see test_bulk_scan)."""
    if request.param == "c":
        assert bulk.C_SCANNER_BUILT, "iped.audit._scan is not built"
    monkeypatch.setattr(bulk, "use_c_scanner", request.param == "c")
    return str(request.param)

SYSCALL = (
    "arch=c000003e syscall=59 success={ok} exit={exit} a0=55e a1=55f a2=560 a3=8 items=2 ppid=1 pid={pid} "
    "auid={auid} uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 "
    'comm={comm} exe="/usr/bin/bash" subj=unconfined key=(null)'
)


def _access(i: int, comm: str, path: str, dev: str, rule: str) -> str:
    return f"ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing={i % 2} pid={i} comm={comm} path={path} dev={dev} ino={i} rule={rule}"  # noqa: E501


def messy_lines() -> list[str]:
    """Access events in the kernel's shape (the bulk path's fast case) and every way to spoil them."""
    lines: list[str] = []
    tails: list[str] = []
    for i in range(240):
        stamp = f"{1700000000 + i // 6}.{i % 1000:03d}:{5000 + i + (i // 50) * 4}"  # some serial gaps
        atype = ("1420", "IPE_ACCESS", "UNKNOWN[1420]")[i % 3]
        comm = '"bash"' if i % 7 else "62617368"  # quoted or hex
        path = '"/usr/bin/tool"' if i % 5 else ("2F746D702F61206220" if i % 2 else "?")
        dev = '"vda1"' if i % 11 else "?"
        rule = '"DEFAULT action=DENY"' if i % 4 else '"op=EXECUTE fsverity_digest="sha256":AB12 action=ALLOW"'
        body = _access(i, comm, path, dev, rule)
        if i % 23 == 9:
            body = body.replace(f"pid={i}", "pid=?")  # not a number: the general parser decides
        if i % 29 == 3:
            body = body[: body.index(" rule=")] + ' rule="DEFAULT act'  # truncated rule
        sc = SYSCALL.format(
            ok="no" if i % 4 else "yes",
            exit=-13 if i % 4 else 0,
            pid=i,
            auid=4294967295 if i % 13 == 0 else 1000,
            comm='"bash"' if i % 9 else "6261207368",
        )
        if i % 31 == 5:
            sc = sc.replace("a0=", "per=400000 a0=")
        title = "proctitle=2F7573722F62696E2F746F6F6C002D2D68656C70" if i % 8 else 'proctitle="tool"'
        if i % 37 == 1:
            title = "proctitle=ZZ"  # not hex
        recs = [f"type={atype} msg=audit({stamp}): {body}", f"type=SYSCALL msg=audit({stamp}): {sc}"]
        if i % 6 == 2:
            recs.append(f'type=CWD msg=audit({stamp}): cwd="/root"')
            recs.append(f'type=PATH msg=audit({stamp}): item=0 name="/usr/bin/tool" inode={i}')
        if i % 43 == 7:
            recs.append(f"type=FOO msg=audit({stamp}): junk")  # a type name auditd never prints
        if i % 47 == 11:
            recs.append(f"type=UNKNOWN[1320] msg=audit({stamp}): ")  # an EOE in the middle
        if i % 41 == 13:
            recs.append(recs[1])  # the same record twice inside the event
        recs.append(f"type=PROCTITLE msg=audit({stamp}): {title}")
        if i % 17 != 4:
            recs.append(f"type=EOE msg=audit({stamp}): ")  # else: missing EOE
        if i % 19 == 6:
            recs = [recs[0]] + [f"node=h {r}" for r in recs[1:]]
        if i % 53 == 8:
            recs[1] = recs[1] + '\x1dARCH=x86_64 AUID="root"'  # auditd's enriched format
        if i % 59 == 10:
            recs[0] = recs[0][:60]  # truncated line
        if i % 14 == 0:
            lines.extend(recs)
            lines.extend(recs)  # the whole event twice
        elif i % 10 == 3 and lines:
            # interleave with the previous event's tail
            tails = recs[2:]
            lines.extend(recs[:2])
        else:
            lines.extend(recs)
            lines.extend(tails)
            tails = []
        if i % 27 == 0:
            lines.append("----")
        if i % 33 == 2:
            lines.append(f"type=USER_AUTH msg=audit({stamp}): pid=1 uid=0 msg='op=x'")
    lines.extend(tails)
    lines.append("type=EOE msg=audit(1700000999.000:1): ")  # spurious
    lines.append(f"type=1420 msg=audit(1700001000.000:9999): {_access(1, 'x', 'y', 'z', 'w')}")  # no newline
    return lines


def _general(path: Path, track: bool) -> tuple[list[Event], Grouper]:
    g = Grouper(2.0, track_gaps=track)
    return list(g.feed_many(iter_file(path))) + g.flush(), g


def _bulk(path: Path, track: bool) -> tuple[list[Event], Grouper]:
    g = Grouper(2.0, track_gaps=track)
    return list(iter_file_events(path, g)) + g.flush(), g


def _same(path: Path, track: bool) -> tuple[list[Event], int]:
    """Bulk events == general events (fields, typed views, counters); also returns how many
    events the bulk path built itself (typed view filled in)."""
    ours, g1 = _bulk(path, track)
    fast = sum("typed" in e.__dict__ for e in ours)
    ref, g2 = _general(path, track)
    assert [(e.sec, e.msec, e.serial, e.records, e.complete) for e in ours] == [
        (e.sec, e.msec, e.serial, e.records, e.complete) for e in ref
    ]
    assert ours == ref
    # typed views: filled in by the bulk path, computed from the records by the general one
    assert [e.typed for e in ours] == [e.typed for e in ref]
    for e in ours:
        assert e.typed == tuple(t for t in (parse_typed(r) for r in e.records) if t is not None)
    assert g1.stats == g2.stats
    return ours, fast


@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("block", [64, 4096, 1 << 20])
def test_bulk_matches_general_on_messy_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, track: bool, block: int
) -> None:
    monkeypatch.setattr(bulk, "BLOCK_SIZE", block)  # block boundaries inside events
    f = tmp_path / "audit.log"
    f.write_text("\n".join(messy_lines()))
    events, fast = _same(f, track)
    if block > 64:  # (64-byte reads give blocks of one line: no whole event in any of them)
        assert 60 < fast < len(events) - 60  # both the fast case and the general path ran
    assert any(not e.complete for e in events)


def test_bulk_matches_general_on_golden_logs(tmp_path: Path) -> None:
    for log in sorted(GOLDEN.glob("*.log")):
        for track in (False, True):
            _same(log, track)


def test_bulk_crlf_block_takes_general_path(tmp_path: Path) -> None:
    f = tmp_path / "audit.log"
    f.write_text("\r\n".join(messy_lines()[:200]) + "\r\n")
    _same(f, False)


def test_bulk_fast_event_fields(tmp_path: Path) -> None:
    sc = SYSCALL.format(ok="no", exit=-13, pid=9, auid=4294967295, comm="6261207368")
    body = _access(9, "62617368", "2F746D702F6120622E7368", "?", '"DEFAULT action=DENY"')
    f = tmp_path / "audit.log"
    with f.open("w") as fh:
        for stamp in ("1700000000.5:76", "1700000000.5:77"):  # (the first event of a file is checked slowly)
            fh.write(
                f"type=1420 msg=audit({stamp}): {body}\n"
                f"type=SYSCALL msg=audit({stamp}): {sc}\n"
                f"type=PROCTITLE msg=audit({stamp}): proctitle=2F62696E2F7368002D63\n"
                f"type=EOE msg=audit({stamp}): \n"
            )
    (_, event), fast = _same(f, False)
    assert fast == 1 and "typed" in event.__dict__
    access, syscall, title = event.typed
    assert access == ("EXECUTE", "BPRM_CHECK", True, 9, "bash", "/tmp/a b.sh", None, 9, "DEFAULT action=DENY")
    assert isinstance(syscall, Syscall) and isinstance(title, Proctitle)
    assert (syscall.comm, syscall.auid, syscall.uid, syscall.success) == ("ba sh", None, 1000, False)
    assert title.argv == ("/bin/sh", "-c")
