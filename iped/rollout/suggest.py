"""audit2allow for IPE: rules that allow what a policy would deny, from the files' properties.

For every access the base policy would deny (a :mod:`~iped.rollout.survey` of it), the file's
IPE properties on this host say which rule could allow it. The broadest *safe* rule wins:

1. ``boot_verified=TRUE`` for a file of the initramfs (one rule covers the whole initramfs);
2. ``dmverity_roothash=ALG:HEX`` for a file on a dm-verity volume (one rule per volume: every
   file on it is covered, and nothing else is);
3. ``fsverity_digest=ALG:HEX`` for an fs-verity file (one rule per file content).

``dmverity_signature=TRUE`` / ``fsverity_signature=TRUE`` also hold for signed volumes/files, but
they allow *every* volume or file signed by a trusted key: a trust decision, listed as an
alternative, never chosen. Never suggested, always flagged: a file with no property at all
(only a DEFAULT ALLOW could allow it), an access with no file (anonymous memory, a module loaded
from a buffer), an access an explicit DENY rule of the base refuses, and a file whose properties
cannot be read now.

The result is the base text with the new rules after its existing rules (so every rule the
base already had keeps precedence: first match wins) and before the DEFAULT lines that follow
them, each under a comment naming what needed it, and a higher ``policy_version``. It must parse
with the shared parser, and a replay of every observed access through the emulator must leave
denied exactly the flagged ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iped.audit.records import decode_rule
from iped.rollout import engine
from iped.rollout.facts import Resolver
from iped.rollout.observe import Observation, iso
from iped.rollout.policies import next_version, split_lines
from iped.rollout.survey import SurveyReport, Verdict, evaluate_all, survey

if TYPE_CHECKING:
    from iped.emulator import FileInfo
    from iped.emulator.policy_parser import ParsedPolicy

SCHEMA_VERSION = 1
#: how many "needed by" comment lines one rule gets before "... and N more"
COMMENT_LINES = 20


@dataclass(frozen=True, slots=True)
class Candidate:
    """A property that holds for a file, as a policy word, and what else it would allow."""

    kind: str
    word: str
    scope: str


def _digest_word(prop: str, value: tuple[str, bytes]) -> str:
    return f"{prop}={value[0]}:{value[1].hex()}"


def candidates(info: FileInfo | None) -> list[Candidate]:
    """Every property that holds for ``info``, broadest safe one first (signatures last)."""
    if info is None:
        return []
    out = []
    if info.boot_verified:
        out.append(Candidate("boot_verified", "boot_verified=TRUE", "every file of the initramfs"))
    if info.dmverity_roothash is not None:
        word = _digest_word("dmverity_roothash", info.dmverity_roothash)
        out.append(Candidate("dmverity_roothash", word, f"every file on the dm-verity volume {info.dev}"))
    if info.fsverity_digest is not None:
        word = _digest_word("fsverity_digest", info.fsverity_digest)
        out.append(Candidate("fsverity_digest", word, "files with exactly this content"))
    if info.dmverity_roothash is not None and info.dmverity_signature:
        out.append(Candidate("dmverity_signature", "dmverity_signature=TRUE", "every volume signed by a trusted key"))
    if info.fsverity_digest is not None and info.fsverity_signature:
        out.append(Candidate("fsverity_signature", "fsverity_signature=TRUE", "every file signed by a trusted key"))
    return out


#: the kinds a suggestion may choose; the signature kinds are alternatives only
CHOSEN_KINDS = ("boot_verified", "dmverity_roothash", "fsverity_digest")


@dataclass
class SuggestedRule:
    """One new rule and the accesses that need it."""

    op: str
    candidate: Candidate
    needed_by: list[Observation] = field(default_factory=list)
    alternatives: set[str] = field(default_factory=set)

    @property
    def text(self) -> str:
        return f"op={self.op} {self.candidate.word} action=ALLOW"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.text, "kind": self.candidate.kind, "scope": self.candidate.scope,
            "alternatives": sorted(self.alternatives), "needed_by": [o.as_dict() for o in self.needed_by],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Flagged:
    """A would-be denial no rule is suggested for, and why."""

    verdict: Verdict
    kind: str  # no_property, no_file, explicit_deny, unknown
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.verdict.as_dict(), "flag": self.kind, "reason": self.reason}


@dataclass(frozen=True)
class Replay:
    """Every observed access evaluated again, under the suggested policy."""

    records: int
    distinct: int
    still_denied: tuple[Verdict, ...]
    unexpected: tuple[Verdict, ...]  # still denied but not flagged: a bug, never a suggestion

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "distinct": self.distinct,
            "still_denied": {"records": sum(v.observation.count for v in self.still_denied),
                             "distinct": len(self.still_denied)},
            "unexpected": [v.as_dict() for v in self.unexpected],
        }  # fmt: skip


@dataclass(frozen=True)
class Suggestion:
    base: SurveyReport
    text: bytes
    name: str
    version: str
    rules: tuple[SuggestedRule, ...]
    flagged: tuple[Flagged, ...]
    replay: Replay

    @property
    def complete(self) -> bool:
        """True when the suggested policy allows every observed access."""
        return not self.replay.still_denied

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "base": {"origin": self.base.origin, "name": self.base.name, "version": self.base.version},
            "policy": {"name": self.name, "version": self.version, "text": self.text.decode("utf-8", "replace")},
            "rules": [r.as_dict() for r in self.rules],
            "flagged": [f.as_dict() for f in self.flagged],
            "verification": self.replay.as_dict(),
        }

    def summary(self) -> list[str]:
        """What happened, for stderr (stdout carries the policy text)."""
        base = self.base
        out = [
            f"suggest: base {base.name} {base.version} ({base.origin}) would deny {len(base.denied)} of "
            f"{len(base.verdicts)} distinct accesses ({len(base.unknown)} unknown); {len(self.rules)} new rules "
            f"in {self.name} {self.version}"
        ]
        for f in self.flagged:
            o = f.verdict.observation
            out.append(f"FLAGGED {o.program} {o.op}/{o.hook} x{o.count}: {f.reason}")
        r = self.replay
        out.append(
            f"verification: {r.records} records ({r.distinct} distinct) replayed under the suggestion: "
            f"{len(r.still_denied)} still denied or unknown ({len(self.flagged)} flagged), "
            f"{len(r.unexpected)} unexpected"
        )
        return out


def _clean(text: str) -> str:
    """A value fit for a one-line policy comment (no line breaks, nothing unprintable)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _needed_by(o: Observation) -> str:
    by = ", ".join(o.by[:3]) or "?"
    return _clean(f"#   {o.program} {o.op}/{o.hook} x{o.count} by {by}, first {iso(o.first)}, last {iso(o.last)}")


