"""Facts -> decision -> report: IPE's evaluation engine (security/ipe/eval.c).

* :func:`build_eval_ctx` (ipe_build_eval_ctx) turns a :class:`FileInfo` into a frozen
  :class:`EvalContext`: the superblock's initramfs flag, the backing block device's dm-verity
  root hash and signature flag, the inode's fs-verity digest and built-in signature flag.
* :func:`evaluate_linear` is the kernel's algorithm verbatim (walk the op's rules in file order,
  first match wins, then the per-op default, then the global default). It is the reference.
* :func:`compile_policy` builds a :class:`CompiledPolicy` once, when a policy becomes active:
  per-op candidate lists with digest rules indexed by ``(alg, digest)``, so a 700-digest policy
  decides as fast as a 10-rule one while keeping first-match-wins exactly (an earlier rule that
  matches always beats an indexed later one, because candidates are merged in file order).
* :func:`evaluate_event` (ipe_evaluate_event) applies the decision: no active policy allows
  silently; DENY and (with success_audit) ALLOW are audited; permissive mode never blocks.

A Kconfig option that is off is an evaluator that returns False (eval.c's ``#else`` stubs),
chosen once in :func:`property_evaluators`, never an ``if`` in the loop.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from iped.emulator.audit import AUDIT_IPE_ACCESS, AuditLog, audit_match
from iped.emulator.policy_parser import OP_INDEX, Action, Op, ParsedPolicy, Prop, PropType, Rule

if TYPE_CHECKING:
    from iped.emulator.ipe import KernelConfig
    from iped.emulator.policy import Policy

log = logging.getLogger(__name__)

UNSET_ID = 4294967295  # (u32)-1: an unset loginuid / sessionid


class Hook(StrEnum):
    """``enum ipe_hook_type``; values are the ``ipe_hook=`` spellings (audit_hook_names)."""

    BPRM_CHECK = "BPRM_CHECK"
    BPRM_CREDS_FOR_EXEC = "BPRM_CREDS_FOR_EXEC"  # 6.19+
    MMAP = "MMAP"
    MPROTECT = "MPROTECT"
    KERNEL_READ = "KERNEL_READ"
    KERNEL_LOAD = "KERNEL_LOAD"


#: spelling -> enum, cheaper than calling the enum on every event
HOOKS: dict[str, Hook] = {h.value: h for h in Hook}
OPS: dict[str | None, Op | None] = {**{o.value: o for o in Op}, None: None}


class MatchType(Enum):
    """``enum ipe_match``: what decided (a rule, the op's default, the global default)."""

    RULE = "rule"
    TABLE = "table"
    GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Task:
    """The task an audit record names: ``pid`` is the tgid, ``comm`` at most 15 bytes."""

    pid: int
    comm: str
    auid: int = UNSET_ID
    ses: int = UNSET_ID


#: facts a decision can depend on: (initramfs, dmv key, dmv signed, fsv key, fsv signed)
Facts = tuple[bool, tuple[bytes, bytes] | None, bool, tuple[bytes, bytes] | None, bool]


@dataclass(frozen=True)
class FileInfo:
    """What the kernel knows about a file when IPE evaluates it.

    ``dev`` is the superblock's s_id (``vda1``, ``dm-0``, ``tmpfs``) and ``ino`` the inode
    number, both only for the audit record. ``boot_verified`` is the initramfs flag of the
    mount's superblock; ``dmverity_*`` describe the backing block device as dm-verity reported
    it (algorithm name as in the verity table); ``fsverity_*`` the inode (algorithm as the
    kernel's hash_algo_name[], e.g. ``sha256``). A signature flag without a digest is ignored,
    as the kernel requires IS_VERITY / a root hash first.
    """

    path: str
    dev: str
    ino: int
    boot_verified: bool = False
    dmverity_roothash: tuple[str, bytes] | None = None
    dmverity_signature: bool = False
    fsverity_digest: tuple[str, bytes] | None = None
    fsverity_signature: bool = False
    facts: Facts = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dmv = self.dmverity_roothash
        fsv = self.fsverity_digest
        facts: Facts = (
            self.boot_verified,
            (dmv[0].encode(), bytes(dmv[1])) if dmv is not None else None,
            self.dmverity_signature,
            (fsv[0].encode(), bytes(fsv[1])) if fsv is not None else None,
            fsv is not None and self.fsverity_signature,
        )
        object.__setattr__(self, "facts", facts)

    @classmethod
    def from_path(cls, path: str, *, boot_superblocks: frozenset[int] = frozenset()) -> FileInfo:
        """Discover the properties of a real file on this host (see :mod:`iped.emulator.discovery`)."""
        from iped.emulator.discovery import file_info_from_path

        return file_info_from_path(path, boot_superblocks=boot_superblocks)


#: facts of a NULL file (anonymous memory, kernel_load_data)
NO_FILE_FACTS: Facts = (False, None, False, None, False)


class EvalContext(NamedTuple):
    """``struct ipe_eval_ctx``: the op (None = IPE_OP_INVALID), the hook, the file and its facts.

    A NamedTuple rather than a frozen dataclass: it is built once per hook call, and tuple
    construction is several times cheaper.
    """

    op: Op | None
    hook: Hook
    file: FileInfo | None
    facts: Facts

    @property
    def initramfs(self) -> bool:
        return self.facts[0]

    @property
    def root_hash(self) -> tuple[bytes, bytes] | None:
        return self.facts[1]

    @property
    def dm_verity_signed(self) -> bool:
        return self.facts[2]

    @property
    def fsverity_digest(self) -> tuple[bytes, bytes] | None:
        return self.facts[3]

    @property
    def fs_verity_signed(self) -> bool:
        return self.facts[4]


def build_eval_ctx(file: FileInfo | None, op: Op | None, hook: Hook) -> EvalContext:
    """ipe_build_eval_ctx(): without a file no property state is set."""
    return EvalContext(op, hook, file, file.facts if file is not None else NO_FILE_FACTS)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one evaluation: the action, what decided, and the rule if one matched."""

    action: Action
    match_type: MatchType
    rule: Rule | None = None


# --- property evaluators (evaluate_property and its helpers) ------------------------------------

Evaluator = Callable[[Facts, Prop], bool]


def _never(facts: Facts, prop: Prop) -> bool:
    """The ``#else`` stub of a property whose Kconfig option is off."""
    return False


def evaluate_boot_verified(facts: Facts, prop: Prop) -> bool:
    return facts[0]


def _boot_verified_false(facts: Facts, prop: Prop) -> bool:
    return not facts[0]


def _digest_matches(actual: tuple[bytes, bytes] | None, prop: Prop) -> bool:
    """ipe_digest_eval(): same length, algorithm name (strcmp) and bytes."""
    v = prop.value
    return actual is not None and v is not None and actual[0] == v.alg and actual[1] == v.digest


def evaluate_dmv_roothash(facts: Facts, prop: Prop) -> bool:
    return _digest_matches(facts[1], prop)


def evaluate_dmv_sig_false(facts: Facts, prop: Prop) -> bool:
    """True without a block device, without a root hash or when dm-verity saw no valid signature."""
    return facts[1] is None or not facts[2]


def evaluate_dmv_sig_true(facts: Facts, prop: Prop) -> bool:
    return not evaluate_dmv_sig_false(facts, prop)


def evaluate_fsv_digest(facts: Facts, prop: Prop) -> bool:
    return _digest_matches(facts[3], prop)


def evaluate_fsv_sig_false(facts: Facts, prop: Prop) -> bool:
    """True without an inode, for a non-verity inode, or without a verified built-in signature."""
    return facts[3] is None or not facts[4]


def evaluate_fsv_sig_true(facts: Facts, prop: Prop) -> bool:
    return not evaluate_fsv_sig_false(facts, prop)


def property_evaluators(config: KernelConfig) -> Mapping[PropType, Evaluator]:
    """The evaluator of every property for this Kconfig (off => the eval.c stub returning false)."""
    dmv, dmv_sig = config.prop_dm_verity, config.prop_dm_verity_signature
    fsv, fsv_sig = config.prop_fs_verity, config.prop_fs_verity_builtin_sig
    return {
        PropType.BOOT_VERIFIED_FALSE: _boot_verified_false,
        PropType.BOOT_VERIFIED_TRUE: evaluate_boot_verified,
        PropType.DMV_ROOTHASH: evaluate_dmv_roothash if dmv else _never,
        PropType.DMV_SIG_FALSE: evaluate_dmv_sig_false if dmv_sig else _never,
        PropType.DMV_SIG_TRUE: evaluate_dmv_sig_true if dmv_sig else _never,
        PropType.FSV_DIGEST: evaluate_fsv_digest if fsv else _never,
        PropType.FSV_SIG_FALSE: evaluate_fsv_sig_false if fsv_sig else _never,
        PropType.FSV_SIG_TRUE: evaluate_fsv_sig_true if fsv_sig else _never,
    }


# --- the kernel's algorithm ---------------------------------------------------------------------


def _default_decision(parsed: ParsedPolicy, op: Op | None) -> Decision:
    """Per-op default if set, else the global default; an unmapped op uses the global default."""
    if op is not None:
        table = parsed.table(op)
        if table.default is not None:
            return Decision(table.default, MatchType.TABLE)
    if parsed.global_default is None:
        # Only reachable for an unmapped op: validate_policy() guarantees per-op defaults otherwise.
        log.warning("no default rule set for unknown op, ALLOW it")
        return Decision(Action.ALLOW, MatchType.GLOBAL)
    return Decision(parsed.global_default, MatchType.GLOBAL)


def evaluate_linear(parsed: ParsedPolicy, ctx: EvalContext, evaluators: Mapping[PropType, Evaluator]) -> Decision:
    """ipe_evaluate_event()'s decision, as the kernel computes it: a linear walk (the baseline)."""
    if ctx.op is None:
        return _default_decision(parsed, None)
    facts = ctx.facts
    for rule in parsed.tables[OP_INDEX[ctx.op]].rules:
        for prop in rule.props:
            if not evaluators[prop.type](facts, prop):
                break
        else:
            return Decision(rule.action, MatchType.RULE, rule)
    return _default_decision(parsed, ctx.op)


# --- the compiled policy ------------------------------------------------------------------------

Predicate = Callable[[Facts], bool]
_CACHE_MAX = 1 << 16


def _compile_rule(rule: Rule, evaluators: Mapping[PropType, Evaluator]) -> Predicate | None:
    """One closure per rule; None when a property is a Kconfig-off stub (the rule can never match)."""
    pairs = tuple((evaluators[p.type], p) for p in rule.props)
    if any(ev is _never for ev, _ in pairs):
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
                tuple(scan), {k: tuple(v) for k, v in buckets.items()}, _default_decision(parsed, op)
            )
        self._unknown = _default_decision(parsed, None) if parsed.global_default is not None else None
        self._cache: dict[tuple[Op | None, Facts], Decision] = {}

    def decide_uncached(self, op: Op | None, facts: Facts) -> Decision:
        if op is None:
            return self._unknown if self._unknown is not None else _default_decision(self.parsed, None)
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


# --- applying a decision (ipe_evaluate_event) ---------------------------------------------------


@dataclass
class EvalState:
    """eval.c's globals: the active policy (and its compiled form), enforce, success_audit."""

    enforce: bool = True
    success_audit: bool = False
    active: Policy | None = None
    compiled: CompiledPolicy | None = None


def evaluate_event(state: EvalState, ctx: EvalContext, task: Task, audit: AuditLog) -> int:
    """ipe_evaluate_event(): 0 to allow, -EACCES to deny (never in permissive mode).

    No active policy: allow with no record. Otherwise DENY is always audited and ALLOW only
    with success_audit; the record carries the enforce flag at evaluation time.
    """
    compiled = state.compiled
    if compiled is None:
        return 0
    d = compiled.decide(ctx.op, ctx.facts)
    deny = d.action is Action.DENY
    if deny or state.success_audit:
        audit.log(
            AUDIT_IPE_ACCESS,
            audit_match(ctx, d.match_type, d.action, d.rule, enforcing=state.enforce, task=task),
        )
    if deny and state.enforce:
        return -errno.EACCES
    return 0
