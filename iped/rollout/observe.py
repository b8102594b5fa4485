"""What ran: IPE access records from any audit source, folded into one row per distinct access.

The records come through iped's own audit code (:mod:`iped.audit`): the same sources as
``iped audit --source journal|netlink|auto|FILE``, the same grouping of 1420 records with their
SYSCALL/PROCTITLE records, so a shadow-mode log, an auditd log and the journal read alike. A row
is keyed by what IPE evaluates — op, hook and the file (path, s_id, inode) — and carries how
often, when, and by whom it happened.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iped.audit.files import Unproven
from iped.audit.records import AUDIT_SYSCALL, IpeAccess, get_field

if TYPE_CHECKING:
    from iped.audit.group import Event

#: the ``key=`` of the SYSCALL record that marks an event written by shadow mode
SHADOW_KEY = "iped-shadow"

#: the live sources; anything else is a file
LIVE_SOURCES = ("auto", "netlink", "journal")

AccessKey = tuple[str, str, str | None, str | None, int | None]


@dataclass
class Observation:
    """One distinct access (op, hook, file) and everything the records say about it."""

    op: str
    hook: str
    path: str | None
    dev: str | None
    ino: int | None
    count: int = 0
    first: float = float("inf")
    last: float = float("-inf")
    recorded: Counter[str] = field(default_factory=Counter)  # decision as recorded: ALLOW/DENY
    enforcing: Counter[bool] = field(default_factory=Counter)
    comms: Counter[str] = field(default_factory=Counter)
    exes: Counter[str] = field(default_factory=Counter)
    shadow: int = 0  # how many of the records came from shadow mode

    @property
    def key(self) -> AccessKey:
        return (self.op, self.hook, self.path, self.dev, self.ino)

    @property
    def program(self) -> str:
        """The file that was executed or loaded (or ``<no file>`` for anonymous memory)."""
        return self.path if self.path is not None else "<no file>"

    @property
    def by(self) -> list[str]:
        """Who did it, most frequent first: the SYSCALL's exe when known, else the record's comm."""
        names = self.exes if self.exes else self.comms
        return [name for name, _ in names.most_common()]

    def as_dict(self) -> dict[str, Any]:
        return {
            "op": self.op, "hook": self.hook, "path": self.path, "dev": self.dev, "ino": self.ino,
            "count": self.count, "first": iso(self.first), "last": iso(self.last),
            "recorded": dict(self.recorded), "by": self.by, "shadow": self.shadow,
        }  # fmt: skip


def iso(ts: float) -> str:
    """UTC ISO 8601 to the second, as ``iped audit`` prints times."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def is_shadow(event: Event) -> bool:
    return any(r.type == AUDIT_SYSCALL and get_field(r.body, "key") == f'"{SHADOW_KEY}"' for r in event.records)


@dataclass
class Observations:
    """Every distinct access seen, in first-seen order, plus what was skipped and why."""

    rows: dict[AccessKey, Observation] = field(default_factory=dict)
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: lines of a file source that look like records but are not proven to be the kernel's: not read
    unproven: Unproven = field(default_factory=Unproven)

    def add(self, rec: IpeAccess, when: float, exe: str | None = None, shadow: bool = False) -> None:
        if rec.op is None or rec.hook is None:
            self.skipped["record without ipe_op/ipe_hook"] += 1
            return
        key: AccessKey = (rec.op, rec.hook, rec.path, rec.dev, rec.ino)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Observation(rec.op, rec.hook, rec.path, rec.dev, rec.ino)
        self.records += 1
        row.count += 1
        row.first = min(row.first, when)
        row.last = max(row.last, when)
        row.recorded[rec.action or "?"] += 1
        if rec.enforcing is not None:
            row.enforcing[rec.enforcing] += 1
        if rec.comm is not None:
            row.comms[rec.comm] += 1
        if exe is not None:
            row.exes[exe] += 1
        row.shadow += shadow

    def add_events(self, events: Iterable[Event], since: float | None = None) -> None:
        for event in events:
            if not event.is_ipe or (since is not None and event.timestamp < since):
                continue
            accesses = [t for t in event.ipe if isinstance(t, IpeAccess)]
            if not accesses:
                continue
            syscall = event.syscall
            exe = syscall.exe if syscall is not None else None
            shadow = is_shadow(event)
            for rec in accesses:
                self.add(rec, event.timestamp, exe, shadow)

    def __iter__(self) -> Iterator[Observation]:
        return iter(self.rows.values())

    def __len__(self) -> int:
        return len(self.rows)


def read_events(source: str, *, since: float | None = None, state_dir: Path | None = None,
                unproven: Unproven | None = None) -> Iterator[Event]:
    """Every event of ``source`` (``auto``/``netlink``/``journal`` or a file), then the flush.

    A live source gives what is there now (the journal: its history from ``since``; netlink:
    only what arrives while it is read). Raises OSError (file), PermissionError (netlink
    without CAP_AUDIT_READ), ImportError (no systemd-python for the journal). A file's lines not
    proven to be the kernel's are counted in ``unproven`` (live sources hold only the kernel's).
    """
    from iped.audit.group import Grouper

    if source not in LIVE_SOURCES:
        from iped.audit.files import iter_file_events

        grouper = Grouper(2.0)
        yield from iter_file_events(source, grouper, unproven)
        yield from grouper.flush()
        return
    from iped.audit.counters import AuditCounters
    from iped.audit.follow import Follower, open_source

    counters = AuditCounters()
    live, why = open_source(source, counters, state_dir=state_dir, since=since)
    follower = Follower(live, description=why, counters=counters)
    try:
        yield from follower.on_readable()
        yield from follower.flush()
    finally:
        follower.close()


def observe(source: str, *, since: float | None = None) -> Observations:
    """The distinct accesses of ``source`` since ``since`` (UNIX time)."""
    obs = Observations()
    obs.add_events(read_events(source, since=since, unproven=obs.unproven), since)
    return obs
