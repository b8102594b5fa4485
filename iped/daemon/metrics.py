"""The daemon's state for node_exporter's textfile collector: is this host where it was told to be?

Fleet-wide, desired state is pushed (Ansible, Puppet, Salt) and actual state is pulled: these
gauges and counters are written after every reconcile, next to the audit counters
(``[audit] prometheus_textfile``) as ``<stem>_state.prom`` -- a file of its own, because the
audit follower rewrites its file on its own rhythm and node_exporter reads whole files:

* ``iped_in_sync`` 1 when the last reconcile left the kernel as declared (applied, unchanged);
* ``iped_active_policy_info{name,version,digest}`` 1 for the active policy;
* ``iped_enforce``, ``iped_success_audit``: the kernel's switches, read back after the reconcile;
* ``iped_reconciles_total{trigger,outcome}``;
* ``iped_last_reconcile_timestamp_seconds``;
* ``iped_declared_errors``: problems in the declared state (each one rejects the plan);
* ``iped_ready``: the daemon told systemd READY=1.

Written to a temporary name in the same directory, fsynced and renamed over the target, so the
collector never reads half a file. A failed write is logged; the daemon goes on.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iped.daemon.log import Reporter
from iped.daemon.reconcile import FailedRead, PlanRecord, Reconciler
from iped.fsutil import write_atomically
from iped.outcome import IN_SYNC_OUTCOMES, Outcome


@dataclass
class StateMetrics:
    """Everything the textfile says; ``reconciles`` accumulates over the daemon's life."""

    reconciles: Counter[tuple[str, str]] = field(default_factory=Counter)
    in_sync: bool = False
    active: dict[str, Any] | None = None
    enforce: bool | None = None
    success_audit: bool | None = None
    last_reconcile: float = 0.0
    declared_errors: int = 0
    ready: bool = False

    def observe(self, record: dict[str, Any], enforce: bool | None, success_audit: bool | None,
                ready: bool, now: float) -> None:
        outcome = str(record.get("outcome", Outcome.FAILED))
        self.reconciles[str(record.get("trigger", "?")), outcome] += 1
        self.in_sync = outcome in IN_SYNC_OUTCOMES
        self.active = record.get("active_after")
        self.enforce, self.success_audit = enforce, success_audit
        self.last_reconcile = now
        self.declared_errors = len(record.get("errors") or [])
        self.ready = ready


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(name: str, helptext: str, value: float | None) -> list[str]:
    if value is None:
        return []
    shown = int(value) if float(value).is_integer() else repr(float(value))  # full precision for timestamps
    return [f"# HELP {name} {helptext}", f"# TYPE {name} gauge", f"{name} {shown}"]


def prometheus_text(m: StateMetrics) -> str:
    """The metrics in the Prometheus text exposition format."""
    lines = _gauge("iped_in_sync", "1 when the last reconcile left the kernel in the declared state.", int(m.in_sync))
    lines += ["# HELP iped_active_policy_info The active IPE policy (value always 1).",
              "# TYPE iped_active_policy_info gauge"]
    if m.active:
        digest = m.active.get("blob_digest") or m.active.get("text_digest") or ""
        lines.append(f'iped_active_policy_info{{name="{_label(m.active.get("name"))}",'
                     f'version="{_label(m.active.get("version"))}",digest="{_label(digest)}"}} 1')
    lines += _gauge("iped_enforce", "1 enforce, 0 permissive (read back from the kernel).",
                    None if m.enforce is None else int(m.enforce))
    lines += _gauge("iped_success_audit", "1 when allowed operations are audited too.",
                    None if m.success_audit is None else int(m.success_audit))
    lines += ["# HELP iped_reconciles_total Reconciles by trigger and outcome.",
              "# TYPE iped_reconciles_total counter"]
    lines += [f'iped_reconciles_total{{trigger="{_label(t)}",outcome="{_label(o)}"}} {n}'
              for (t, o), n in sorted(m.reconciles.items())]
    lines += _gauge("iped_last_reconcile_timestamp_seconds", "Unix time of the last reconcile.", m.last_reconcile)
    lines += _gauge("iped_declared_errors", "Problems in the declared state (any one rejects the plan).",
                    m.declared_errors)
    lines += _gauge("iped_ready", "1 once the daemon told systemd READY=1.", int(m.ready))
    return "\n".join(lines) + "\n"


def state_textfile(audit_textfile: Path) -> Path:
    """``iped.prom`` -> ``iped_state.prom``, in the same collector directory."""
    return audit_textfile.with_name(f"{audit_textfile.stem}_state.prom")


def after_reconcile(metrics: StateMetrics, record: PlanRecord | FailedRead, rec: Reconciler, ready: bool,
                    reporter: Reporter) -> None:
    """The loop's hook: tally ``record`` into the daemon's ``metrics`` and rewrite the textfile
    (when one is configured)."""
    # the reconcile's own after-state (no second securityfs read); None when securityfs failed
    after = rec.after if isinstance(record, PlanRecord) else None
    enforce = after.enforce if after is not None else None
    success_audit = after.success_audit if after is not None else None
    metrics.observe(record.as_dict(), enforce, success_audit, ready, time.time())
    target = rec.settings.audit.prometheus_textfile
    if target is not None:
        from iped.trustpath import UntrustedPathError, check_path

        path = state_textfile(target)
        try:  # a directory others can write would let them restate this host's state for the fleet
            check_path(path.parent, "the daemon's metrics", any_owner=True)
            write_atomically(path, prometheus_text(metrics))
        except UntrustedPathError as e:
            reporter.log("warning", f"not writing daemon metrics: {e}")
        except OSError as e:
            reporter.log("warning", f"cannot write daemon metrics to {path}: {e.strerror or e}")
