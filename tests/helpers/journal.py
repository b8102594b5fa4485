"""Real journal files without a journald: audit records as journald-audit.c stores them, written
into journal files by ``systemd-journal-remote`` (journald's own tooling)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from iped.audit.records import TYPE_NAMES, RawRecord

#: None when systemd-journal-remote is not installed (packaging/dev.sh installs it)
JOURNAL_REMOTE = next((p for p in (Path("/lib/systemd/systemd-journal-remote"),
                                   Path("/usr/lib/systemd/systemd-journal-remote")) if p.exists()), None)  # fmt: skip
BOOT_ID = "0123456789abcdef0123456789abcdef"


def export(records: list[RawRecord], first: int, *, numeric_names: bool = False) -> str:
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


def write_journal(directory: Path, name: str, stream: str) -> None:
    """``directory/name``: a journal file holding the export ``stream``."""
    assert JOURNAL_REMOTE is not None
    src = directory.parent / f"{name}.export"
    src.write_text(stream)
    subprocess.run([str(JOURNAL_REMOTE), f"--output={directory / name}", str(src)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
