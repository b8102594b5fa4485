"""The go/no-go list: what ran that a policy would deny once enforced.

Every distinct access observed (:mod:`iped.rollout.observe`) is evaluated against the policy
with the emulator (:mod:`iped.rollout.engine`) and the file's properties (:mod:`iped.rollout.facts`),
exactly as the kernel would evaluate it. An access whose file cannot be resolved any more is
"unknown": not proven safe, so it counts against a go -- unless no property of any file can
change the policy's decision for its op (an allow-everything policy allows it whatever it is).
The report groups the would-be denials by program (the file executed or loaded) and by the rule
that would deny them, with counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from iped.audit.explain import PolicyIndex
from iped.audit.records import decode_rule
from iped.rollout import engine
from iped.rollout.facts import Resolver
from iped.rollout.observe import Observation, iso

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy decides for one observed access; ``action`` None: the file is unknown."""

    observation: Observation
    action: str | None
    rule: str | None = None  # as the kernel renders it in rule="..."
    match: str | None = None  # rule, op_default or global_default
    line: int | None = None
    problem: str | None = None

    @property
    def denied(self) -> bool:
        return self.action == "DENY"

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.observation.as_dict(), "decision": self.action,
            "rule": decode_rule(self.rule) if self.rule is not None else None,
            "match": self.match, "line": self.line, "problem": self.problem,
        }  # fmt: skip


def evaluate_all(
    engine_: engine.PolicyEngine, index: PolicyIndex, rows: Iterable[Observation], resolver: Resolver
) -> list[Verdict]:
    """One :class:`Verdict` per observation, in the order given."""
    out = []
    for row in rows:
        resolved = resolver.resolve(row.path, row.dev, row.ino)
        if resolved.problem is not None:
            out.append(_without_properties(engine_, index, row, resolved.problem))
            continue
        try:
            rec = engine_.evaluate(row.op, row.hook, resolved.info)
        except ValueError as e:
            out.append(Verdict(row, None, problem=f"the emulator cannot evaluate it: {e}"))
            continue
        where = index.locate(rec.rule) if rec.rule is not None else None
        out.append(Verdict(row, rec.action, rec.rule, rec.match, where.line if where is not None else None))
    return out


def _without_properties(engine_: engine.PolicyEngine, index: PolicyIndex, row: Observation, problem: str) -> Verdict:
    """The verdict on an access whose file cannot be resolved now: known when no property of the
    file can change the policy's decision for its op (an allow-everything policy), else unknown."""
    fixed = engine.fixed_action(engine_.parsed, row.op)
    if fixed is None:
        return Verdict(row, None, problem=problem)
    action, has_rules = fixed
    note = f"{problem}; decided without it: every rule for {row.op} says {action}"
    if has_rules:  # which rule would match depends on the file; its action does not
        return Verdict(row, action, problem=note)
    rec = engine_.evaluate(row.op, row.hook, None)  # the op's DEFAULT (or the global one), as for any file
    where = index.locate(rec.rule) if rec.rule is not None else None
    return Verdict(row, rec.action, rec.rule, rec.match, where.line if where is not None else None, note)


