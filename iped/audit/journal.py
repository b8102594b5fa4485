"""journald as an audit source (systemd journald-audit.c writes one entry per record).

journald stores ``_TRANSPORT=audit``, ``_AUDIT_TYPE=<n>``, ``_AUDIT_ID=<serial>``,
``_SOURCE_REALTIME_TIMESTAMP`` (the audit stamp in µs) and ``MESSAGE=<TYPE_NAME> <body>``.
Matching is on the number: older systemd prints unknown types as ``AUDIT1420``.

The read position is a journal cursor saved atomically in the state directory after each
batch, so a restarted follower resumes right after the last entry it handled: no duplicates,
nothing skipped. The journal filters by type, so serial gaps are expected here and are not
tracked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iped.audit.records import (
    AUDIT_IPE_ACCESS,
    AUDIT_IPE_CONFIG_CHANGE,
    AUDIT_IPE_POLICY_LOAD,
    AUDIT_MAC_STATUS,
    RawRecord,
    RecordError,
)
from iped.fsutil import write_atomically

JOURNAL_TYPES = (AUDIT_IPE_ACCESS, AUDIT_IPE_CONFIG_CHANGE, AUDIT_IPE_POLICY_LOAD, AUDIT_MAC_STATUS)
CURSOR_FILE = "audit-journal.cursor"


def record_from_entry(entry: Mapping[str, Any]) -> RawRecord:
    """A journal entry (values as systemd.journal.Reader or an export file gives them) -> RawRecord.

    Raises RecordError when the entry is not an audit-transport record.
    """
    try:
        rtype = int(entry["_AUDIT_TYPE"])
        serial = int(entry["_AUDIT_ID"])
        message = entry["MESSAGE"]
    except (KeyError, ValueError, TypeError) as exc:
        raise RecordError("not an audit journal entry") from exc
    if isinstance(message, bytes):
        message = message.decode("utf-8", "backslashreplace")
    stamp: Any = entry.get("_SOURCE_REALTIME_TIMESTAMP") or entry.get("__REALTIME_TIMESTAMP")
    if stamp is not None and hasattr(stamp, "timestamp"):  # Reader converts timestamps to datetime
        usec = round(stamp.timestamp() * 1_000_000)
    else:
        try:
            usec = int(stamp) if stamp is not None else 0
        except (TypeError, ValueError) as exc:
            raise RecordError("bad timestamp") from exc
    _, _, body = str(message).partition(" ")
    return RawRecord(rtype, usec // 1_000_000, (usec // 1000) % 1000, serial, body)


class CursorStore:
    """The saved journal cursor: one file, replaced atomically (write temp, fsync, rename)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CURSOR_FILE

    def load(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def save(self, cursor: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, cursor + "\n")


class JournalSource:
    """Follow IPE records in the system journal; :meth:`fileno` goes into the selector.

    ``since`` (a UNIX time) starts there when there is no saved cursor; with neither, reading
    starts at the end (only new records). ``state_dir=None`` keeps no cursor.
    """

    def __init__(self, state_dir: Path | None = None, since: float | None = None, path: str | None = None,
                 files: list[str] | None = None) -> None:
        import importlib

        journal: Any = importlib.import_module("systemd.journal")
        self._journal = journal
        if files:  # journal files of one host in a collector's directory (systemd-journal-remote)
            self._reader = journal.Reader(files=files)
        else:
            self._reader = journal.Reader(path=path) if path else journal.Reader(flags=journal.SYSTEM_ONLY)
        for rtype in JOURNAL_TYPES:
            self._reader.add_match(_TRANSPORT="audit", _AUDIT_TYPE=str(rtype))
        self._cursor = CursorStore(state_dir) if state_dir is not None else None
        self.entries = 0
        #: entries matched but not readable as records (counted, never silently skipped)
        self.unparsed = 0
        saved = self._cursor.load() if self._cursor is not None else None
        if saved is not None:
            try:
                self._reader.seek_cursor(saved)
                # seek_cursor lands on the saved entry itself: skip it, it was handled
                self._reader.get_next()
            except OSError:
                saved = None
        if saved is None:
            if since is not None:
                import datetime

                self._reader.seek_realtime(datetime.datetime.fromtimestamp(since, tz=datetime.UTC))
            else:
                self._reader.seek_tail()
                self._reader.get_previous()

    def fileno(self) -> int:
        fd: int = self._reader.fileno()
        return fd

    def timeout(self) -> float | None:
        """Seconds until the journal wants to be polled even without fd activity (or None)."""
        ms: int = self._reader.get_timeout_ms()
        return None if ms < 0 else ms / 1000.0

    def close(self) -> None:
        self._reader.close()

    def read(self) -> list[RawRecord]:
        """New records since the last call; the cursor is saved after the batch."""
        with contextlib.suppress(OSError):
            self._reader.process()
        out: list[RawRecord] = []
        cursor = None
        while True:
            entry = self._reader.get_next()
            if not entry:
                break
            cursor = entry.get("__CURSOR", cursor)
            self.entries += 1
            try:
                out.append(record_from_entry(entry))
            except RecordError:
                self.unparsed += 1
        if cursor is not None and self._cursor is not None:
            self._cursor.save(cursor)
        return out
