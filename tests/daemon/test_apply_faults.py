"""The executor's failure paths, step kind by step kind, on a scripted emulator backend.

Each step kind is made to fail three ways (:class:`tests.helpers.iped_with_hooks.FaultMode`): the write fails with
an errno, the write "succeeds" but changes nothing (only the read-back can tell), or the write
happens and securityfs reads back garbage. Every time the plan stops at that step with outcome
``failed`` (exit 4), nothing after it runs, the record's after-state is what securityfs holds,
and the previously active policy stays active unless the activation itself took effect.
The same faults are then driven through the real CLI: ``iped reload`` against a daemon and
``iped apply --once``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from iped.backend import EmulatorBackend
from iped.commands import ExitCode, outcome_exit
from iped.config import load_settings
from iped.daemon import runtime
from iped.daemon.actual import ActualState, read_actual
from iped.daemon.apply import state_after
from iped.daemon.log import NullReporter
from iped.daemon.plan import StepKind
from iped.daemon.reconcile import PlanRecord, Reconciler
from iped.outcome import Outcome
from tests.helpers.daemon import Site, iped, start_daemon
from tests.helpers.iped_with_hooks import FAULT_ENV, Fault, FaultMode, FaultyEmulatorBackend
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text

#: the securityfs file each step kind writes, as a FAULT_ENV path suffix
SUFFIX = {StepKind.ENFORCE: "enforce", StepKind.LOAD: "new_policy", StepKind.UPDATE: "update",
          StepKind.ACTIVATE: "active", StepKind.DELETE: "delete", StepKind.SUCCESS_AUDIT: "success_audit"}
#: an errno the kernel can return for each write (iped.errnos documents them)
ERRNO = {StepKind.ENFORCE: errno.EPERM, StepKind.LOAD: errno.ENOKEY, StepKind.UPDATE: errno.EKEYREJECTED,
         StepKind.ACTIVATE: errno.EINVAL, StepKind.DELETE: errno.EPERM, StepKind.SUCCESS_AUDIT: errno.ENOMEM}


@dataclass
class Bench:
    """A site whose emulator holds ``before``; :meth:`declare_*` then change the files only."""

    site: Site
    backend: EmulatorBackend
    before: ActualState

    def reconciler(self, fault: Fault) -> Reconciler:
        """A reconciler on the same emulator, with ``fault`` scripted into its backend."""
        scripted = FaultyEmulatorBackend(self.backend.emulator, "scripted faults", fault)
        return runtime.make_reconciler(load_settings(self.site.config), NullReporter(), scripted)

    def declare_every_step(self) -> None:
        """enforce on, update base, load next, activate next, delete old, success_audit on."""
        s = self.site
        s.put("base.pol", policy_text("base", "1.1.0", "op=KMODULE action=DENY"))
        s.put("next.pol", policy_text("next", "1.2.0"))
        (s.policies / "old.pol").unlink()
        s.active, s.enforce = "next", True
        s.write_config()
        s.config.write_text(s.config.read_text().replace("enforce = true", "enforce = true\nsuccess_audit = true"))

    def declare_enforce_off(self) -> None:
        self.site.enforce = False
        self.site.write_config()


def bench(site: Site, *, enforce: bool) -> Bench:
    """base 1.0.0 active, old 1.0.0 loaded, enforce as given, success_audit off."""
    site.put("old.pol", policy_text("old", "1.0.0"))
    site.enforce = enforce
    site.write_config()
    settings = load_settings(site.config)
    backend = runtime.make_backend(settings)
    assert isinstance(backend, EmulatorBackend)
    rec = runtime.make_reconciler(settings, NullReporter(), backend)
    assert rec.reconcile("setup").outcome == Outcome.APPLIED
    before = read_actual(backend)
    assert before.active is not None and before.active.name == "base" and before.enforce is enforce
    return Bench(site, backend, before)


def check_failed_at(b: Bench, record: PlanRecord, kind: StepKind, mode: FaultMode) -> None:
    """The plan stopped at the one ``kind`` step, and the record says what securityfs holds."""
    index = [s.kind for s in record.steps].index(kind)
    assert record.outcome == Outcome.FAILED and outcome_exit(record.outcome) == ExitCode.APPLY_FAILED
    assert record.failure is not None and record.failure.step == record.steps[index]
    assert record.done == index, "steps after the failed one ran, or steps before it were not counted"
    if mode == FaultMode.ERRNO:
        assert record.failure.errno == ERRNO[kind]
    else:
        assert record.failure.errno == errno.EIO
        assert "read-back" in record.failure.message
    # the failed write changed nothing, except a garbage fault's write, which did happen
    took_effect = record.steps[: index + 1] if mode == FaultMode.GARBAGE else record.steps[:index]
    actual = read_actual(b.backend)
    assert actual == state_after(b.before, took_effect)
    assert record.active_after == actual.active
    kinds = [s.kind for s in took_effect]
    assert actual.active is not None
    if StepKind.ACTIVATE in kinds:
        assert (actual.active.name, str(actual.active.version)) == ("next", "1.2.0")
    else:  # the previously active policy, updated in place if the update ran
        assert (actual.active.name, str(actual.active.version)) == (
            "base", "1.1.0" if StepKind.UPDATE in kinds else "1.0.0")


MATRIX = [(kind, mode) for kind in SUFFIX if kind != StepKind.ENFORCE for mode in FaultMode
          # a delete is read back from the directory listing, never from file content: no garbage to read
          if (kind, mode) != (StepKind.DELETE, FaultMode.GARBAGE)]


@pytest.mark.parametrize(("kind", "mode"), MATRIX, ids=[f"{k}-{m}" for k, m in MATRIX])
def test_each_step_kind_failing_stops_the_plan(site: Site, kind: StepKind,
                                               mode: FaultMode) -> None:
    b = bench(site, enforce=False)
    b.declare_every_step()
    record = b.reconciler(Fault(SUFFIX[kind], 1, ERRNO[kind], mode)).reconcile("test")
    assert [s.kind for s in record.steps] == [StepKind.ENFORCE, StepKind.UPDATE, StepKind.LOAD, StepKind.ACTIVATE,
                                              StepKind.DELETE, StepKind.SUCCESS_AUDIT]
    check_failed_at(b, record, kind, mode)


@pytest.mark.parametrize("mode", list(FaultMode))
@pytest.mark.parametrize("value", [True, False], ids=["enforce-on", "enforce-off"])
def test_enforce_step_failing(site: Site, value: bool, mode: FaultMode) -> None:
    b = bench(site, enforce=not value)
    if value:
        b.declare_every_step()  # enforce on is the plan's first step
    else:
        b.declare_enforce_off()  # enforce off is the plan's last (and here only) step
    record = b.reconciler(Fault("enforce", 1, ERRNO[StepKind.ENFORCE], mode)).reconcile("test")
    check_failed_at(b, record, StepKind.ENFORCE, mode)
    assert read_actual(b.backend).enforce is (value if mode == FaultMode.GARBAGE else not value)


def test_garbage_read_back_is_named_in_the_failure(site: Site) -> None:
    b = bench(site, enforce=False)
    b.declare_every_step()
    record = b.reconciler(Fault("new_policy", 1, 0, FaultMode.GARBAGE)).reconcile("test")
    assert record.failure is not None
    assert "policies/next/version" in record.failure.message and "garbage" in record.failure.message
    assert record.failure.as_dict()["errno_name"] == "EIO"


# -- through the CLI ---------------------------------------------------------------------------

CLI_FAULTS = [("new_policy:2:garbage", "load", "EIO"), ("active:2:nochange", "activate", "EIO"),
              ("new_policy:2:ENOKEY", "load", "ENOKEY"), ("enforce:2:EPERM", "enforce", "EPERM")]


@pytest.mark.parametrize(("fault", "kind", "errno_name"), CLI_FAULTS, ids=[f[0] for f in CLI_FAULTS])
def test_reload_exit_4_keeps_the_active_policy(site: Site, fault: str, kind: str, errno_name: str) -> None:
    site.env[FAULT_ENV] = fault
    site.debounce_ms = 60000  # file events stay pending: only the explicit reload below acts
    site.enforce = kind != "enforce"  # an enforce fault: the daemon starts with enforce off
    site.write_config()
    d = start_daemon(site)
    try:
        st = d.status()
        assert (st["active"]["name"], st["active"]["version"]) == ("base", "1.0.0")
        site.put("next.pol", policy_text("next", "2.0.0"))
        site.active, site.enforce = "next", True
        site.write_config()
        r = iped("reload", "--socket", str(site.socket), "--json")
        assert r.returncode == ExitCode.APPLY_FAILED, r.stdout + r.stderr
        rec = json.loads(r.stdout)
        assert rec["outcome"] == "failed"
        assert rec["failure"]["step"]["kind"] == kind and rec["failure"]["errno_name"] == errno_name
        assert rec["active_after"]["name"] == "base"
        st = d.status()
        assert (st["active"]["name"], st["active"]["version"]) == ("base", "1.0.0")
        assert st["in_sync"] is False
    finally:
        d.stop()


def test_apply_once_exit_4_on_garbage_read_back(site: Site) -> None:
    r = iped("apply", "--once", "--config", str(site.config), "--json", env={FAULT_ENV: "new_policy:1:garbage"})
    assert r.returncode == ExitCode.APPLY_FAILED, r.stdout + r.stderr
    rec = json.loads(r.stdout)
    assert rec["failure"]["step"]["kind"] == "load" and rec["failure"]["errno_name"] == "EIO"
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def test_the_shipped_iped_has_no_fault_switch(site: Site) -> None:
    """Only the tests' entry point scripts faults: ``python -m iped`` with the variable set applies."""
    env = {**os.environ, FAULT_ENV: "new_policy:1:garbage"}
    r = subprocess.run([sys.executable, "-m", "iped", "apply", "--once", "--config", str(site.config), "--json"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, check=False)
    assert r.returncode == ExitCode.OK, r.stdout + r.stderr
    assert json.loads(r.stdout)["outcome"] == "applied"
