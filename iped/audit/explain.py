"""Explain IPE audit records: which policy line decided, and what a failed load's errno means.

A 1420 record names the rule that decided in the kernel's own rendering
(security/ipe/audit.c: ``audit_rule``/``audit_default_rule``). Rendering every rule of the
policy source the same way (:mod:`iped.emulator.audit`) gives an exact map back to the file and
line. Two rules of one op that render identically cannot be told apart by the kernel's record;
evaluation is first-match, so the first one in file order is the one that decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iped.audit.records import IpeAccess, IpePolicyLoad, decode_rule


@dataclass(frozen=True, slots=True)
class RuleLocation:
    """Where a rule lives: ``kind`` is ``rule``, ``op_default`` or ``global_default``."""

    file: str
    line: int | None
    kind: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True)
class PolicyIndex:
    """Rendered rule text -> location, for one policy source file."""

    file: str
    name: str
    version: str
    rules: dict[str, RuleLocation]

    @classmethod
    def from_text(cls, text: bytes, file: str) -> PolicyIndex:
        """Parse ``text`` with the kernel-exact parser and index every rule and default.

        Raises iped.emulator.policy_parser.PolicyError for a policy the kernel would reject.
        """
        from iped.emulator.audit import audit_default_rule, audit_rule
        from iped.emulator.policy_parser import Op, parse_policy

        parsed = parse_policy(text)
        rules: dict[str, RuleLocation] = {}
        for rule in parsed.rules:
            rules.setdefault(audit_rule(rule).decode("utf-8", "surrogateescape"), RuleLocation(file, rule.line, "rule"))
        for op in Op:
            table = parsed.table(op)
            if table.default is not None:
                rendered = audit_default_rule(table.default, op).decode()
                rules[rendered] = RuleLocation(file, table.default_line, "op_default")
        if parsed.global_default is not None:
            rendered = audit_default_rule(parsed.global_default, None).decode()
            rules[rendered] = RuleLocation(file, parsed.global_default_line, "global_default")
        return cls(file, parsed.name.decode("utf-8", "backslashreplace"), str(parsed.version), rules)

    @classmethod
    def from_file(cls, path: str | Path) -> PolicyIndex:
        return cls.from_text(Path(path).read_bytes(), str(path))

    def locate(self, rule: str) -> RuleLocation | None:
        """The location of a 1420 ``rule=`` text, or None when this policy has no such rule."""
        return self.rules.get(rule)


@dataclass(frozen=True, slots=True)
class AccessExplanation:
    """Why a 1420 decision came out as it did."""

    decision: str | None
    blocked: bool
    match: str | None
    rule_text: str | None
    location: RuleLocation | None
    summary: str


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """What a 1420 record's op, hook, enforcing and rule say, whatever the file: everything of
    :class:`AccessExplanation` but the file's name, which the summary puts between ``head`` and
    ``tail``. Many records share one verdict, so renderers keep them by those four fields."""

    decision: str | None
    blocked: bool
    match: str | None
    rule_text: str | None
    location: RuleLocation | None
    head: str
    tail: str


def rule_verdict(rec: IpeAccess, index: PolicyIndex | None) -> RuleVerdict:
    """The verdict of ``rec``'s rule (reads only its op, hook, enforcing and rule).

    A record whose ``rule=`` is missing or ends before its action (cut in transit or by a
    pasting) has no decision: it is said to be incomplete, never taken for an ALLOW.
    """
    decision = rec.action
    if decision is None:
        rule_text = decode_rule(rec.rule) if rec.rule is not None else None
        missing = "no rule= field" if rec.rule is None else f"rule={rec.rule!r} ends before its action"
        tail = f" via {rec.hook}: incomplete record ({missing}): the decision is unknown"
        return RuleVerdict(None, False, None, rule_text, None, f"{rec.op} of ", tail)
    blocked = decision == "DENY" and rec.enforcing is not False
    location = index.locate(rec.rule) if index is not None and rec.rule is not None else None
    what = {
        "rule": "matched the rule",
        "op_default": f"no rule for {rec.op} matched; the op's DEFAULT applied",
        "global_default": "no rule matched and the op has no DEFAULT; the global DEFAULT applied",
    }.get(rec.match or "", "decided by")
    outcome = (
        "blocked" if blocked else "would be blocked (permissive: enforcing=0)" if decision == "DENY" else "allowed"
    )
    tail = f" via {rec.hook} {outcome}: {what}"
    rule_text = decode_rule(rec.rule) if rec.rule is not None else None
    if rec.match == "rule":
        tail += f" {rule_text!r}"
    if location is not None:
        tail += f" at {location}"
    elif index is not None:
        tail += f" (not in {index.file}: the active policy differs from this file)"
    return RuleVerdict(decision, blocked, rec.match, rule_text, location, f"{rec.op} of ", tail)


def access_target(rec: IpeAccess) -> str:
    """The file a 1420 record's summary names."""
    return rec.path if rec.path is not None else "anonymous memory/no file"


