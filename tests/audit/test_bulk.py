"""The bulk auditd-log path (iped.audit.bulk via iter_file_events) against the general record path,
with the C block scanner and with the Python one."""

from __future__ import annotations

from pathlib import Path

import pytest

from iped.audit import bulk
from iped.audit.files import iter_file, iter_file_events
from iped.audit.group import Event, Grouper
from iped.audit.records import Proctitle, Syscall, parse_typed
from tests.helpers.paths import AUDIT_GOLDEN
from tests.helpers.records import SYSCALL, access_body, messy_lines

GOLDEN = AUDIT_GOLDEN


@pytest.fixture(autouse=True, params=["c", "python"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with each block scanner (the C one must be built: see test_bulk_scan)."""
    if request.param == "c":
        assert bulk.C_SCANNER_BUILT, "iped.audit._scan is not built"
    monkeypatch.setattr(bulk, "use_c_scanner", request.param == "c")
    return str(request.param)

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
    body = access_body(9, "62617368", "2F746D702F6120622E7368", "?", '"DEFAULT action=DENY"')
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
