"""A policy compiled for fast decisions; no kernel counterpart (the kernel scans linearly, eval.c).

:func:`compile_policy` builds a :class:`CompiledPolicy` once, when a policy becomes active
(policy.py's ``_make_active``): per-op candidate lists with digest rules indexed by
``(alg, digest)``, so a 700-digest policy decides as fast as a 10-rule one while keeping
first-match-wins exactly (an earlier rule that matches always beats an indexed later one,
because candidates are merged in file order). :func:`evaluate` gives what
:func:`iped.emulator.eval.evaluate_linear` gives; tests and benchmarks/bench_eval.py hold the two
side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iped.emulator.eval import Evaluator, default_decision, kconfig_off_stub, property_evaluators
from iped.emulator.policy_parser import Op, ParsedPolicy, PropType, Rule
from iped.emulator.types import Decision, EvalContext, Facts, MatchType

if TYPE_CHECKING:
    from iped.emulator.types import KernelConfig


Predicate = Callable[[Facts], bool]
_CACHE_MAX = 1 << 16


def _compile_rule(rule: Rule, evaluators: Mapping[PropType, Evaluator]) -> Predicate | None:
    """One closure per rule; None when a property is a Kconfig-off stub (the rule can never match)."""
    pairs = tuple((evaluators[p.type], p) for p in rule.props)
    if any(ev is kconfig_off_stub for ev, _ in pairs):
        return None
    if not pairs:
        return lambda facts: True
    if len(pairs) == 1:
        (ev, prop) = pairs[0]
        return lambda facts: ev(facts, prop)
    return lambda facts: all(ev(facts, prop) for ev, prop in pairs)


def _index_key(rule: Rule) -> tuple[int, tuple[bytes, bytes]] | None:
    """Which digest bucket a rule lives in: its first fsverity_digest, else its first roothash.

    A rule with a digest property can only match a file with exactly that digest (all of a rule's
    properties must hold), so it only needs to be looked at for such files.
    """
    for slot, ptype in ((3, PropType.FSV_DIGEST), (1, PropType.DMV_ROOTHASH)):
        for p in rule.props:
            if p.type is ptype and p.value is not None:
                return slot, (p.value.alg, p.value.digest)
    return None


CompiledRule = tuple[int, Predicate, Decision]


@dataclass
class _OpPlan:
    """One op's compiled rules: always-scanned rules, digest buckets, the default decision."""

    scan: tuple[CompiledRule, ...]
    buckets: dict[tuple[int, tuple[bytes, bytes]], tuple[CompiledRule, ...]]
    default: Decision
    merged: dict[tuple[Any, Any], tuple[CompiledRule, ...]] = field(default_factory=dict)

    def candidates(self, fsv: tuple[bytes, bytes] | None, dmv: tuple[bytes, bytes] | None) -> tuple[CompiledRule, ...]:
        """The rules that can match a file with these digests, in file order (cached)."""
        key = (fsv, dmv)
        hit = self.merged.get(key)
        if hit is not None:
            return hit
        extra: tuple[CompiledRule, ...] = ()
        if fsv is not None:
            extra += self.buckets.get((3, fsv), ())
        if dmv is not None:
            extra += self.buckets.get((1, dmv), ())
        out = tuple(sorted(self.scan + extra, key=lambda c: c[0])) if extra else self.scan
        if len(self.merged) >= _CACHE_MAX:
            self.merged.clear()
        self.merged[key] = out
        return out


class CompiledPolicy:
    """A parsed policy compiled for one Kconfig: :meth:`decide` gives what evaluate_linear gives.

    Two layers: :meth:`decide_uncached` walks only the candidate rules of the file's digests in
    file order; :meth:`decide` memoises whole decisions keyed on ``(op, facts)`` — exact, because
    a decision depends on nothing else.
    """

    __slots__ = ("_cache", "_plans", "_unknown", "parsed")

    def __init__(self, parsed: ParsedPolicy, evaluators: Mapping[PropType, Evaluator]) -> None:
        self.parsed = parsed
        self._plans: dict[Op, _OpPlan] = {}
        for op in Op:
            scan: list[CompiledRule] = []
            buckets: dict[tuple[int, tuple[bytes, bytes]], list[CompiledRule]] = {}
            for i, rule in enumerate(parsed.table(op).rules):
                pred = _compile_rule(rule, evaluators)
                if pred is None:
                    continue
                entry = (i, pred, Decision(rule.action, MatchType.RULE, rule))
                key = _index_key(rule)
                if key is None:
                    scan.append(entry)
                else:
                    buckets.setdefault(key, []).append(entry)
            self._plans[op] = _OpPlan(
                tuple(scan), {k: tuple(v) for k, v in buckets.items()}, default_decision(parsed, op)
            )
        self._unknown = default_decision(parsed, None) if parsed.global_default is not None else None
        self._cache: dict[tuple[Op | None, Facts], Decision] = {}

    def decide_uncached(self, op: Op | None, facts: Facts) -> Decision:
        if op is None:
            return self._unknown if self._unknown is not None else default_decision(self.parsed, None)
        plan = self._plans[op]
        for _, pred, decision in plan.candidates(facts[3], facts[1]):
            if pred(facts):
                return decision
        return plan.default

    def decide(self, op: Op | None, facts: Facts) -> Decision:
        key = (op, facts)
        d = self._cache.get(key)
        if d is None:
            d = self.decide_uncached(op, facts)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = d
        return d


def compile_policy(parsed: ParsedPolicy, config: KernelConfig) -> CompiledPolicy:
    """Compile once per activation (ipe_set_active_pol / an update of the active policy)."""
    return CompiledPolicy(parsed, property_evaluators(config))


def evaluate(policy: CompiledPolicy, ctx: EvalContext) -> Decision:
    """The pure decision for ``ctx`` under ``policy`` (same result as :func:`evaluate_linear`)."""
    return policy.decide(ctx.op, ctx.facts)