def explain_access(rec: IpeAccess, index: PolicyIndex | None) -> AccessExplanation:
    """Match a 1420 record to its policy line and say what happened in one sentence."""
    v = rule_verdict(rec, index)
    summary = v.head + access_target(rec) + v.tail
    return AccessExplanation(v.decision, v.blocked, v.match, v.rule_text, v.location, summary)


def explain_load(rec: IpePolicyLoad) -> str:
    """One sentence for a 1422 record; failed loads spell out the errno in IPE's terms."""
    from iped.errnos import describe_errno

    if rec.ok:
        return f"policy {rec.name!r} version {rec.version} loaded ({rec.digest})"
    if rec.errno is None:
        return f"policy load failed (res={rec.res})"
    return f"policy load/update failed: {describe_errno(abs(rec.errno))}"


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One rule of the op and, for this file, the first property that did not hold (None = all held)."""

    line: int
    rule: str
    action: str
    failed: str | None


@dataclass(frozen=True, slots=True)
class FileExplanation:
    """What the policy would decide for one op on one file, and why."""

    op: str
    path: str
    decision: str
    decided_by: str
    location: RuleLocation
    checks: tuple[RuleCheck, ...]
    allowing: tuple[RuleCheck, ...]

    def lines(self) -> list[str]:
        out = [f"{self.op} of {self.path}: {self.decision} by {self.decided_by} at {self.location}"]
        if self.decision == "DENY":
            if not self.allowing:
                out.append(f"  no ALLOW rule for op={self.op} in {self.location.file}: add one")
            for chk in self.allowing:
                out.append(f"  {self.location.file}:{chk.line} would allow it if {chk.failed} held: {chk.rule}")
        return out


def active_policy(root: Path = Path("/sys/kernel/security/ipe")) -> tuple[bytes, str] | None:
    """The text of the active policy from securityfs and a name for it, or None (no IPE/none active)."""
    try:
        for node in sorted((root / "policies").iterdir()):
            if (node / "active").read_bytes().strip() == b"1":
                return (node / "policy").read_bytes(), str(node / "policy")
    except OSError:
        return None
    return None


def explain_file(
    text: bytes, file: str, info: Any, op_name: str = "EXECUTE", hook: str = "BPRM_CHECK"
) -> FileExplanation:
    """Evaluate ``info`` (an emulator FileInfo) for ``op_name`` against the policy ``text``.

    The decision comes from the emulator's reference evaluator; each rule of the op is then
    checked property by property to name the one that failed for this file.
    Raises PolicyError for a policy the kernel would reject, ValueError for an unknown op.
    """
    from iped.emulator.audit import audit_digest, audit_rule
    from iped.emulator.eval import build_eval_ctx, evaluate_linear, property_evaluators
    from iped.emulator.policy_parser import Op, parse_policy
    from iped.emulator.types import Hook, KernelConfig, MatchType

    parsed = parse_policy(text)
    op = Op(op_name)
    ctx = build_eval_ctx(info, op, Hook(hook))
    evaluators = property_evaluators(KernelConfig())
    decision = evaluate_linear(parsed, ctx, evaluators)
    checks = []
    for rule in parsed.table(op).rules:
        failed = None
        for prop in rule.props:
            if not evaluators[prop.type](ctx.facts, prop):
                rendered = prop.type.value + (audit_digest(prop.value).decode() if prop.value else "")
                failed = decode_rule(rendered)
                break
        checks.append(RuleCheck(rule.line, decode_rule(audit_rule(rule).decode()), str(rule.action), failed))
    line: int | None
    if decision.match_type is MatchType.RULE and decision.rule is not None:
        decided_by, line = "rule", decision.rule.line
    elif decision.match_type is MatchType.TABLE:
        decided_by, line = f"DEFAULT op={op}", parsed.table(op).default_line
    else:
        decided_by, line = "global DEFAULT", parsed.global_default_line
    allowing = tuple(c for c in checks if c.action == "ALLOW" and c.failed is not None)
    return FileExplanation(
        str(op), getattr(info, "path", "?"), str(decision.action), decided_by,
        RuleLocation(file, line, decided_by), tuple(checks), allowing,
    )  # fmt: skip
