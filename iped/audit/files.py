"""Offline sources: an auditd log (raw or ``ausearch --raw``), kmsg lines, a journal export.

* auditd log: ``[node=H ]type=NAME msg=audit(S.MS:N): body`` per line (names or numbers,
  ``UNKNOWN[1420]`` for types auditd does not know); ``ausearch --raw`` prints the same lines,
  separating events with ``----`` lines that are skipped.
* kmsg / dmesg: ``audit: type=1420 audit(S.MS:N): body`` (what the kernel prints when no
  audit daemon listens).
* ``journalctl -o export``: ``KEY=value`` lines, binary fields as ``KEY\\n<le64 size><data>\\n``,
  a blank line between entries. Audit-transport entries become records; kernel-transport
  entries carrying kmsg audit lines are parsed as such.

The format is detected from the first bytes (an export starts with ``__CURSOR=``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from iped.audit.journal import record_from_entry
from iped.audit.records import RawRecord, RecordError, parse_log_line, type_number

#: one auditd log line; findall() over a whole chunk does the splitting in C
_LOG_LINE = re.compile(r"^(?:node=\S+ )?type=(\S+) msg=audit\((\d+\.\d+:\d+)\): ?([^\n\x1d]*)", re.M)
_CHUNK = 1 << 20


def iter_log_text(text: str) -> Iterator[RawRecord]:
    """Records from auditd log text (fast path: a regex over the whole text, stamps cached).

    Lines that do not look like auditd lines (kmsg, junk) are skipped; use :func:`iter_log_lines`
    for mixed input. Enriched fields after ``\\x1d`` are dropped.
    """
    types: dict[str, int] = {}
    last_stamp = ""
    sec = msec = serial = 0
    new = tuple.__new__
    for name, stamp, body in _LOG_LINE.findall(text):
        rtype = types.get(name)
        if rtype is None:
            try:
                rtype = types[name] = type_number(name)
            except RecordError:
                continue
        if stamp != last_stamp:
            # records of one event share the stamp: convert it once per event
            secms, _, ser = stamp.partition(":")
            s, _, ms = secms.partition(".")
            sec, msec, serial, last_stamp = int(s), int(ms), int(ser), stamp
        yield new(RawRecord, (rtype, sec, msec, serial, body.rstrip("\r")))


def iter_log_lines(lines: Iterable[str]) -> Iterator[RawRecord]:
    """Records from auditd/ausearch/kmsg text lines; other lines are skipped."""
    for line in lines:
        if "type=" not in line:
            continue
        try:
            yield parse_log_line(line.rstrip("\n"))
        except RecordError:
            continue


def iter_export(fh: BinaryIO) -> Iterator[RawRecord]:
    """Records from a ``journalctl -o export`` stream."""
    entry: dict[str, bytes] = {}
    while True:
        line = fh.readline()
        if not line or line == b"\n":
            if entry:
                rec = _export_record(entry)
                if rec is not None:
                    yield rec
                entry = {}
            if not line:
                return
            continue
        line = line.rstrip(b"\n")
        key, eq, value = line.partition(b"=")
        if not eq:
            (size,) = struct.unpack("<Q", fh.read(8))
            value = fh.read(size)
            fh.read(1)  # trailing newline
        entry[key.decode("ascii", "replace")] = value


def _export_record(entry: dict[str, bytes]) -> RawRecord | None:
    transport = entry.get("_TRANSPORT")
    if transport == b"audit":
        try:
            return record_from_entry({k: v.decode("utf-8", "backslashreplace") for k, v in entry.items()})
        except RecordError:
            return None
    message = entry.get("MESSAGE", b"")
    if transport == b"kernel" and b"audit(" in message and b"type=" in message:
        try:
            return parse_log_line(message.decode("utf-8", "backslashreplace"))
        except RecordError:
            return None
    return None


def iter_file(path: str | Path) -> Iterator[RawRecord]:
    """Records from a file of any supported format (``-`` is not special here)."""
    with open(path, "rb") as fh:
        head = fh.peek(16)[:16] if hasattr(fh, "peek") else b""
        if head.startswith(b"__CURSOR=") or head.startswith(b"__SEQNUM"):
            yield from iter_export(fh)
            return
        if head.startswith((b"type=", b"node=")):
            # auditd log / ausearch --raw: the regex fast path, a chunk of whole lines at a time
            rest = b""
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                cut = chunk.rfind(b"\n") + 1
                if not cut:
                    rest += chunk
                    continue
                block, rest = rest + chunk[:cut], chunk[cut:]
                yield from iter_log_text(block.decode("utf-8", "backslashreplace"))
            if rest:
                yield from iter_log_text(rest.decode("utf-8", "backslashreplace"))
            return
        for raw in fh:
            if b"type=" not in raw:
                continue
            try:
                yield parse_log_line(raw.decode("utf-8", "backslashreplace").rstrip("\n"))
            except RecordError:
                continue
