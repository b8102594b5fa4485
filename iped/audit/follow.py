"""The audit follower the daemon registers in its selector, and source selection.

``make_follower(settings.audit, backend, state_dir=...)`` returns an object with ``fileno()``, ``on_readable()``,
``on_timeout(now)``, ``timeout()`` and ``counters()``. The daemon calls ``on_readable()`` when
the fd is readable and ``on_timeout(now)`` (``now`` = ``time.monotonic()``) when its select
timed out; both return the completed IPE events. The follower owns no loop and no thread.

Sources, by preference for ``auto``: netlink (needs CAP_AUDIT_READ; the bind is tried and
EPERM falls back), then journald. With the emulator backend, the emulator's own record stream
(``Emulator.drain_audit()``) is the source.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from iped.audit.counters import AuditCounters, write_textfile
from iped.audit.group import Event, Grouper
from iped.audit.records import IpeAccess, RawRecord, RecordError, parse_stamped
from iped.settings import AuditSettings, AuditSource

if TYPE_CHECKING:
    from iped.audit.netlink import NetlinkSource

#: How often an fd-less source (the emulator) is polled, and the metrics file rewritten.
POLL_INTERVAL = 0.5
METRICS_INTERVAL = 15.0
#: while events keep coming, the metrics file is rewritten at most this often (seconds)
METRICS_MIN_INTERVAL = 1.0
#: stamps of completed events the grouper keeps to drop late duplicates (Grouper.done_max):
#: ~260 bytes each with their ints and order entry, so ~5 MB however fast events come (bounded
#: by the 120 s ttl alone they grew with the event rate: 225 MB after a million events)
DONE_MAX = 16384


class Source(Protocol):
    name: str
    track_gaps: bool

    def fileno(self) -> int: ...

    def read(self) -> list[RawRecord]: ...

    def close(self) -> None: ...


class _Netlink:
    name = "netlink"
    track_gaps = True

    def __init__(self, counters: AuditCounters, receive_buffer: int | None = None,
                 src: NetlinkSource | None = None) -> None:
        """``src``: an already open reader (``NetlinkSource.over`` a socketpair in benchmarks and tests);
        otherwise a new one with ``receive_buffer`` (``[audit] receive_buffer``; None: its default)."""
        from iped.audit.netlink import NetlinkSource

        if src is None:
            src = NetlinkSource() if receive_buffer is None else NetlinkSource(receive_buffer)
        self._src = src
        self._counters = counters

    def fileno(self) -> int:
        return self._src.fileno()

    def read(self) -> list[RawRecord]:
        return [rec for run in self.read_runs() for rec in run]

    def read_runs(self) -> list[list[RawRecord]]:
        """The records in runs of one stamp (``NetlinkSource.read_runs``), for ``Grouper.feed_run``."""
        runs = self._src.read_runs()
        stats, counters = self._src.stats, self._counters
        counters.enobufs, counters.unparsed = stats.enobufs, stats.malformed
        counters.foreign_frames = stats.foreign_sender
        return runs

    def close(self) -> None:
        self._src.close()


class _Journal:
    name = "journal"
    track_gaps = False

    def __init__(self, state_dir: Path | None, since: float | None, counters: AuditCounters) -> None:
        from iped.audit.journal import JournalSource

        self._src = JournalSource(state_dir, since)
        self._counters = counters

    def fileno(self) -> int:
        return self._src.fileno()

    def read(self) -> list[RawRecord]:
        recs = self._src.read()
        self._counters.unparsed = self._src.unparsed
        return recs

    def close(self) -> None:
        self._src.close()


class EmulatorSource:
    """The emulator's record stream: ``drain_audit() -> [(type, text)]``, polled on timeout.

    ``text`` is either a full ``audit(S.MS:N): body`` payload or a bare body; bare bodies get
    the current time and a local serial (each record its own event).
    """

    name = "emulator"
    track_gaps = False

    def __init__(self, drain: Callable[[], list[tuple[int, str]]]) -> None:
        self._drain = drain
        self._serial = 0
        # a pipe nobody writes: a real fd the selector can hold that never turns readable
        self._rfd, self._wfd = os.pipe()

    def fileno(self) -> int:
        return self._rfd

    def read(self) -> list[RawRecord]:
        out = []
        for rtype, text in self._drain():
            try:
                out.append(parse_stamped(rtype, text))
            except RecordError:
                self._serial += 1
                now = time.time()
                out.append(RawRecord(rtype, int(now), int(now * 1000) % 1000, self._serial, text))
        return out

    def close(self) -> None:
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)


def open_source(
    kind: str,
    counters: AuditCounters,
    *,
    state_dir: Path | None = None,
    since: float | None = None,
    backend: Any = None,
    receive_buffer: int | None = None,
) -> tuple[Source, str]:
    """Open a live source by name (``auto``, ``netlink``, ``journal``, ``emulator``).

    ``receive_buffer``: the netlink socket's buffer in bytes (default: NetlinkSource's).

    Returns the source and a sentence saying which one was picked and why.
    Raises PermissionError (netlink without CAP_AUDIT_READ), ImportError (no systemd-python).
    """
    own_writes = backend is not None and backend.capabilities.audit_from_own_writes
    if kind == "emulator" or (kind == "auto" and own_writes):
        return EmulatorSource(backend.drain_audit), "emulator: the emulator's own audit stream"
    if kind == "netlink":
        return _Netlink(counters, receive_buffer), "netlink: audit multicast group (AUDIT_NLGRP_READLOG)"
    if kind == "journal":
        return _Journal(state_dir, since, counters), "journal: systemd journal, _TRANSPORT=audit"
    if kind != "auto":
        raise ValueError(f"unknown audit source {kind!r}")
    try:
        return _Netlink(counters, receive_buffer), "netlink: audit multicast group (AUDIT_NLGRP_READLOG)"
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        return _Journal(state_dir, since, counters), f"journal: netlink bind failed ({why}; needs CAP_AUDIT_READ)"


class Follower:
    """Source + grouper + counters."""

    def __init__(
        self,
        source: Source,
        *,
        description: str = "",
        textfile: Path | None = None,
        group_timeout: float = 2.0,
        counters: AuditCounters | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.description = description or source.name
        self.textfile = textfile
        self._clock = clock
        self._counters = counters or AuditCounters()
        self._counters.source = source.name
        self.grouper = Grouper(group_timeout, track_gaps=source.track_gaps, done_max=DONE_MAX)
        self._counters.group = self.grouper.stats
        self._next_metrics = 0.0
        self._last_metrics = float("-inf")

    def fileno(self) -> int:
        return self.source.fileno()

    def _take(self, events: list[Event], now: float) -> list[Event]:
        ipe = [e for e in events if e.is_ipe]
        count = self._counters.count
        for event in ipe:
            count(event)
        self._publish(bool(ipe), now)
        return ipe

    def _publish(self, counted: bool, now: float) -> None:
        """The textfile (written with an fsync) follows the counts at most once a second: new
        counts within a second of the last write are written when that second is over."""
        if self.textfile is None:
            return
        if counted:
            self._next_metrics = min(self._next_metrics, self._last_metrics + METRICS_MIN_INTERVAL)
        if now >= self._next_metrics:
            self._next_metrics = now + METRICS_INTERVAL
            self._last_metrics = now
            with contextlib.suppress(OSError):
                write_textfile(self._counters, self.textfile)

    def on_readable(self) -> list[Event]:
        now = self._clock()
        if not isinstance(self.source, _Netlink):
            # (feed_many: the grouper's common cases inline, the same events as feed() per record)
            return self._take(list(self.grouper.feed_many(self.source.read(), now)), now)
        # netlink: an event's records arrive back to back, a run each; whole events are grouped
        # and their 1420s read in C, and counted in one call (the same events and counts as
        # feed() per record and count() per event)
        ipe: list[Event] = []
        accesses: list[IpeAccess] = []
        uncounted: list[Event] = []
        self.grouper.feed_ipe_runs(self.source.read_runs(), now, ipe, accesses, uncounted)
        counters = self._counters
        counters.count_accesses(accesses)
        for event in uncounted:
            counters.count(event)
        self._publish(bool(ipe), now)
        return ipe

    def on_timeout(self, now: float) -> list[Event]:
        out: list[Event] = []
        if isinstance(self.source, EmulatorSource):
            out.extend(self.grouper.feed_many(self.source.read(), now))
        out.extend(self.grouper.expire(now))
        return self._take(out, now)

    def timeout(self) -> float | None:
        """Seconds until :meth:`on_timeout` should run (the daemon's select timeout)."""
        waits: list[float] = []
        deadline = self.grouper.deadline()
        if deadline is not None:
            waits.append(max(0.0, deadline - self._clock()))
        if isinstance(self.source, EmulatorSource):
            waits.append(POLL_INTERVAL)
        if self.textfile is not None:
            waits.append(max(0.0, self._next_metrics - self._clock()))
        return min(waits) if waits else None

    def flush(self) -> list[Event]:
        return self._take(self.grouper.flush(), self._clock())

    def counters(self) -> dict[str, Any]:
        data = self._counters.as_dict()
        data["source_description"] = self.description
        return data

    def close(self) -> None:
        self.source.close()


def make_follower(settings: AuditSettings, backend: Any = None, *, state_dir: Path | None = None,
                  group_timeout: float = 2.0) -> Follower | None:
    """Build the daemon's follower from its ``[audit]`` settings; None when auditing is off.

    ``state_dir`` keeps the journal cursor; under ``auto``, a ``backend`` whose capabilities say
    its audit records are those of its own writes (the emulator) is the record stream.
    """
    if settings.source == AuditSource.NONE:
        return None
    counters = AuditCounters()
    source, why = open_source(str(settings.source), counters, state_dir=state_dir, backend=backend,
                              receive_buffer=settings.receive_buffer)
    return Follower(source, description=why, textfile=settings.prometheus_textfile,
                    group_timeout=group_timeout, counters=counters)
