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

import struct
from collections.abc import Iterable, Iterator
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
    parse_log_line,
    stamp_in_range,
    type_number,
)

_CHUNK = 1 << 20


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


def iter_file_events(path: str | Path, grouper: Grouper) -> Iterator[Event]:
    """Events of a file of any supported format, grouped by ``grouper`` on record time.

    The same events as ``grouper.feed_many(iter_file(path))``; auditd logs take the bulk
    path (:mod:`iped.audit.bulk`: IPE access events found whole by the block scanner, every
    other line through the fused line path of :func:`_feed_lines`), handed out through
    ``itertools.chain`` so that no Python frame runs per event between the bulk path's lists
    and the consumer. The file is opened (and its format detected) by this call. Call
    ``grouper.flush()`` at the end for the events still in flight.
    """
    with open(path, "rb") as fh:
        head = fh.peek(16)[:16] if hasattr(fh, "peek") else b""
    if not head.startswith((b"type=", b"node=")):
        return grouper.feed_many(iter_file(path))
    return chain.from_iterable(_log_event_lists(path, grouper))


def _log_event_lists(path: str | Path, grouper: Grouper) -> Iterator[list[Event]]:
    with open(path, "rb") as fh:
        for block in _read_log_blocks(fh, BLOCK_SIZE):
            # (the last line of a file may lack its newline)
            yield from iter_block(grouper, block if block[-1:] == "\n" else block + "\n", _feed_lines)


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
            # auditd log / ausearch --raw: the fast path, a block of whole lines at a time
            for block in _read_log_blocks(fh):
                yield from iter_log_text(block)
            return
        for raw in fh:
            if b"type=" not in raw:
                continue
            try:
                yield parse_log_line(raw.decode("utf-8", "backslashreplace").rstrip("\n"))
            except RecordError:
                continue
