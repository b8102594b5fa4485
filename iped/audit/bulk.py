"""Bulk parser for auditd logs: whole IPE access events found by a block scanner.

:func:`iped.audit.files.iter_file_events` reads an auditd log in blocks of whole lines and
hands each block to :func:`iter_block`, which asks :func:`scan_block` for the block's items:

* a whole **IPE access event** in the shape the kernel writes it -- ``IPE_ACCESS`` (1420),
  ``SYSCALL``, any other records of the same stamp (``EXECVE``, ``CWD``, ``PATH``...),
  ``PROCTITLE``, ``EOE``, all with one ``audit(S.MS:N)`` stamp -- as its stamp, its records
  and (from the C scanner) its typed records; or
* any **other line**, which goes through the general line path (``files._feed_lines``), in
  order, so odd records, other event shapes, interleaved or duplicated records, a missing EOE
  and truncated lines give exactly what the general path gives.

Two scanners give the same items. The C one, ``iped.audit._scan`` (``_scan.c``, built by
``pip install``), walks the block once and also builds the typed 1420, SYSCALL and PROCTITLE
records for the bodies in their common form, sharing values that repeat between events and
leaving every tuple untracked by the garbage collector; anything unusual in a body is left to
the Python parsers of :mod:`iped.audit.records`. The Python one, :func:`scan_block_py`, runs
:data:`_BLOCK_RE` with ``findall`` (bodies captured as ``[^\\n]*``: sre scans that in a tight
loop, while a group per field cost ~5 us per event in per-opcode overhead); it also serves
the text the C one declines (not ASCII, ``\\x1d`` enriched fields). ``tests/audit/
test_bulk_scan.py`` compares the two item by item, on generated blocks too.

For an access event the grouper's bookkeeping is done inline with the same conditions as
:meth:`Grouper.feed_run`'s fast case (a new stamp, nothing due to expire, the next serial),
and the event is built with ``typed`` and ``is_ipe`` already filled in (``Event.typed`` is a non-data
descriptor, so a value in the instance ``__dict__`` wins). Anything else (a stamp already in
flight or done, a serial gap with ``track_gaps``, expiry due, a record repeated inside the
event or an EOE among the middle records) feeds the records one by one through
:meth:`Grouper.feed_into`, the reference semantics. Blocks containing ``\\r`` take the general
path whole.

Garbage collection: the collector is paused while a block is scanned (nothing there is
cyclic), and events are handed out in lists of :data:`_BATCH`, so a consumer that drops each
event keeps the young generation small. Handing out a whole block's events at once cost
0.6 s of a 4.8 s run in gen-0 collections (306 passes over ~150k young objects); in lists
of 16, 27 collections and a few milliseconds.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from iped.audit import native
from iped.audit.group import Event, Grouper
from iped.audit.native import _scan
from iped.audit.records import (
    PARSERS,
    IpeAccess,
    Proctitle,
    RawRecord,
    Syscall,
    TypedRecord,
    auditd_line,
    parse_access,
    parse_proctitle,
    parse_syscall,
)

if TYPE_CHECKING:
    FeedLines = Callable[[Grouper, list[str], list[Event], bool], None]

#: bytes read per block (the partial last line is carried over to the next block). The objects
#: scanned from a block (~0.5 MB for 128 KiB) are handed out and freed while still in the
#: CPU's cache: 1 MiB blocks measured ~25% slower, 16 KiB ones ~30% (median of 7 runs each)
BLOCK_SIZE: Final = 1 << 17
#: events handed out at a time: few enough that the garbage collector's young generation
#: stays below its threshold while the consumer runs (at 128: 1,800 gen-0 collections per
#: million records; at 16: 29)
_BATCH: Final = 16

_STAMP = r"msg=audit\(\1\): ?"
_EVENT = (
    # stamp parts of at most records.STAMP_DIGITS digits: a longer one is left to the line parsers
    r"type=(?:1420|IPE_ACCESS|UNKNOWN\[1420\]) msg=audit\((([0-9]{1,11})\.([0-9]{1,3}):([0-9]{1,20}))\): ([^\n]*)\n"
    rf"type=(?:SYSCALL|1300) {_STAMP}([^\n]*)\n"
    rf"((?:type=(?!EOE |1320 )[^ \n]+ {_STAMP}[^\n]*\n)*?)"
    rf"type=(?:PROCTITLE|1327) {_STAMP}([^\n]*)\n"
    rf"type=(?:EOE|1320) {_STAMP}([^\n]*)\n"
)

#: an IPE access event (groups 1-9: stamp, sec, msec, serial, the 1420 body, the SYSCALL
#: body, the lines between, the PROCTITLE body, the EOE body) or any other line (group 10).
#: Bodies are matched as ``[^\n]*``, which sre scans far faster than a pattern per field.
_BLOCK_RE: Final = re.compile(rf"{_EVENT}|([^\n]*)\n")

_new = tuple.__new__
_object_new = object.__new__
_object_setattr = object.__setattr__

#: an event found by the scanners: (sec, msec, serial, its 1420, SYSCALL and PROCTITLE records,
#: the text of the records between those two, the EOE body, the typed 1420, SYSCALL and
#: PROCTITLE records -- None when the scanner left the bodies to the Python parsers -- and
#: the Event to hand out if the grouper takes the event whole -- None: build it here)
ScannedEvent = tuple[
    int,
    int,
    int,
    tuple[RawRecord, RawRecord, RawRecord],
    str,
    str,
    tuple[IpeAccess, Syscall, Proctitle] | None,
    Event | None,
]

#: the C scanner is built (``pip install`` compiles it; a bare checkout has only Python's)
C_SCANNER_BUILT: Final = native.BUILT
#: use the C scanner when it is built (False: the Python scanner alone, e.g. to compare them)
use_c_scanner: bool = C_SCANNER_BUILT


def scan_block(text: str) -> list[str | ScannedEvent]:
    """The block's IPE access events and, as str, every other line (without its ``\\n``).

    :func:`scan_block_py`'s items, from the C scanner when it is built and takes the text
    (plain ASCII without ``\\r`` or ``\\x1d``), which also types the common forms of the
    records' bodies.
    """
    if use_c_scanner and _scan is not None:
        items = _scan.scan_block(text, RawRecord, IpeAccess, Syscall, Proctitle, Event)
        if items is not None:
            return items
    return scan_block_py(text)


def scan_block_py(text: str) -> list[str | ScannedEvent]:
    """:func:`scan_block` by :data:`_BLOCK_RE` (typed records left None). Bodies are cut at
    ``\\x1d`` (auditd's enriched format)."""
    new = _new
    items: list[str | ScannedEvent] = []
    strip = "\x1d" in text
    for stamp, s, ms, ser, a_text, s_text, middle, p_text, e_text, line in _BLOCK_RE.findall(text):
        if not stamp:
            items.append(line)
            continue
        if strip:  # auditd's enriched format: the interpreted fields follow a \x1d
            abody, sbody, pbody, ebody = (b.partition("\x1d")[0] for b in (a_text, s_text, p_text, e_text))
        else:
            abody, sbody, pbody, ebody = a_text, s_text, p_text, e_text
        sec, msec, serial = int(s), int(ms), int(ser)
        records = (
            new(RawRecord, (1420, sec, msec, serial, abody)),
            new(RawRecord, (1300, sec, msec, serial, sbody)),
            new(RawRecord, (1327, sec, msec, serial, pbody)),
        )
        items.append((sec, msec, serial, records, middle, ebody, None, None))
    return items


def iter_block(grouper: Grouper, text: str, feed_lines: FeedLines) -> Iterator[list[Event]]:
    """Group one block of whole auditd log lines (ending with ``\\n``), yielding lists of events.

    The same events, order and grouper counters as ``feed_lines(grouper, lines, out, strip)``
    (``files._feed_lines``) on the block's lines. The events are handed out in fresh lists of
    about :data:`_BATCH` as they are built, so a consumer that drops them keeps few objects
    alive (the garbage collector's young generation stays small), and a consumer iterating
    with ``itertools.chain.from_iterable`` resumes this generator once per list, not once per
    event. The counters include every event handed out.
    """
    out: list[Event] = []
    if "\r" in text:
        feed_lines(grouper, text.split("\n"), out, True)
        yield out
        return
    strip = "\x1d" in text
    inflight = grouper._inflight
    done = grouper._done
    done_order = grouper._done_order
    setdefault = done.setdefault
    track = grouper.track_gaps
    stats = grouper.stats
    feed_into = grouper.feed_into
    parsers = PARSERS
    new = _new
    event_new = _object_new
    setattr_ = _object_setattr
    pending: list[str] = []
    n_events = n_records = 0  # counted here, added to grouper.stats before events are handed out
    # the scanners build a few objects per line, none cyclic: no collections while they run
    enabled = gc.isenabled()
    gc.disable()
    try:
        items = scan_block(text)
    finally:
        if enabled:
            gc.enable()
    # the grouper's expiry time (as an int bound: comparing an int with a float costs more)
    # and last serial, kept in locals while only the fast case runs (stored back before
    # anything else looks at them, read again after)
    limit = _int_bound(grouper._next_check)
    last = grouper._last_serial
    for item in items:
        if isinstance(item, str):
            pending.append(item)
            continue
        if pending:
            grouper._last_serial = last
            feed_lines(grouper, pending, out, strip)
            pending = []
            limit, last = _int_bound(grouper._next_check), grouper._last_serial
        sec, msec, serial, three, middle, ebody, typed3, built = item
        records: tuple[RawRecord, ...] = three
        if middle:
            others = _middle_records(middle)
            records = (three[0], three[1], *others, three[2])
            # a repeated record or an EOE among them: the reference path decides
            unique = len(set(records)) == len(records) and all(r[0] != 1320 for r in others)
        else:
            others = ()
            unique = True
        key = (sec, msec, serial)
        fast = False
        if (
            unique
            and sec < limit
            and (not inflight or key not in inflight)
            and (not track or (last is not None and (serial == last or serial == last + 1)))
        ):
            # a new stamp: done gains the key (one hash of the key instead of "in" then "=")
            n_done = len(done)
            setdefault(key, sec)
            fast = len(done) > n_done
        if fast:
            # Grouper.feed_run's fast case: a new, complete event, the next serial
            if track:
                last = serial
            done_order.append((sec, key))
            n_events += 1
            n_records += len(records) + 1
            if built is None:  # (the C scanner builds it when it typed the records itself)
                typed: tuple[TypedRecord, ...]
                if typed3 is None:  # the Python scanner, or bodies the C one left to the Python parsers
                    typed3 = (parse_access(three[0][4]), parse_syscall(three[1][4]), parse_proctitle(three[2][4]))
                if others:
                    extra = [t for t in (_typed(parsers, r) for r in others) if t is not None]
                    typed = (typed3[0], typed3[1], *extra, typed3[2])
                else:
                    typed = typed3
                built = event_new(Event)
                setattr_(
                    built,
                    "__dict__",
                    {"sec": sec, "msec": msec, "serial": serial, "records": records, "complete": True, "is_ipe": True,
                     "typed": typed},
                )
            out.append(built)
        else:
            # the reference semantics, one record at a time
            grouper._last_serial = last
            for rec in records:
                feed_into(out, rec, sec)
            feed_into(out, new(RawRecord, (1320, sec, msec, serial, ebody)), sec)
            limit, last = _int_bound(grouper._next_check), grouper._last_serial
        if len(out) >= _BATCH:
            grouper._last_serial = last
            stats.events += n_events
            stats.records += n_records
            n_events = n_records = 0
            yield out
            out = []
            limit, last = _int_bound(grouper._next_check), grouper._last_serial
    grouper._last_serial = last
    stats.events += n_events
    stats.records += n_records
    if pending:
        feed_lines(grouper, pending, out, strip)
    grouper._bound_done()  # (the fast case above adds done stamps without looking at done_max)
    yield out


def _int_bound(next_check: float) -> float:
    """A bound ``b`` with ``sec < b`` exactly when ``sec < next_check``, an int if it is finite."""
    return math.ceil(next_check) if math.isfinite(next_check) else next_check


def _typed(parsers: dict[int, Callable[[str], TypedRecord | None]], rec: RawRecord) -> TypedRecord | None:
    parse = parsers.get(rec[0])
    return None if parse is None else parse(rec[4])


def _middle_records(text: str) -> tuple[RawRecord, ...]:
    """The records between SYSCALL and PROCTITLE (their stamp is the event's: a backreference).

    Lines whose type name is not one auditd prints are skipped, as the general path does.
    """
    # (auditd_line drops an enriched part itself)
    return tuple(rec for rec in map(auditd_line, text.split("\n")[:-1]) if rec is not None)