@dataclass(frozen=True)
class SurveyReport:
    """The verdict on every observed access under one policy."""

    origin: str
    name: str
    version: str
    records: int
    verdicts: tuple[Verdict, ...]

    @property
    def denied(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.denied]

    @property
    def unknown(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.action is None]

    @property
    def verdict(self) -> str:
        """``go`` (every observed access is allowed), ``no-go``, or ``no-data`` (nothing observed)."""
        if not self.verdicts:
            return "no-data"
        return "no-go" if self.denied or self.unknown else "go"

    @property
    def breaks(self) -> bool:
        """True unless accesses were observed and every one is known to be allowed."""
        return self.verdict != "go"

    def by_program(self) -> list[dict[str, Any]]:
        """Would-be denials per program, most frequent first."""
        groups: dict[str, list[Verdict]] = {}
        for v in self.denied:
            groups.setdefault(v.observation.program, []).append(v)
        out = []
        for program, vs in groups.items():
            out.append({
                "program": program,
                "count": sum(v.observation.count for v in vs),
                "accesses": [v.as_dict() for v in vs],
            })  # fmt: skip
        return sorted(out, key=lambda g: (-g["count"], g["program"]))

    def by_rule(self) -> list[dict[str, Any]]:
        """Would-be denials per deciding rule (a DENY rule or a DEFAULT), most frequent first."""
        groups: dict[str, list[Verdict]] = {}
        for v in self.denied:
            groups.setdefault(v.rule or "?", []).append(v)
        out = []
        for rule, vs in groups.items():
            out.append({
                "rule": decode_rule(rule), "match": vs[0].match, "line": vs[0].line,
                "count": sum(v.observation.count for v in vs),
                "programs": sorted({v.observation.program for v in vs}),
            })  # fmt: skip
        return sorted(out, key=lambda g: (-g["count"], g["rule"]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "policy": {"origin": self.origin, "name": self.name, "version": self.version},
            "records": self.records,
            "distinct": len(self.verdicts),
            "verdict": self.verdict,
            "would_deny": {"records": sum(v.observation.count for v in self.denied), "distinct": len(self.denied)},
            "by_program": self.by_program(),
            "by_rule": self.by_rule(),
            "unknown": [v.as_dict() for v in self.unknown],
        }

    def lines(self) -> list[str]:
        """The report for people."""
        head = (
            f"survey: policy {self.name} {self.version} ({self.origin}) against "
            f"{_count(self.records, 'IPE decision record')} ({_count(len(self.verdicts), 'distinct access')})"
        )
        out = [head]
        denied = self.denied
        if self.verdict == "no-data":
            out.append("NO DATA: no IPE access record was observed, so nothing is known to be safe")
            return out
        if not self.breaks:
            out.append("GO: nothing that ran would be denied once this policy is enforced")
            return out
        if denied:
            programs = _count(len(self.by_program()), "program")
            records = _count(sum(v.observation.count for v in denied), "record")
            out.append(f"NO-GO: {programs} ({records}) would be denied once enforced")
            out.append("by program:")
            for group in self.by_program():
                for acc in group["accesses"]:
                    where = f" [{self.origin}:{acc['line']}]" if acc["line"] is not None else ""
                    by = ", ".join(acc["by"][:3]) or "?"
                    out.append(
                        f"  {group['program']}  {acc['op']}/{acc['hook']} x{acc['count']} by {by} "
                        f"(first {acc['first']}, last {acc['last']}) -> {acc['rule']}{where}"
                    )
            out.append("by rule:")
            for group in self.by_rule():
                where = f"{self.origin}:{group['line']}" if group["line"] is not None else self.origin
                records, programs = _count(group["count"], "record"), _count(len(group["programs"]), "program")
                out.append(f"  {where} {group['rule']}: {records}, {programs}")
        if self.unknown:
            out.append(f"UNKNOWN: {_count(len(self.unknown), 'access')} whose file properties cannot be read now:")
            for v in self.unknown:
                o = v.observation
                out.append(f"  {o.program}  {o.op}/{o.hook} x{o.count} (last {iso(o.last)}): {v.problem}")
        return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("s") else "s")


def survey(text: bytes, origin: str, rows: Iterable[Observation], resolver: Resolver, records: int) -> SurveyReport:
    """Evaluate every observed access against the policy ``text`` (from ``origin``).

    Raises PolicyError for a policy the kernel would reject.
    """
    engine_ = engine.PolicyEngine(text)
    index = PolicyIndex.from_text(text, origin)
    verdicts = evaluate_all(engine_, index, rows, resolver)
    parsed = engine_.parsed
    name = parsed.name.decode("utf-8", "backslashreplace")
    return SurveyReport(origin, name, str(parsed.version), records, tuple(verdicts))
