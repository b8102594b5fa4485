"""Audit counters for ``iped status`` and a Prometheus textfile-collector file.

Decisions by (op, hook, action, enforcing, rule), policy loads by result and errno, config
and enforce changes, and every way a record can be lost: ENOBUFS on the netlink socket
(the kernel dropped records for us), serial gaps that never filled, records received but not
readable (a truncated netlink frame, a journal entry without the audit fields), duplicates
dropped, and netlink frames refused because the kernel did not send them.
The textfile is written to a temporary name in the same directory and renamed over the
target, so node_exporter never reads half a file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from iped.audit.group import Event, GroupStats
from iped.audit.records import IpeAccess, IpeConfigChange, IpeMacStatus, IpePolicyLoad, rule_action

#: an IpeAccess's (op, hook, enforcing, rule): what the counters keep per decision
_ACCESS_KEY = itemgetter(0, 1, 2, 8)
AccessKey = tuple[str | None, str | None, bool | None, str | None]
#: distinct (op, hook, enforcing, rule) tallies kept: a policy of one fsverity_digest= rule per
#: file, over policy versions, names rules without end. Past this many (and a quarter), the
#: least-hit are folded into one tally per (op, hook, enforcing, action), whose rule is
#: :data:`OTHER_RULES` + the action: decisions stay exact, rule hits exact for the rules kept
ACCESS_KEYS_MAX = 4096
#: the rule text of a folded tally (``OTHER_RULES action=DENY``)
OTHER_RULES = "(other rules)"


@dataclass
class AuditCounters:
    """Mutable tallies owned by one follower."""

    source: str = "none"
    #: IPE decisions by the 1420's (op, hook, enforcing, rule), as read: ``decisions`` and
    #: ``rules`` are derived from it when asked, so counting a batch is one Counter.update
    accesses: Counter[AccessKey] = field(default_factory=Counter)
    loads: Counter[tuple[str, int]] = field(default_factory=Counter)
    config_changes: int = 0
    enforce_changes: int = 0
    events: int = 0
    enobufs: int = 0
    #: records the source received but could not read (not counted in any event)
    unparsed: int = 0
    #: netlink frames refused: not sent by the kernel (port id 0)
    foreign_frames: int = 0
    group: GroupStats = field(default_factory=GroupStats)

    def count(self, event: Event) -> None:
        """Tally the IPE records of one event."""
        self.events += 1
        for rec in event.ipe:
            if isinstance(rec, IpeAccess):
                self.accesses[_ACCESS_KEY(rec)] += 1
                if len(self.accesses) > ACCESS_KEYS_MAX + ACCESS_KEYS_MAX // 4:
                    self._fold()
            elif isinstance(rec, IpePolicyLoad):
                self.loads["loaded" if rec.ok else "failed", abs(rec.errno or 0)] += 1
            elif isinstance(rec, IpeConfigChange):
                self.config_changes += 1
            elif isinstance(rec, IpeMacStatus):
                self.enforce_changes += 1

    def count_accesses(self, accesses: list[IpeAccess]) -> None:
        """Tally events whose one IPE record is each of these accesses: what :meth:`count` does
        for each, in one call (the follower's hot path)."""
        self.events += len(accesses)
        self.accesses.update(map(_ACCESS_KEY, accesses))
        if len(self.accesses) > ACCESS_KEYS_MAX + ACCESS_KEYS_MAX // 4:
            self._fold()

    def _fold(self) -> None:
        """Keep the :data:`ACCESS_KEYS_MAX` most-hit tallies; fold the others by action."""
        accesses = self.accesses
        ranked = sorted(accesses.items(), key=itemgetter(1), reverse=True)
        kept: Counter[AccessKey] = Counter()
        folded: Counter[AccessKey] = Counter()
        for key, n in ranked:
            op, hook, enforcing, rule = key
            if len(kept) < ACCESS_KEYS_MAX and (rule is None or not rule.startswith(OTHER_RULES)):
                kept[key] = n
            else:
                act = rule_action(rule)
                folded[op, hook, enforcing, OTHER_RULES if act is None else f"{OTHER_RULES} action={act}"] += n
        # (a folded tally takes a kept one's place: the table holds at most the kept, the folded
        # by op, hook, enforcing and action, and what a quarter of the bound lets in between)
        kept.update(folded)
        self.accesses = kept

    @property
    def decisions(self) -> Counter[tuple[str, str, str, bool]]:
        """Decisions by (op, hook, action, enforcing); "?" for a field the record lacks."""
        out: Counter[tuple[str, str, str, bool]] = Counter()
        for (op, hook, enforcing, rule), n in self.accesses.items():
            out[op or "?", hook or "?", rule_action(rule) or "?", bool(enforcing)] += n
        return out

    @property
    def rules(self) -> Counter[str]:
        """Decisions per rule (the kernel's rendering of the rule)."""
        out: Counter[str] = Counter()
        for (_, _, _, rule), n in self.accesses.items():
            if rule is not None:
                out[rule] += n
        return out

    @property
    def lost(self) -> dict[str, int]:
        return {"enobufs": self.enobufs, "serial_gaps": self.group.serial_gaps, "unparsed": self.unparsed}

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly snapshot (what ``iped status --json`` shows under ``audit``)."""
        from iped.errnos import errno_name

        decisions = self.decisions
        allow = sum(n for (_, _, act, _), n in decisions.items() if act == "ALLOW")
        deny = sum(n for (_, _, act, _), n in decisions.items() if act == "DENY")
        return {
            "source": self.source,
            "events": self.events,
            "decisions": {"allow": allow, "deny": deny},
            "decisions_by": [
                {"op": op, "hook": hook, "action": act, "enforcing": enf, "count": n}
                for (op, hook, act, enf), n in sorted(decisions.items())
            ],
            "rules": dict(self.rules.most_common()),
            "loads": [
                {"result": res, "errno": err, "errno_name": errno_name(err) if err else None, "count": n}
                for (res, err), n in sorted(self.loads.items())
            ],
            "config_changes": self.config_changes,
            "enforce_changes": self.enforce_changes,
            "lost": self.lost,
            "duplicates": self.group.duplicates,
            "incomplete_events": self.group.incomplete_events,
            "spurious_eoe": self.group.spurious_eoe,
            "foreign_frames": self.foreign_frames,
        }


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(c: AuditCounters) -> str:
    """The counters in Prometheus text exposition format."""
    from iped.errnos import errno_name

    lines = [
        "# HELP iped_audit_decisions_total IPE access decisions seen in audit records.",
        "# TYPE iped_audit_decisions_total counter",
    ]
    for (op, hook, act, enf), n in sorted(c.decisions.items()):
        lines.append(f'iped_audit_decisions_total{{op="{op}",hook="{hook}",action="{act}",enforcing="{int(enf)}"}} {n}')
    lines += [
        "# HELP iped_audit_rule_hits_total Decisions per rule (kernel rendering of the rule).",
        "# TYPE iped_audit_rule_hits_total counter",
    ]
    lines += [f'iped_audit_rule_hits_total{{rule="{_label(r)}"}} {n}' for r, n in sorted(c.rules.items())]
    lines += [
        "# HELP iped_audit_policy_loads_total Policy loads/updates by result and errno.",
        "# TYPE iped_audit_policy_loads_total counter",
    ]
    for (res, err), n in sorted(c.loads.items()):
        lines.append(f'iped_audit_policy_loads_total{{result="{res}",errno="{errno_name(err) if err else ""}"}} {n}')
    simple = [
        ("config_changes_total", "Active policy switches.", c.config_changes),
        ("enforce_changes_total", "Enforce/permissive switches.", c.enforce_changes),
        ("events_total", "IPE audit events handled.", c.events),
        ("duplicates_total", "Duplicate records dropped.", c.group.duplicates),
        (
            "incomplete_events_total",
            "Events emitted without their EOE (timeout or end of input).",
            c.group.incomplete_events,
        ),
        ("foreign_frames_total", "Netlink frames refused: not sent by the kernel.", c.foreign_frames),
    ]
    for name, helptext, value in simple:
        lines += [f"# HELP iped_audit_{name} {helptext}", f"# TYPE iped_audit_{name} counter"]
        lines.append(f"iped_audit_{name} {value}")
    lines += [
        "# HELP iped_audit_lost_total Audit records lost: enobufs = netlink receive overflows, "
        "serial_gaps = serials never received, unparsed = records received but not readable.",
        "# TYPE iped_audit_lost_total counter",
        f'iped_audit_lost_total{{reason="enobufs"}} {c.enobufs}',
        f'iped_audit_lost_total{{reason="serial_gaps"}} {c.group.serial_gaps}',
        f'iped_audit_lost_total{{reason="unparsed"}} {c.unparsed}',
    ]
    return "\n".join(lines) + "\n"


def write_textfile(c: AuditCounters, path: str | Path) -> None:
    """Write the metrics atomically (temp file in the same directory, fsync, rename)."""
    from iped.fsutil import write_atomically

    write_atomically(path, prometheus_text(c))
