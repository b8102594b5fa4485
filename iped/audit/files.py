"""Offline sources: an auditd log (raw or ``ausearch --raw``), kmsg lines, a journal export.

* auditd log: ``[node=H ]type=NAME msg=audit(S.MS:N): body`` per line (names or numbers,
  ``UNKNOWN[1420]`` for types auditd does not know); ``ausearch --raw`` prints the same lines,
  separating events with ``----`` lines that are skipped.
* kmsg with its facility: ``audit: type=1420 audit(S.MS:N): body`` (what the kernel prints when
  no audit daemon listens) in a ``/dev/kmsg`` record, ``dmesg -r`` or ``dmesg -x`` line whose
  facility is the kernel's.
* ``journalctl -o export``: ``KEY=value`` lines, binary fields as ``KEY\\n<le64 size><data>\\n``,
  a blank line between entries. Audit-transport entries become records; kernel-transport
  entries with ``SYSLOG_FACILITY=0`` carrying kmsg audit lines are parsed as such.

Only forms whose writer is proven to be the kernel (or auditd) become records. Lines that look
like records but cannot prove it -- syslog files (rsyslog writes whatever tag a client gives:
``logger -t kernel 'type=1420 ...'``), plain ``dmesg``, journal entries of other transports or
facilities -- are counted in :class:`Unproven`, never read as the kernel's (docs/audit.md).

The format is detected from the first bytes (an export starts with ``__CURSOR=``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import BinaryIO

from iped.audit.bulk import BLOCK_SIZE, iter_block
from iped.audit.group import Event, Grouper
from iped.audit.journal import record_from_entry
from iped.audit.records import (
    AUDIT_EOE,
    RawRecord,
    RecordError,
    auditd_line,
    parse_kmsg_message,
    parse_log_line,
    parse_unproven_line,
    stamp_in_range,
    type_number,
)

_CHUNK = 1 << 20


@dataclass
class Unproven:
    """Lines of a source that look like audit records but whose writer cannot be proven to be the
    kernel: counted, not read. ``first`` is the first of them (for the note)."""

    lines: int = 0
    first: str | None = None

    def add(self, line: str) -> None:
        self.lines += 1
        if self.first is None:
            self.first = line[:200]

    def note(self, source: str) -> str:
        """The one-line note for stderr (the caller escapes it)."""
        return (f"{source}: {self.lines} line(s) that look like audit records were not read: nothing proves "
                "the kernel wrote them (syslog lines and plain dmesg carry no facility; any local user can "
                "log 'kernel: type=1420 ...' with logger). Read the auditd log, the journal (--source journal), "
                f"'dmesg -r' or 'journalctl -o export' instead; first: {self.first!r}")


def iter_log_text(text: str) -> Iterator[RawRecord]:
    """Records from auditd log text: ``[node=H ]type=NAME msg=audit(S.MS:N):[ ]body`` lines.

    Lines that do not look like auditd lines (kmsg, ``----``, junk) are skipped. Enriched fields
    after ``\\x1d`` are dropped and a trailing ``\\r`` is removed.
    """
    return _log_records(text.split("\n"), "\r" in text or "\x1d" in text)


def _log_records(lines: Iterable[str], strip: bool) -> Iterator[RawRecord]:
    """:func:`iter_log_text` on the text's lines; ``strip``: the text has ``\\r`` or ``\\x1d``.

    One ``split(" ", 2)`` per line into ``type=NAME``, ``msg=audit(S.MS:N):`` and the body (a
    regex over the text spent most of its time scanning bodies character by character). Type
    tokens are looked up in a cache and a stamp is checked and converted once per event.
    Other shapes (``node=``, no space after the colon) take :func:`iped.audit.records.auditd_line`.
    """
    types: dict[str, int] = {}
    last = "\n"  # the previous stamp token; never a real one (lines have no newline)
    sec = msec = serial = 0
    new = tuple.__new__
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) == 3:
            tname, stok, body = parts
            rtype = types.get(tname)
            if rtype is None and tname.startswith("type="):
                try:
                    rtype = types[tname] = type_number(tname[5:])
                except RecordError:
                    continue
            if rtype is not None:
                if stok != last:
                    # records of one event share the stamp: check and convert it once per event
                    if not (stok.startswith("msg=audit(") and stok.endswith("):")):
                        last = "\n"
                        rec = auditd_line(line)
                        if rec is not None:
                            yield rec
                        continue
                    secms, _, ser = stok[10:-2].partition(":")
                    s, _, ms = secms.partition(".")
                    if not (s.isdecimal() and ms.isdecimal() and ser.isdecimal() and stamp_in_range(s, ms, ser)):
                        last = "\n"
                        continue
                    sec, msec, serial, last = int(s), int(ms), int(ser), stok
                if strip:
                    body = body.partition("\x1d")[0].rstrip("\r")
                yield new(RawRecord, (rtype, sec, msec, serial, body))
                continue
        if line.startswith(("type=", "node=")):
            last = "\n"
            rec = auditd_line(line)
            if rec is not None:
                yield rec


def _read_log_blocks(fh: BinaryIO, size: int = _CHUNK) -> Iterator[str]:
    """Decoded blocks of whole lines (the last one may lack its newline).

    A line longer than a chunk is collected in a list and joined once (``bytes +=`` per chunk
    copied quadratically: 11 s for a 60 MB line without newline).
    """
    rest: list[bytes] = []
    while True:
        chunk = fh.read(size)
        if not chunk:
            break
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            rest.append(chunk)
            continue
        rest.append(chunk[:cut])
        block = b"".join(rest)
        rest = [chunk[cut:]]
        yield block.decode("utf-8", "backslashreplace")
    if any(rest):
        yield b"".join(rest).decode("utf-8", "backslashreplace")


def _feed_lines(grouper: Grouper, lines: list[str], out: list[Event], strip: bool) -> None:
    """Group auditd log lines, appending the events to ``out``: :func:`_log_records` fused with
    :meth:`Grouper.feed_many` (the same events, counters and order; ``now`` is each record's
    second). ``strip``: the text has ``\\r`` or ``\\x1d``.

    Consecutive records with one stamp (how auditd writes an event) are collected into a run
    and handed to :meth:`Grouper.feed_run` at their EOE, so the grouper's bookkeeping runs
    once per event instead of once per record (``feed_run`` is ``feed_into`` per record in
    its effects, so where a run is cut changes nothing but the speed).
    """
    eoe_type = AUDIT_EOE
    feed_run = grouper.feed_run
    run: list[RawRecord] = []
    sec = msec = serial = -1  # the run's stamp; never a real one
    for rec in _log_records(lines, strip):
        if rec[3] != serial or rec[1] != sec or rec[2] != msec:
            if run:
                feed_run(out, run, None, sec)
                run = []
            _, sec, msec, serial, _ = rec
        if rec[0] == eoe_type:
            feed_run(out, run, rec, sec)
            run = []
        elif rec in run:  # a duplicate: let the grouper count it
            feed_run(out, run, None, sec)
            run = [rec]
        else:
            run.append(rec)
    if run:
        feed_run(out, run, None, sec)


def iter_file_events(path: str | Path, grouper: Grouper, unproven: Unproven | None = None) -> Iterator[Event]:
    """Events of a file of any supported format, grouped by ``grouper`` on record time.

    The same events as ``grouper.feed_many(iter_file(path))``; auditd logs take the bulk
    path (:mod:`iped.audit.bulk`: IPE access events found whole by the block scanner, every
    other line through the fused line path of :func:`_feed_lines`), handed out through
    ``itertools.chain`` so that no Python frame runs per event between the bulk path's lists
    and the consumer. The file is opened (and its format detected) by this call. Call
    ``grouper.flush()`` at the end for the events still in flight. Lines not proven to be the
    kernel's are counted in ``unproven``.
    """
    with open(path, "rb") as fh:
        head = fh.peek(16)[:16] if hasattr(fh, "peek") else b""
    if not head.startswith((b"type=", b"node=")):
        return grouper.feed_many(iter_file(path, unproven))
    return chain.from_iterable(_log_event_lists(path, grouper))


def _log_event_lists(path: str | Path, grouper: Grouper) -> Iterator[list[Event]]:
    with open(path, "rb") as fh:
        for block in _read_log_blocks(fh, BLOCK_SIZE):
            # (the last line of a file may lack its newline)
            yield from iter_block(grouper, block if block[-1:] == "\n" else block + "\n", _feed_lines)


def iter_export(fh: BinaryIO, unproven: Unproven | None = None) -> Iterator[RawRecord]:
    """Records from a ``journalctl -o export`` stream (entries not proven to be the kernel's are
    counted in ``unproven``)."""
    entry: dict[str, bytes] = {}
    while True:
        line = fh.readline()
        if not line or line == b"\n":
            if entry:
                rec = _export_record(entry, unproven)
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


def _export_record(entry: dict[str, bytes], unproven: Unproven | None) -> RawRecord | None:
    """An entry's record: ``_TRANSPORT=`` is set by journald (a client cannot), ``audit`` for what
    it read from the kernel's audit socket, ``kernel`` for /dev/kmsg, where ``SYSLOG_FACILITY=0``
    is the kernel's own (journald copies the facility; what userspace writes there is LOG_USER
    or another). Anything else that looks like a record is unproven."""
    transport = entry.get("_TRANSPORT")
    if transport == b"audit":
        try:
            return record_from_entry({k: v.decode("utf-8", "backslashreplace") for k, v in entry.items()})
        except RecordError:
            return None
    message = entry.get("MESSAGE", b"")
    if b"audit(" not in message or b"type=" not in message:
        return None
    text = message.decode("utf-8", "backslashreplace")
    if transport == b"kernel" and entry.get("SYSLOG_FACILITY") == b"0":
        try:
            return parse_kmsg_message(text)
        except RecordError:
            pass
    if unproven is not None:
        unproven.add(text)
    return None


def iter_file(path: str | Path, unproven: Unproven | None = None) -> Iterator[RawRecord]:
    """Records from a file of any supported format (``-`` is not special here); lines that look
    like records in a form that cannot prove the kernel wrote them are counted in ``unproven``."""
    with open(path, "rb") as fh:
        head = fh.peek(16)[:16] if hasattr(fh, "peek") else b""
        if head.startswith(b"__CURSOR=") or head.startswith(b"__SEQNUM"):
            yield from iter_export(fh, unproven)
            return
        if head.startswith((b"type=", b"node=")):
            # auditd log / ausearch --raw: the fast path, a block of whole lines at a time
            for block in _read_log_blocks(fh):
                yield from iter_log_text(block)
            return
        for raw in fh:
            if b"type=" not in raw:
                continue
            line = raw.decode("utf-8", "backslashreplace").rstrip("\n")
            try:
                yield parse_log_line(line)
                continue
            except RecordError:
                pass
            try:
                parse_unproven_line(line)
            except RecordError:
                continue  # not a record in any form
            if unproven is not None:
                unproven.add(line)
