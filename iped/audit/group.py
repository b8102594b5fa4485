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

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any, Generic, TypeVar, overload

from iped.audit.native import _scan
from iped.audit.records import (
    AUDIT_EOE,
    AUDIT_IPE_ACCESS,
    IPE_TYPES,
    PARSERS,
    IpeAccess,
    Proctitle,
    RawRecord,
    Syscall,
    TypedRecord,
    is_ipe,
)

#: A gap this large is a serial reset (reboot, replayed file), not hundreds of thousands of losses.
_MAX_GAP = 100_000


def _single_record(rtype: int) -> bool:
    """Userspace messages (1100-1199, 2100-2999) and AUDIT_USER are one-record events, no EOE."""
    return 1100 <= rtype <= 1199 or 2100 <= rtype <= 2999 or rtype == 1005


_T = TypeVar("_T")


class cached_property(Generic[_T]):  # noqa: N801 - named like functools.cached_property
    """``functools.cached_property`` without its per-access lock (Python 3.11 takes an RLock
    on every uncached access); after the first access the value is a plain instance attribute."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> cached_property[_T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> cached_property[_T] | _T:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


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
        parsers = PARSERS
        for rec in self.records:
            parse = parsers.get(rec[0])
            if parse is not None:
                typed = parse(rec[4])
                if typed is not None:
                    out.append(typed)
        return tuple(out)

    @cached_property
    def is_ipe(self) -> bool:
        records = self.records
        # (an access event starts with its 1420)
        return (bool(records) and records[0][0] == AUDIT_IPE_ACCESS) or any(is_ipe(r) for r in records)

    @property
    def ipe(self) -> tuple[TypedRecord, ...]:
        """The typed IPE records (1420, 1421, 1422, 1404 with ``lsm=ipe``), in order.

        Read from :attr:`typed` once that is known; else only the IPE records are parsed (the
        daemon's follower counts them and reads nothing else: SYSCALL parsing would double its
        cost per event).
        """
        typed = self.__dict__.get("typed")
        if typed is not None:
            return tuple(t for t in typed if not isinstance(t, Syscall | Proctitle))
        out = []
        for rec in self.records:
            if rec[0] in IPE_TYPES:
                parsed = PARSERS[rec[0]](rec[4])
                if parsed is not None:
                    out.append(parsed)
        return tuple(out)

    @property
    def syscall(self) -> Syscall | None:
        """The typed first SYSCALL record (from :attr:`typed`: the bulk path fills it in, unparsed again)."""
        for typed in self.typed:
            if isinstance(typed, Syscall):
                return typed
        return None

    @property
    def proctitle(self) -> Proctitle | None:
        """The typed first PROCTITLE record (from :attr:`typed`)."""
        for typed in self.typed:
            if isinstance(typed, Proctitle):
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


def _new_event(sec: int, msec: int, serial: int, records: tuple[RawRecord, ...], complete: bool) -> Event:
    """``Event(...)`` without the frozen dataclass's five ``object.__setattr__`` calls (hot path)."""
    ev = _object_new(Event)
    _object_setattr(
        ev, "__dict__", {"sec": sec, "msec": msec, "serial": serial, "records": records, "complete": complete}
    )
    return ev


_object_new = object.__new__
_object_setattr = object.__setattr__

#: an event in flight: (first_seen, records); first_seen is the ``now`` of its first record
_Inflight = tuple[float, list[RawRecord]]
_Key = tuple[int, int, int]


