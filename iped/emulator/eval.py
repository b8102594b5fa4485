"""Facts -> decision -> report: IPE's evaluation engine (security/ipe/eval.c).

* :func:`build_eval_ctx` (ipe_build_eval_ctx) turns a :class:`FileInfo` into a frozen
  :class:`EvalContext`: the superblock's initramfs flag, the backing block device's dm-verity
  root hash and signature flag, the inode's fs-verity digest and built-in signature flag.
* :func:`property_evaluators` (evaluate_property and its helpers) decides one property.
* :func:`evaluate_linear` is the kernel's algorithm verbatim (walk the op's rules in file order,
  first match wins, then the per-op default, then the global default). It is the reference the
  indexed form in :mod:`iped.emulator.compiled` must agree with.
* :func:`evaluate_event` (ipe_evaluate_event) applies the decision: no active policy allows
  silently; DENY and (with success_audit) ALLOW are audited; permissive mode never blocks.

A Kconfig option that is off is an evaluator that returns False (eval.c's ``#else`` stubs),
chosen once in :func:`property_evaluators`, never an ``if`` in the loop.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping

from iped.emulator.audit import AUDIT_IPE_ACCESS, AuditLog, audit_match
from iped.emulator.policy_parser import OP_INDEX, Action, Op, ParsedPolicy, Prop, PropType
from iped.emulator.types import (
    NO_FILE_FACTS,
    Decision,
    EvalContext,
    EvalState,
    Facts,
    FileInfo,
    Hook,
    KernelConfig,
    MatchType,
    Task,
    new_eval_ctx,
)

#: bound once: on Python 3.11 every ``Action.DENY`` is an attribute lookup through EnumType, a
#: measurable share of a decision (benchmarks/bench_eval.py)
_DENY = Action.DENY


def build_eval_ctx(file: FileInfo | None, op: Op | None, hook: Hook) -> EvalContext:
    """ipe_build_eval_ctx(): without a file no property state is set."""
    return new_eval_ctx((op, hook, file, file.facts if file is not None else NO_FILE_FACTS))


# --- property evaluators (evaluate_property and its helpers) ------------------------------------

Evaluator = Callable[[Facts, Prop], bool]


def kconfig_off_stub(facts: Facts, prop: Prop) -> bool:
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
        PropType.DMV_ROOTHASH: evaluate_dmv_roothash if dmv else kconfig_off_stub,
        PropType.DMV_SIG_FALSE: evaluate_dmv_sig_false if dmv_sig else kconfig_off_stub,
        PropType.DMV_SIG_TRUE: evaluate_dmv_sig_true if dmv_sig else kconfig_off_stub,
        PropType.FSV_DIGEST: evaluate_fsv_digest if fsv else kconfig_off_stub,
        PropType.FSV_SIG_FALSE: evaluate_fsv_sig_false if fsv_sig else kconfig_off_stub,
        PropType.FSV_SIG_TRUE: evaluate_fsv_sig_true if fsv_sig else kconfig_off_stub,
    }


# --- the kernel's algorithm ---------------------------------------------------------------------


def default_decision(parsed: ParsedPolicy, op: Op | None) -> Decision:
    """Per-op default if set, else the global default; an unmapped op uses the global default."""
    if op is not None:
        table = parsed.table(op)
        if table.default is not None:
            return Decision(table.default, MatchType.TABLE)
    if parsed.global_default is None:
        # Only reachable for an unmapped op: validate_policy() guarantees per-op defaults otherwise.
        import logging  # here only: a start (the daemon's, the CLI's) need not load it for this path

        logging.getLogger(__name__).warning("no default rule set for unknown op, ALLOW it")
        return Decision(Action.ALLOW, MatchType.GLOBAL)
    return Decision(parsed.global_default, MatchType.GLOBAL)


def evaluate_linear(parsed: ParsedPolicy, ctx: EvalContext, evaluators: Mapping[PropType, Evaluator]) -> Decision:
    """ipe_evaluate_event()'s decision, as the kernel computes it: a linear walk (the baseline)."""
    if ctx.op is None:
        return default_decision(parsed, None)
    facts = ctx.facts
    for rule in parsed.tables[OP_INDEX[ctx.op]].rules:
        for prop in rule.props:
            if not evaluators[prop.type](facts, prop):
                break
        else:
            return Decision(rule.action, MatchType.RULE, rule)
    return default_decision(parsed, ctx.op)


# --- applying a decision (ipe_evaluate_event) ---------------------------------------------------


def evaluate_event(state: EvalState, ctx: EvalContext, task: Task, audit: AuditLog) -> int:
    """ipe_evaluate_event(): 0 to allow, -EACCES to deny (never in permissive mode).

    No active policy: allow with no record. Otherwise DENY is always audited and ALLOW only
    with success_audit; the record carries the enforce flag at evaluation time.
    """
    compiled = state.compiled
    if compiled is None:
        return 0
    d = compiled.decide(ctx.op, ctx.facts)
    deny = d.action is _DENY
    if deny or state.success_audit:
        audit.log(
            AUDIT_IPE_ACCESS,
            audit_match(ctx, d.match_type, d.action, d.rule, enforcing=state.enforce, task=task),
        )
    if deny and state.enforce:
        return -errno.EACCES
    return 0
