"""The executor: carry out a plan's steps, one write each, reading back after every step.

A kernel error stops the plan at that step: the steps before it stay done (each is a complete
kernel transaction), nothing after it runs, and the previously active policy stays active unless
the failed step came after the activation. The result says which step failed and with what errno.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from iped.backend import Backend
from iped.daemon.actual import ActualState, LoadedPolicy, parse_version_text
from iped.daemon.log import Reporter
from iped.daemon.plan import Plan, Step, StepKind
from iped.errnos import describe_errno, errno_name
from iped.outcome import Outcome

#: told the number of steps done after each step that ran (and was read back and reported); the
#: tests' entry point (tests/helpers/iped_with_hooks.py) stops the process there
StepObserver = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class StepFailure:
    """The step that failed, the errno the kernel returned, and what it means."""

    step: Step
    errno: int
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"step": self.step.as_dict(), "errno": self.errno,
                "errno_name": errno_name(self.errno), "message": self.message}


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: Outcome
    done: tuple[Step, ...]
    failure: StepFailure | None = None


class ReadBackError(OSError):
    """The write succeeded but securityfs does not show the expected result."""


T = TypeVar("T")


def _parse_flag(raw: bytes) -> bool:
    """A securityfs switch reads exactly 0 or 1 (plus a newline)."""
    value = raw.strip()
    if value not in (b"0", b"1"):
        raise ValueError("not 0 or 1")
    return value == b"1"


def _read_back(backend: Backend, step: Step, path: str, parse: Callable[[bytes], T]) -> T:
    """``path`` read and parsed; what is missing or does not parse is a ReadBackError (EIO)."""
    try:
        raw = backend.read(path)
    except FileNotFoundError:  # a load that "succeeded" without creating the policy's directory
        raise ReadBackError(errno.EIO, f"read-back after '{step.describe()}': {path} does not exist") from None
    try:
        return parse(raw)
    except ValueError:
        raise ReadBackError(errno.EIO, f"read-back after '{step.describe()}': {path} reads {raw[:64]!r}, "
                                       "which securityfs never shows") from None


def _verify(backend: Backend, step: Step) -> None:
    """Read back what the step should have changed; raise ReadBackError (EIO) if it did not."""
    match step.kind:
        case StepKind.ENFORCE | StepKind.SUCCESS_AUDIT:
            ok = _read_back(backend, step, step.path, _parse_flag) == bool(step.value)
        case StepKind.LOAD | StepKind.UPDATE:
            ok = _read_back(backend, step, f"policies/{step.name}/version", parse_version_text) == step.version
        case StepKind.ACTIVATE:
            ok = _read_back(backend, step, f"policies/{step.name}/active", _parse_flag)
        case StepKind.DELETE:
            ok = step.name not in backend.listdir("policies")
    if not ok:
        raise ReadBackError(errno.EIO, f"read-back after '{step.describe()}' does not show the change")


def run_step(backend: Backend, step: Step) -> None:
    """One write (the whole blob in one write()), then read back. Raises OSError."""
    backend.write(step.path, step.data)
    _verify(backend, step)


def _report(reporter: Reporter, step: Step) -> None:
    match step.kind:
        case StepKind.LOAD:
            reporter.policy_loaded(step)
        case StepKind.UPDATE:
            reporter.policy_updated(step)
        case StepKind.ACTIVATE:
            reporter.policy_activated(step)
        case StepKind.DELETE:
            reporter.policy_deleted(step)
        case _:
            reporter.log("notice", step.describe(), "setting_changed")


def execute(plan: Plan, backend: Backend, reporter: Reporter, after_step: StepObserver | None = None) -> ApplyResult:
    """Run ``plan``; a rejected plan writes nothing. ``after_step`` is told of every step done."""
    if plan.rejected:
        for e in plan.errors:
            reporter.plan_rejected(str(e))
        return ApplyResult(Outcome.REJECTED, ())
    if plan.unchanged:
        return ApplyResult(Outcome.UNCHANGED, ())
    done: list[Step] = []
    for step in plan.steps:
        try:
            run_step(backend, step)
        except OSError as e:
            num = e.errno or errno.EIO
            msg = f"step {len(done) + 1}/{len(plan.steps)} '{step.describe()}' failed: {describe_errno(num)}"
            if isinstance(e, ReadBackError):
                msg += f" ({e.strerror})"
            reporter.apply_failed(msg)
            return ApplyResult(Outcome.FAILED, tuple(done), StepFailure(step, num, msg))
        done.append(step)
        _report(reporter, step)
        if after_step is not None:
            after_step(len(done))
    return ApplyResult(Outcome.APPLIED, tuple(done))


def state_after(before: ActualState, done: tuple[Step, ...]) -> ActualState:
    """What securityfs holds after ``done`` ran on ``before``: each step was read back when it
    ran, so the snapshot taken before the plan plus the steps is the state after it (no second
    read of securityfs)."""
    policies = {p.name: p for p in before.policies}
    enforce, success_audit = before.enforce, before.success_audit
    for step in done:
        name = step.name or ""
        match step.kind:
            case StepKind.ENFORCE:
                enforce = bool(step.value)
            case StepKind.SUCCESS_AUDIT:
                success_audit = bool(step.value)
            case StepKind.LOAD | StepKind.UPDATE:
                assert step.version is not None and step.text_digest is not None
                old = policies.get(name)
                policies[name] = LoadedPolicy(name, step.version, old is not None and old.active, step.text_digest,
                                              step.blob_digest)
            case StepKind.ACTIVATE:
                policies = {n: replace(p, active=n == name) for n, p in policies.items()}
            case StepKind.DELETE:
                policies.pop(name, None)
    return ActualState(tuple(sorted(policies.values(), key=lambda p: p.name)), enforce, success_audit)