def _rule_block(rule: SuggestedRule) -> list[str]:
    lines = [f"# iped suggest: {rule.candidate.kind} ({rule.candidate.scope}), needed by:"]
    lines += [_needed_by(o) for o in rule.needed_by[:COMMENT_LINES]]
    if len(rule.needed_by) > COMMENT_LINES:
        lines.append(f"#   ... and {len(rule.needed_by) - COMMENT_LINES} more")
    if rule.alternatives:
        lines.append("#   (also true: " + ", ".join(sorted(rule.alternatives)) + "; broader, not chosen)")
    lines.append(rule.text)
    return lines


def _flag_block(flagged: Iterable[Flagged]) -> list[str]:
    out = []
    for f in flagged:
        o = f.verdict.observation
        out.append(_clean(f"# iped suggest: NOT ALLOWED {o.program} {o.op}/{o.hook} x{o.count}: {f.reason}"))
    return out


def insertion_line(parsed: ParsedPolicy) -> int:
    """How many lines of the base come before the new rules.

    After the last existing rule (each keeps precedence over the new ones), and before the
    DEFAULT lines that follow it; with no rules, before the first DEFAULT.
    """
    defaults = [parsed.global_default_line] + [t.default_line for t in parsed.tables]
    default_lines = sorted(d for d in defaults if d is not None)
    rule_lines = [r.line for r in parsed.rules]
    if not rule_lines:
        return default_lines[0] - 1
    last = max(rule_lines)
    later = [d for d in default_lines if d > last]
    return later[0] - 1 if later else last


