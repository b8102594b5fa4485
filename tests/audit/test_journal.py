"""The journald source on real journal files, read by systemd's own library.

There is no journald on this host (PID 1 is not systemd), so the journal is made the way
journald's own tooling makes one from a stream: ``systemd-journal-remote`` turns a journal
export (with the trusted fields journald-audit.c writes: ``_TRANSPORT=audit``,
``_AUDIT_TYPE``, ``_AUDIT_ID``, ``_SOURCE_REALTIME_TIMESTAMP``) into journal files, and
:class:`iped.audit.journal.JournalSource` reads the directory through
``systemd.journal.Reader`` -- its matches, seeks and cursors are libsystemd's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iped.audit.files import iter_file
from iped.audit.journal import CURSOR_FILE, JournalSource
from iped.audit.records import RawRecord
from tests.helpers.journal import BOOT_ID, JOURNAL_REMOTE, export, write_journal
from tests.helpers.paths import AUDIT_GOLDEN

GOLDEN_LOG = AUDIT_GOLDEN / "doc-examples.log"
IPE_TYPES = {1420, 1421, 1422, 1404}

if JOURNAL_REMOTE is None:  # packaging/dev.sh installs it
    pytest.fail("systemd-journal-remote is not installed: run packaging/dev.sh setup", pytrace=False)


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
    write_journal(journal, "a.journal", export(first, 1))

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
    write_journal(journal, "b.journal", export(later, 1000, numeric_names=True))
    resumed = JournalSource(state, path=str(journal))
    assert resumed.read() == [r for r in later if r.type in IPE_TYPES]
    assert resumed.read() == []
    resumed.close()


def test_without_a_cursor_starts_at_since_or_at_the_end(tmp_path: Path, records: list[RawRecord]) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    write_journal(journal, "a.journal", export(records, 1))
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
    write_journal(journal, "a.journal", export(records[:3], 1) + broken)
    src = JournalSource(None, since=0, path=str(journal))
    try:
        assert len(src.read()) == len([r for r in records[:3] if r.type in IPE_TYPES])
        assert src.unparsed == 1
    finally:
        src.close()
