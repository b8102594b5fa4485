"""When the daemon tells systemd READY=1, and when it refuses to start: pure rules, no I/O.

READY=1 means the declared policy is active (Type=notify units ordered after iped.service rely
on it), not merely that the daemon runs. Until then STATUS= says NOT READY and why. A startup
reconcile whose plan was rejected or failed cannot get there by waiting: the start fails at once
with :data:`EXIT_START_REFUSED` instead of holding the boot for TimeoutStartSec.
"""

from __future__ import annotations

from dataclasses import dataclass

from iped.daemon import service
from iped.daemon.reconcile import FailedRead, PlanRecord
from iped.errnos import describe_errno
from iped.outcome import Outcome

#: Exit status of a daemon whose declared active policy was refused at start (sysexits'
#: EX_CONFIG); systemd/iped.service does not restart on it (RestartPreventExitStatus=).
EXIT_START_REFUSED = 78


@dataclass(frozen=True, slots=True)
class Readiness:
    """What to tell systemd after one reconcile.

    ``ready``: send READY=1 with ``status`` (it also ends a RELOADING=1); else only STATUS=.
    ``became_ready``: this reconcile made the daemon ready (logged once, as ``daemon_ready``).
    """

    ready: bool
    became_ready: bool
    status: str


def declared_active(record: PlanRecord | FailedRead, want: str | None) -> bool:
    """Is the declared policy ``want`` active? The record's after-state says so (no second read).
    The emulator answers as the kernel does: playbooks tested on it must see the start fail
    (exit 78) where a host would."""
    if want is None:
        return True
    return record.active_after is not None and record.active_after.name == want


def after_reconcile(was_ready: bool, record: PlanRecord | FailedRead, want: str | None,
                    health_line: str) -> Readiness:
    """READY=1 only once the declared policy ``want`` is active, then after every reconcile;
    STATUS= is ``health_line`` (:func:`service.health`: in sync, or why not)."""
    if was_ready:
        return Readiness(True, False, health_line)
    if declared_active(record, want):
        return Readiness(True, True, health_line)
    return Readiness(False, False, f"NOT READY: declared policy {want!r} is not active: {health_line}")


def startup_refusal(record: PlanRecord | FailedRead | None, active: str | None) -> str | None:
    """Why the startup reconcile cannot make ``active`` active (rejected or failed plan), or None.

    Names the errno and the file, for the unit's status line (``systemctl status iped``).
    """
    if record is None or record.outcome not in (Outcome.REJECTED, Outcome.FAILED):
        return None
    why = (f"{describe_errno(record.errno)}: {record.message}" if isinstance(record, FailedRead)
           else service.failure_reason(record))
    return f"FAILED: declared active policy {active!r} not activated, {record.outcome}: {why}"