class Grouper:
    """Collect records into events. Not thread-safe; one per source."""

    def __init__(self, timeout: float = 2.0, *, track_gaps: bool = False, done_ttl: float = 120.0,
                 done_max: int | None = None) -> None:
        """``done_ttl``: how long a completed event's stamp is kept to drop its late duplicates;
        ``done_max``: at most this many stamps are kept (the oldest forgotten first, before their
        ``done_ttl``) -- a live source's bound on memory, which the ttl alone sets at ttl times
        the event rate (None: no bound, for files, whose time is the records' own)."""
        self.timeout = timeout
        self.track_gaps = track_gaps
        self.done_ttl = done_ttl
        self.done_max = done_max
        self.stats = GroupStats()
        self._inflight: dict[_Key, _Inflight] = {}
        self._done: dict[_Key, float] = {}
        # expiry order of _done; trimming a dict from the front makes next(iter()) skip every
        # deleted slot, which turned expire() quadratic on long files
        self._done_order: deque[tuple[float, _Key]] = deque()
        self._missing: dict[int, float] = {}
        self._last_serial: int | None = None
        self._next_check = float("-inf")

    def feed(self, rec: RawRecord, now: float) -> list[Event]:
        """Add one record; return the events it completes and any that expired by ``now``."""
        out: list[Event] = []
        self.feed_into(out, rec, now)
        return out

    def feed_many(self, records: Iterable[RawRecord], now: float | None = None) -> Iterator[Event]:
        """Feed a stream; ``now`` None means "the record's own timestamp" (offline input).

        The same as calling :meth:`feed` for each record. The common cases (a record of an
        event in flight, a new multi-record event, its EOE, the next serial) are handled
        inline; everything else (expiry due, duplicates, gaps, single-record events, a
        spurious EOE) goes through :meth:`feed_into`.
        """
        out: list[Event] = []
        feed_into = self.feed_into
        inflight = self._inflight
        done = self._done
        done_order = self._done_order
        stats = self.stats
        track = self.track_gaps
        eoe = AUDIT_EOE
        new_event = _new_event
        fast = 0  # records handled inline, added to stats.records in batches
        try:
            for rec in records:
                rtype, sec, msec, serial, _ = rec
                t = sec if now is None else now
                key = (sec, msec, serial)
                cur = inflight.get(key)
                if t < self._next_check and key not in done:
                    if track:
                        last = self._last_serial
                        if serial != last:
                            if last is None or serial != last + 1:
                                cur = None
                                rtype = -1  # not inline: _track() decides
                            else:
                                self._last_serial = serial
                    if rtype == eoe:
                        if cur is not None:
                            del inflight[key]
                            done[key] = t
                            done_order.append((t, key))
                            stats.events += 1
                            stats.records += fast + 1
                            fast = 0
                            yield new_event(sec, msec, serial, tuple(cur[1]), True)
                            continue
                    elif cur is not None:
                        recs = cur[1]
                        if rec not in recs:
                            fast += 1
                            recs.append(rec)
                            continue
                    elif rtype > 0 and not _single_record(rtype):
                        fast += 1
                        inflight[key] = (t, [rec])
                        self._next_check = min(self._next_check, t + self.timeout)
                        continue
                feed_into(out, rec, t)
                if out:
                    stats.records += fast
                    fast = 0
                    yield from out
                    out.clear()
        finally:
            stats.records += fast
            self._bound_done()

    def feed_run(self, out: list[Event], run: list[RawRecord], eoe: RawRecord | None, now: float) -> None:
        """Records of one stamp that arrived back to back, then the EOE that ended them (or None).

        The same as :meth:`feed_into` for each record and the EOE, in order (``run`` must not
        hold the same record twice), with the common case -- a new event, complete, the next
        serial, nothing due to expire -- done once per event instead of once per record.
        """
        if run and eoe is not None and now < self._next_check:
            rtype, sec, msec, serial, _ = run[0]
            key = (sec, msec, serial)
            last = self._last_serial
            if (
                key not in self._inflight
                and key not in self._done
                and (not self.track_gaps or (last is not None and (serial == last or serial == last + 1)))
                and not _single_record(rtype)
            ):
                stats = self.stats
                stats.records += len(run) + 1
                stats.events += 1
                if self.track_gaps:
                    self._last_serial = serial
                self._done[key] = now
                self._done_order.append((now, key))
                out.append(_new_event(sec, msec, serial, tuple(run), True))
                return
        feed_into = self.feed_into
        for rec in run:
            feed_into(out, rec, now)
        if eoe is not None:
            feed_into(out, eoe, now)

    def feed_ipe_runs(
        self,
        runs: list[list[RawRecord]],
        now: float,
        ipe: list[Event],
        accesses: list[IpeAccess],
        uncounted: list[Event],
    ) -> None:
        """The follower's path: runs as ``NetlinkSource.read_runs`` gives them (the records of
        one stamp, its EOE last when it came), fed in order, the same events and stats as
        :meth:`feed_into` record by record -- but only the IPE events are kept, appended to
        ``ipe`` in order, and each is also appended, for the counters, either to ``accesses``
        (its one IPE record is the 1420 it starts with: its IpeAccess) or to ``uncounted``
        (the event itself, for ``AuditCounters.count``).

        A run of a whole new event is taken by ``_scan.group_runs`` (no Python per event;
        events without an IPE record are never built); any other run by :meth:`feed_run`.
        """
        done_order = self._done_order
        slow: list[Event] = []
        i, end = 0, len(runs)
        while i < end:
            if _scan is not None and now < self._next_check:
                keys: list[_Key] = []
                i, self._last_serial, records, events = _scan.group_runs(
                    runs, i, self._inflight, self._done, self._last_serial, self.track_gaps, now,
                    Event, IpeAccess, keys, ipe, accesses, uncounted,
                )  # fmt: skip
                self.stats.records += records
                self.stats.events += events
                done_order.extend(zip(repeat(now), keys))
                if i == end:
                    break
            run = runs[i]
            i += 1
            eoe = run.pop() if run[-1][0] == AUDIT_EOE else None
            self.feed_run(slow, run, eoe, now)
            for event in slow:
                if event.is_ipe:
                    ipe.append(event)
                    uncounted.append(event)
            slow.clear()
        self._bound_done()

    def feed_into(self, out: list[Event], rec: RawRecord, now: float) -> None:
        """Add one record: append the events it completes and any that expired by ``now``."""
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
            out.append(self._emit(key, inflight[1], True, now))
            return
        if inflight is None:
            if _single_record(rtype):
                out.append(self._emit(key, [rec], True, now))
                return
            self._inflight[key] = (now, [rec])
            self._next_check = min(self._next_check, now + self.timeout)
            return
        if rec in inflight[1]:
            stats.duplicates += 1
            return
        inflight[1].append(rec)

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
        self._done_order.append((now, key))
        self.stats.events += 1
        if not complete:
            self.stats.incomplete_events += 1
        return _new_event(key[0], key[1], key[2], tuple(records), complete)

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
            if inflight[key][0] > limit:
                break
            out.append(self._emit(key, inflight.pop(key)[1], False, now))
        missing = self._missing
        while missing:
            serial = next(iter(missing))
            if missing[serial] > limit:
                break
            del missing[serial]
            self.stats.serial_gaps += 1
        done, order, done_limit = self._done, self._done_order, now - self.done_ttl
        while order and order[0][0] <= done_limit:
            when, key = order.popleft()
            if done.get(key) == when:
                del done[key]
        self._bound_done()
        deadline = self.deadline()
        # with nothing scheduled, look again after done_ttl anyway: the fast paths add done
        # stamps without scheduling their expiry
        self._next_check = now + self.done_ttl if deadline is None else deadline
        return out

    def _bound_done(self) -> None:
        """Keep at most ``done_max`` done stamps: once they exceed it by a quarter, forget the
        oldest down to ``done_max`` (the order rebuilt in one step, not popped one by one)."""
        order = self._done_order
        if self.done_max is None or len(order) <= self.done_max + self.done_max // 4:
            return
        excess = len(order) - self.done_max
        stale = list(islice(order, excess))
        kept = list(islice(order, excess, None))
        order.clear()
        order.extend(kept)
        done = self._done
        for when, key in stale:
            if done.get(key) == when:
                del done[key]

    def deadline(self) -> float | None:
        """The ``now`` at which :meth:`expire` has something to do, or None.

        That includes forgetting done stamps after ``done_ttl``: a stream of complete events
        with no gaps never puts anything in flight, and the table of done stamps would
        otherwise grow with every event.
        """
        first: list[float] = []
        if self._inflight:
            first.append(next(iter(self._inflight.values()))[0] + self.timeout)
        if self._missing:
            first.append(next(iter(self._missing.values())) + self.timeout)
        if self._done_order:
            first.append(self._done_order[0][0] + self.done_ttl)
        return min(first) if first else None

    def flush(self) -> list[Event]:
        """End of input: emit everything still in flight (incomplete) in stamp order."""
        out = [self._emit(k, self._inflight[k][1], False, 0.0) for k in sorted(self._inflight)]
        self._inflight.clear()
        return out
