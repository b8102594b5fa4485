"""Records -> events: group by ``audit(S.MS:N)`` stamp, emit at EOE or after a timeout.

The kernel gives every record of one event the same stamp and ends a syscall-context event
with AUDIT_EOE (1320). Records of different events interleave, may be duplicated (kmsg and
netlink both carry them, or two sources are merged) and may be lost (a full netlink receive
buffer, the kernel's backlog limit). Like laurel's coalescer, expiry is driven only by the
``now`` values passed in (monotonic time for live sources, the record timestamp for files),
so tests are deterministic and never sleep.

Loss accounting: with ``track_gaps`` the serials between the highest one seen and a new,
higher one are "missing"; a missing serial that shows up later was only reordered, one that
is still missing after the timeout is counted in ``GroupStats.serial_gaps``. Only sources that
see every record (netlink, an unfiltered log) should track gaps: a journal filtered on
``_AUDIT_TYPE`` skips serials by design.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from iped.audit.records import (
    AUDIT_EOE,
    AUDIT_PROCTITLE,
    AUDIT_SYSCALL,
    Proctitle,
    RawRecord,
    Syscall,
    TypedRecord,
    is_ipe,
    parse_typed,
)

#: A gap this large is a serial reset (reboot, replayed file), not hundreds of thousands of losses.
_MAX_GAP = 100_000


def _single_record(rtype: int) -> bool:
    """Userspace messages (1100-1199, 2100-2999) and AUDIT_USER are one-record events, no EOE."""
    return 1100 <= rtype <= 1199 or 2100 <= rtype <= 2999 or rtype == 1005


@dataclass(frozen=True)
class Event:
    """All records of one audit event, in arrival order.

    ``complete`` is True when the event ended with EOE (or is a single-record event) and
    False when it was flushed by the timeout or at the end of input.
    """

    sec: int
    msec: int
    serial: int
    records: tuple[RawRecord, ...]
    complete: bool

    @property
    def timestamp(self) -> float:
        return self.sec + self.msec / 1000.0

    @cached_property
    def typed(self) -> tuple[TypedRecord, ...]:
        """Typed views of the records iped reads (IPE records, SYSCALL, PROCTITLE)."""
        out = []
        for rec in self.records:
            typed = parse_typed(rec)
            if typed is not None:
                out.append(typed)
        return tuple(out)

    @cached_property
    def is_ipe(self) -> bool:
        return any(is_ipe(r) for r in self.records)

    @property
    def ipe(self) -> tuple[TypedRecord, ...]:
        return tuple(t for t in self.typed if not isinstance(t, Syscall | Proctitle))

    @property
    def syscall(self) -> Syscall | None:
        for rec in self.records:
            if rec.type == AUDIT_SYSCALL:
                typed = parse_typed(rec)
                assert isinstance(typed, Syscall)
                return typed
        return None

    @property
    def proctitle(self) -> Proctitle | None:
        for rec in self.records:
            if rec.type == AUDIT_PROCTITLE:
                typed = parse_typed(rec)
                assert isinstance(typed, Proctitle)
                return typed
        return None


@dataclass
class GroupStats:
    """Counters of the grouper; the follower folds them into its metrics."""

    records: int = 0
    events: int = 0
    incomplete_events: int = 0
    duplicates: int = 0
    spurious_eoe: int = 0
    reordered: int = 0
    serial_gaps: int = 0
    serial_resets: int = 0


@dataclass
class _Inflight:
    first_seen: float
    records: list[RawRecord] = field(default_factory=list)
    types: set[int] = field(default_factory=set)


_Key = tuple[int, int, int]


class Grouper:
    """Collect records into events. Not thread-safe; one per source."""

    def __init__(self, timeout: float = 2.0, *, track_gaps: bool = False, done_ttl: float = 120.0) -> None:
        self.timeout = timeout
        self.track_gaps = track_gaps
        self.done_ttl = done_ttl
        self.stats = GroupStats()
        self._inflight: dict[_Key, _Inflight] = {}
        self._done: dict[_Key, float] = {}
        self._missing: dict[int, float] = {}
        self._last_serial: int | None = None
        self._next_check = float("-inf")

    def feed(self, rec: RawRecord, now: float) -> list[Event]:
        """Add one record; return the events it completes and any that expired by ``now``."""
        out: list[Event] = []
        self.feed_into(out, rec, now)
        return out

    def feed_many(self, records: Iterable[RawRecord], now: float | None = None) -> Iterator[Event]:
        """Feed a stream; ``now`` None means "the record's own timestamp" (offline input)."""
        out: list[Event] = []
        feed_into = self.feed_into
        for rec in records:
            feed_into(out, rec, rec[1] if now is None else now)
            if out:
                yield from out
                out.clear()

    def feed_into(self, out: list[Event], rec: RawRecord, now: float) -> None:
        """The hot path of :meth:`feed`: append completed/expired events to ``out``."""
        stats = self.stats
        stats.records += 1
        if now >= self._next_check:
            out.extend(self.expire(now))
        rtype, sec, msec, serial, _ = rec
        key = (sec, msec, serial)
        if key in self._done:
            stats.duplicates += 1
            return
        if self.track_gaps:
            last = self._last_serial
            if last is not None and (serial == last or serial == last + 1):
                self._last_serial = serial  # the common case, inline
            else:
                self._track(serial, now)
        inflight = self._inflight.get(key)
        if rtype == AUDIT_EOE:
            if inflight is None:
                stats.spurious_eoe += 1
                return
            del self._inflight[key]
            out.append(self._emit(key, inflight.records, True, now))
            return
        if inflight is None:
            if _single_record(rtype):
                out.append(self._emit(key, [rec], True, now))
                return
            inflight = self._inflight[key] = _Inflight(now, [rec], {rtype})
            if self._next_check == float("inf"):
                self._next_check = now + self.timeout
            return
        if rtype in inflight.types and rec in inflight.records:
            stats.duplicates += 1
            return
        inflight.records.append(rec)
        inflight.types.add(rtype)

    def _track(self, serial: int, now: float) -> None:
        last = self._last_serial
        if last is None or serial > last + _MAX_GAP or serial < last - _MAX_GAP:
            if last is not None:
                self.stats.serial_resets += 1
                self._missing.clear()
            self._last_serial = serial
            return
        if serial > last:
            for missing in range(last + 1, serial):
                self._missing[missing] = now
            self._last_serial = serial
        elif serial < last and self._missing.pop(serial, None) is not None:
            self.stats.reordered += 1

    def _emit(self, key: _Key, records: list[RawRecord], complete: bool, now: float) -> Event:
        self._done[key] = now
        self.stats.events += 1
        if not complete:
            self.stats.incomplete_events += 1
        return Event(key[0], key[1], key[2], tuple(records), complete)

    def expire(self, now: float) -> list[Event]:
        """Flush events older than the timeout, count missing serials that never came.

        All three tables are insertion-ordered by the ``now`` they were added at, so each is
        trimmed from the front and a call costs only what it removes.
        """
        out: list[Event] = []
        limit = now - self.timeout
        inflight = self._inflight
        while inflight:
            key = next(iter(inflight))
            if inflight[key].first_seen > limit:
                break
            out.append(self._emit(key, inflight.pop(key).records, False, now))
        missing = self._missing
        while missing:
            serial = next(iter(missing))
            if missing[serial] > limit:
                break
            del missing[serial]
            self.stats.serial_gaps += 1
        done, done_limit = self._done, now - self.done_ttl
        while done:
            key = next(iter(done))
            if done[key] > done_limit:
                break
            del done[key]
        deadline = self.deadline()
        self._next_check = float("inf") if deadline is None else deadline
        return out

    def deadline(self) -> float | None:
        """The ``now`` at which :meth:`expire` has something to do, or None."""
        first: list[float] = []
        if self._inflight:
            first.append(next(iter(self._inflight.values())).first_seen)
        if self._missing:
            first.append(next(iter(self._missing.values())))
        return min(first) + self.timeout if first else None

    def flush(self) -> list[Event]:
        """End of input: emit everything still in flight (incomplete) in stamp order."""
        out = [self._emit(k, self._inflight[k].records, False, 0.0) for k in sorted(self._inflight)]
        self._inflight.clear()
        return out
