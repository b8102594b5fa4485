"""How a reconcile, a plan or a dry run ended: one vocabulary for the plan records, ``iped plan
--json``, the metrics and the exit codes (:data:`iped.commands.OUTCOME_EXIT`).

Import-light (enum only): the command line reads it on every ``iped`` invocation.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The value is the word written in records, JSON and the textfile."""

    APPLIED = "applied"  # every step written and read back
    UNCHANGED = "unchanged"  # nothing to change
    REJECTED = "rejected"  # the declared state is invalid: nothing written
    FAILED = "failed"  # the kernel refused a step: the steps before it stay
    WOULD_APPLY = "would-apply"  # a plan (iped plan) that would change something
    DRY_RUN = "dry-run"  # iped rollback --dry-run: nothing written


#: the outcomes a reconcile can end with (the daemon's counters)
RECONCILE_OUTCOMES = (Outcome.APPLIED, Outcome.UNCHANGED, Outcome.REJECTED, Outcome.FAILED)
#: outcomes after which the kernel is in the declared state
IN_SYNC_OUTCOMES = frozenset({Outcome.APPLIED, Outcome.UNCHANGED})
