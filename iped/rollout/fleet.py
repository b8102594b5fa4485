"""A fleet's audit records as its collector keeps them: one source per host, surveyed per host.

Past a handful of hosts nobody runs ``iped survey`` on each machine: the records already travel
to a collector. Two layouts are read, both as the collectors write them:

* systemd-journal-remote: journal files per host, ``remote-HOST.journal`` (``--split-mode=host``,
  rotated ones ``remote-HOST@....journal``), or any ``*.journal`` in a directory ``HOST/``;
* per-host audit logs (auditd's remote logging, ``ausearch --raw``, exports): ``HOST.log`` or any
  other file named after the host, or the files in a directory ``HOST/``.

Each host's records are folded into its own observations (:mod:`iped.rollout.observe`); the
survey evaluates each host's against the one policy of the wave.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iped.rollout.observe import Observations, read_events

if TYPE_CHECKING:
    from iped.audit.group import Event
    from iped.audit.records import RawRecord
    from iped.rollout.facts import Resolver
    from iped.rollout.survey import SurveyReport

_JOURNAL_HOST = re.compile(r"^(?:remote-)?(?P<host>.+?)(?:@[^/]*)?\.journal~?$")


@dataclass(frozen=True, slots=True)
class HostSource:
    """One host of a collection: its journal files, or its audit log files."""

    host: str
    journals: tuple[Path, ...] = ()
    logs: tuple[Path, ...] = ()


def hosts_in(collection: Path) -> list[HostSource]:
    """The hosts of a collector's directory, by name. Raises OSError (unreadable directory)."""
    journals: dict[str, list[Path]] = {}
    logs: dict[str, list[Path]] = {}
    for entry in sorted(collection.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            inside = sorted(p for p in entry.iterdir() if p.is_file() and not p.name.startswith("."))
            journals.setdefault(entry.name, []).extend(p for p in inside if _JOURNAL_HOST.match(p.name))
            logs.setdefault(entry.name, []).extend(p for p in inside if not _JOURNAL_HOST.match(p.name))
        elif m := _JOURNAL_HOST.match(entry.name):
            journals.setdefault(m.group("host"), []).append(entry)
        elif entry.is_file():
            logs.setdefault(entry.name.removesuffix(".log"), []).append(entry)
    names = sorted(set(journals) | set(logs))
    return [HostSource(h, tuple(journals.get(h, ())), tuple(logs.get(h, ()))) for h in names
            if journals.get(h) or logs.get(h)]


class _JournalFiles:
    """The follower's source over one host's journal files (libsystemd reads them)."""

    name = "journal"
    track_gaps = False

    def __init__(self, files: tuple[Path, ...], since: float | None) -> None:
        from iped.audit.journal import JournalSource

        self.src = JournalSource(None, since=since if since is not None else 0.0, files=[str(f) for f in files])

    def fileno(self) -> int:
        return self.src.fileno()

    def read(self) -> list[RawRecord]:
        return self.src.read()

    def close(self) -> None:
        self.src.close()


def host_events(host: HostSource, since: float | None = None) -> Iterator[Event]:
    """Every event of one host: its audit logs, then its journal files."""
    for log in host.logs:
        yield from read_events(str(log), since=since)
    if host.journals:
        from iped.audit.follow import Follower

        follower = Follower(_JournalFiles(host.journals, since), description=f"journal files of {host.host}")
        try:
            yield from follower.on_readable()
            yield from follower.flush()
        finally:
            follower.close()


def host_observations(host: HostSource, since: float | None = None) -> Observations:
    obs = Observations()
    obs.add_events(host_events(host, since), since)
    return obs


@dataclass(frozen=True, slots=True)
class FleetSurvey:
    """One policy against every host of a collection: each host's report, and the fleet's."""

    reports: tuple[tuple[str, SurveyReport], ...]

    @property
    def breaks(self) -> bool:
        return any(r.breaks for _, r in self.reports)

    def hosts_by_verdict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"go": [], "no-go": [], "no-data": []}
        for host, report in self.reports:
            out[report.verdict].append(host)
        return out

    def programs(self) -> list[dict[str, Any]]:
        """Would-be denials across the fleet: per program, the hosts and the records."""
        seen: dict[str, dict[str, Any]] = {}
        for host, report in self.reports:
            for group in report.by_program():
                row = seen.setdefault(group["program"], {"program": group["program"], "hosts": [], "count": 0})
                row["hosts"].append(host)
                row["count"] += group["count"]
        return sorted(seen.values(), key=lambda r: (-len(r["hosts"]), -r["count"], r["program"]))

    @property
    def verdict(self) -> str:
        """``go`` only when every host is ``go``; ``no-data`` when no host observed anything."""
        verdicts = {r.verdict for _, r in self.reports}
        if not verdicts or verdicts == {"no-data"}:
            return "no-data"
        return "go" if verdicts == {"go"} else "no-go"

    def as_dict(self) -> dict[str, Any]:
        first = self.reports[0][1] if self.reports else None
        return {
            "schema_version": 1,
            "policy": {"origin": first.origin, "name": first.name, "version": first.version} if first else None,
            "verdict": self.verdict,
            "hosts": len(self.reports),
            "by_verdict": self.hosts_by_verdict(),
            "programs": self.programs(),
            "per_host": {host: report.as_dict() for host, report in self.reports},
        }

    def lines(self) -> list[str]:
        by = self.hosts_by_verdict()
        first = self.reports[0][1] if self.reports else None
        policy = f"{first.name} {first.version} ({first.origin})" if first else "?"
        out = [f"fleet survey: policy {policy} against {len(self.reports)} host(s): "
               f"{len(by['go'])} go, {len(by['no-go'])} no-go, {len(by['no-data'])} without data"]
        for host in by["no-go"]:
            report = dict(self.reports)[host]
            out.append(f"  NO-GO {host}: {len(report.denied)} distinct access(es) would be denied, "
                       f"{len(report.unknown)} unknown")
        for host in by["no-data"]:
            out.append(f"  NO DATA {host}: no IPE access record")
        for row in self.programs():
            out.append(f"  would deny {row['program']} on {len(row['hosts'])} host(s) ({row['count']} records): "
                       f"{', '.join(row['hosts'][:10])}{' ...' if len(row['hosts']) > 10 else ''}")
        out.append(f"{self.verdict.upper()} for the wave" + ("" if self.verdict == "go" else
                   ": the hosts above need a policy change (or their own policy) first"))
        return out


def survey_fleet(text: bytes, origin: str, hosts: list[HostSource], resolver: Resolver,
                 since: float | None = None) -> FleetSurvey:
    """Each host's observations against the policy ``text``. Raises PolicyError (bad policy)."""
    from iped.rollout.survey import survey

    reports = []
    for host in hosts:
        obs = host_observations(host, since)
        reports.append((host.host, survey(text, origin, obs, resolver, obs.records)))
    return FleetSurvey(tuple(reports))


def fleet_observations(hosts: list[HostSource], since: float | None = None) -> Observations:
    """Every host's accesses in one set of observations: what one policy for the wave must allow."""
    merged = Observations()
    for host in hosts:
        merged.add_events(host_events(host, since), since)
    return merged