def render(base_text: bytes, parsed: ParsedPolicy, rules: Iterable[SuggestedRule], flagged: Iterable[Flagged]) -> bytes:
    """The base text with the rule and flag blocks inserted and a higher policy_version.

    With no rule to add, the base itself: a new version that allows nothing more would only be
    a needless kernel update (the flagged accesses are on stderr and in JSON either way)."""
    block: list[str] = []
    for rule in rules:
        block += _rule_block(rule)
    if not block:
        return base_text
    block += _flag_block(flagged)
    lines = split_lines(base_text)
    at = insertion_line(parsed)
    if at > 0 and not lines[at - 1].endswith((b"\n", b"\r")):
        lines[at - 1] += b"\n"
    new = b"".join(line.encode("utf-8", "surrogateescape") + b"\n" for line in block)
    return next_version(b"".join(lines[:at]) + new + b"".join(lines[at:]))


def _flag_for(v: Verdict, info: FileInfo | None) -> Flagged | None:
    """Why no rule is suggested for a denial (None: a rule can be)."""
    if v.action is None or v.problem is not None:  # no properties to build a rule from
        return Flagged(v, "unknown", f"its file's properties cannot be read now ({v.problem})")
    if v.match == "rule":
        return Flagged(v, "explicit_deny", f"the base denies it on purpose, line {v.line}: {decode_rule(v.rule or '')}")
    if v.observation.path is None:
        return Flagged(v, "no_file", "no file (anonymous memory or a buffer): no property can allow it")
    if not any(c.kind in CHOSEN_KINDS for c in candidates(info)):
        return Flagged(
            v, "no_property",
            "no IPE property: not in the initramfs, not on a dm-verity volume, not fs-verity; "
            "only a DEFAULT action=ALLOW could allow it",
        )  # fmt: skip
    return None


def suggest(base_text: bytes, origin: str, rows: Iterable[Observation], resolver: Resolver, records: int) -> Suggestion:
    """Rules that allow what ``base_text`` would deny among ``rows``, verified by replay.

    Raises PolicyError for a base the kernel would reject.
    """
    rows = list(rows)
    report = survey(base_text, origin, rows, resolver, records)
    rules: dict[tuple[str, str], SuggestedRule] = {}
    flagged: list[Flagged] = []
    for v in report.verdicts:
        if v.action == "ALLOW":
            continue
        o = v.observation
        info = resolver.resolve(o.path, o.dev, o.ino).info
        flag = _flag_for(v, info)
        if flag is not None:
            flagged.append(flag)
            continue
        cands = candidates(info)
        chosen = next(c for c in cands if c.kind in CHOSEN_KINDS)
        rule = rules.setdefault((o.op, chosen.word), SuggestedRule(o.op, chosen))
        rule.needed_by.append(o)
        rule.alternatives.update(c.word for c in cands if c is not chosen)
    base = engine.parse_policy(base_text)
    text = render(base_text, base, rules.values(), flagged)
    new = engine.PolicyEngine(text)  # the shared parser: PolicyError here would be a bug of render()
    index_origin = f"{origin} (suggested)"
    from iped.audit.explain import PolicyIndex

    replayed = evaluate_all(new, PolicyIndex.from_text(text, index_origin), rows, resolver)
    flagged_keys = {f.verdict.observation.key for f in flagged}
    still = tuple(v for v in replayed if v.action != "ALLOW")
    replay = Replay(records, len(replayed), still, tuple(v for v in still if v.observation.key not in flagged_keys))
    return Suggestion(
        report, text, new.parsed.name.decode("utf-8", "backslashreplace"), str(new.parsed.version),
        tuple(rules.values()), tuple(flagged), replay,
    )  # fmt: skip
