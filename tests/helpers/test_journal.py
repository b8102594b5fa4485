"""The journal export stream: one audit-transport entry per record (named as journald names the
type), and a kernel-transport entry after each that an audit reader must skip."""

from __future__ import annotations

from iped.audit.records import RawRecord
from tests.helpers.journal import export

RECORD = RawRecord(1420, 1700000000, 5, 42, "ipe_op=EXECUTE")


def test_one_audit_entry_and_one_kernel_entry_per_record() -> None:
    entries = export([RECORD], 1).split("\n\n")[:-1]
    assert len(entries) == 2
    audit, kernel = (dict(line.split("=", 1) for line in e.splitlines()) for e in entries)
    assert audit["_TRANSPORT"] == "audit" and audit["_AUDIT_ID"] == "42"
    assert audit["_SOURCE_REALTIME_TIMESTAMP"] == "1700000000005000"
    assert audit["MESSAGE"] == "IPE_ACCESS ipe_op=EXECUTE"
    assert kernel["_TRANSPORT"] == "kernel"


def test_numeric_names_as_older_systemd_writes_them() -> None:
    assert "MESSAGE=AUDIT1420 ipe_op=EXECUTE\n" in export([RECORD], 1, numeric_names=True)
