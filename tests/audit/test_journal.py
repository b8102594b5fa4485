"""The journald source on real journal files, read by systemd's own library.

There is no journald on this host (PID 1 is not systemd), so the journal is made the way
journald's own tooling makes one from a stream: ``systemd-journal-remote`` turns a journal
export (with the trusted fields journald-audit.c writes: ``_TRANSPORT=audit``,
``_AUDIT_TYPE``, ``_AUDIT_ID``, ``_SOURCE_REALTIME_TIMESTAMP``) into journal files, and
:class:`iped.audit.journal.JournalSource` reads the directory through
``systemd.journal.Reader`` -- its matches, seeks and cursors are libsystemd's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iped.audit.files import iter_file
from iped.audit.journal import CURSOR_FILE, JournalSource
from iped.audit.records import TYPE_NAMES, RawRecord

GOLDEN_LOG = Path(__file__).parent / "golden" / "doc-examples.log"
JOURNAL_REMOTE = next((p for p in (Path("/lib/systemd/systemd-journal-remote"),
                                   Path("/usr/lib/systemd/systemd-journal-remote")) if p.exists()), None)  # fmt: skip
BOOT_ID = "0123456789abcdef0123456789abcdef"
IPE_TYPES = {1420, 1421, 1422, 1404}

if JOURNAL_REMOTE is None:  # packaging/dev.sh installs it
    pytest.fail("systemd-journal-remote is not installed: run packaging/dev.sh setup", pytrace=False)


def _export(records: list[RawRecord], first: int, *, numeric_names: bool = False) -> str:
    """A journal export stream with one entry per record, as journald-audit.c stores them, and a
    kernel-transport entry between every two (which the source must not match)."""
    out = []
    for n, rec in enumerate(records, first):
        # (older systemd names types it does not know AUDIT1420)
        name = f"AUDIT{rec.type}" if numeric_names else TYPE_NAMES.get(rec.type, f"AUDIT{rec.type}")
        usec = rec.sec * 1_000_000 + rec.msec * 1000
        out.append(
            f"__REALTIME_TIMESTAMP={usec + 17}\n__MONOTONIC_TIMESTAMP={n * 1000}\n_BOOT_ID={BOOT_ID}\n"
            f"_TRANSPORT=audit\n_AUDIT_TYPE={rec.type}\n_AUDIT_ID={rec.serial}\n"
            f"_SOURCE_REALTIME_TIMESTAMP={usec}\nMESSAGE={name} {rec.body}\n\n"
            f"__REALTIME_TIMESTAMP={usec + 18}\n__MONOTONIC_TIMESTAMP={n * 1000 + 1}\n_BOOT_ID={BOOT_ID}\n"
            f"_TRANSPORT=kernel\nMESSAGE=audit: type={rec.type} noise\n\n"
        )
    return "".join(out)


def _write_journal(directory: Path, name: str, export: str) -> None:
    assert JOURNAL_REMOTE is not None
    src = directory.parent / f"{name}.export"
    src.write_text(export)
    subprocess.run([str(JOURNAL_REMOTE), f"--output={directory / name}", str(src)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip


@pytest.fixture
def records() -> list[RawRecord]:
    """Every record of the golden log (real kernel shapes: both 1422 forms, 1421, 1404...), in
    record-time order as journald would have received them."""
    recs = [r for r in iter_file(GOLDEN_LOG) if r.body]
    return sorted(recs, key=lambda r: (r.sec, r.msec, r.serial))


def test_reads_ipe_records_and_resumes_from_its_cursor(tmp_path: Path, records: list[RawRecord]) -> None:
    journal, state = tmp_path / "journal", tmp_path / "state"
    journal.mkdir()
    first, later = records[:-4], records[-4:]
    _write_journal(journal, "a.journal", _export(first, 1))

    source = JournalSource(state, since=0.0, path=str(journal))
    got = source.read()
    # only the IPE types (SYSCALL, PROCTITLE, EOE and kernel-transport entries are not matched),
    # with the stamp, serial and body journald kept
    assert got == [r for r in first if r.type in IPE_TYPES]
    assert len(got) > 10 and {r.type for r in got} == IPE_TYPES
    assert (state / CURSOR_FILE).read_text().startswith("s=")
    source.close()

    # a restart resumes after the last entry it handled: nothing twice
    again = JournalSource(state, path=str(journal))
    assert again.read() == []
    again.close()

    # records that arrived meanwhile (another journal file, numeric type names), read once
    _write_journal(journal, "b.journal", _export(later, 1000, numeric_names=True))
    resumed = JournalSource(state, path=str(journal))
    assert resumed.read() == [r for r in later if r.type in IPE_TYPES]
    assert resumed.read() == []
    resumed.close()


def test_without_a_cursor_starts_at_since_or_at_the_end(tmp_path: Path, records: list[RawRecord]) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    _write_journal(journal, "a.journal", _export(records, 1))
    ipe = [r for r in records if r.type in IPE_TYPES]
    cut = ipe[len(ipe) // 2]

    since = JournalSource(None, since=cut.sec + cut.msec / 1000, path=str(journal))
    assert since.read() == [r for r in ipe if (r.sec, r.msec) >= (cut.sec, cut.msec)]
    since.close()

    tail = JournalSource(None, path=str(journal))  # no cursor, no since: only what comes next
    assert tail.read() == []
    tail.close()


def test_unreadable_entries_are_counted(tmp_path: Path, records: list[RawRecord]) -> None:
    """An audit-transport entry without its audit id is not a record: counted, not skipped silently."""
    journal = tmp_path / "journal"
    journal.mkdir()
    broken = (
        f"__REALTIME_TIMESTAMP=1700000000000017\n__MONOTONIC_TIMESTAMP=999999\n_BOOT_ID={BOOT_ID}\n"
        "_TRANSPORT=audit\n_AUDIT_TYPE=1420\nMESSAGE=IPE_ACCESS ipe_op=EXECUTE no audit id\n\n"
    )
    _write_journal(journal, "a.journal", _export(records[:3], 1) + broken)
    src = JournalSource(None, since=0, path=str(journal))
    try:
        assert len(src.read()) == len([r for r in records[:3] if r.type in IPE_TYPES])
        assert src.unparsed == 1
    finally:
        src.close()
