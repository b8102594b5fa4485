"""The pure planner: (declared, actual) -> ordered steps, or a rejection that touches nothing.

Order is chosen so that at no moment a weaker policy is active than in the old or the new state:
enforce ON first, then loads and updates, then the activation, then deletions (the old active
policy only after the new one is active), then success_audit, and enforce OFF only last.
The kernel's anti-rollback rules (policy.c) are checked here, up front, so a plan the kernel
would refuse half-way is rejected before the first write:

* ``update`` needs a strictly higher version than the loaded policy of that name (else ESTALE);
* ``active`` needs a version >= the active policy's (else EINVAL);
* the active policy cannot be deleted (EPERM) -- the planner never tries.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from enum import StrEnum

from iped.daemon.actual import ActualState
from iped.daemon.declared import DeclaredState, DeclError
from iped.emulator.policy_parser import Version


class StepKind(StrEnum):
    ENFORCE = "enforce"
    LOAD = "load"
    UPDATE = "update"
    ACTIVATE = "activate"
    DELETE = "delete"
    SUCCESS_AUDIT = "success_audit"


@dataclass(frozen=True, slots=True)
class Step:
    """One securityfs write. ``blob`` is the signed policy for load/update."""

    kind: StepKind
    name: str | None = None
    version: Version | None = None
    old_version: Version | None = None
    value: bool | None = None
    source: str | None = None
    text_digest: str | None = None
    blob_digest: str | None = None
    blob: bytes = field(default=b"", repr=False, compare=False)

    @property
    def path(self) -> str:
        """The securityfs file this step writes."""
        match self.kind:
            case StepKind.ENFORCE | StepKind.SUCCESS_AUDIT:
                return str(self.kind)
            case StepKind.LOAD:
                return "new_policy"
            case StepKind.ACTIVATE:
                return f"policies/{self.name}/active"
            case _:
                return f"policies/{self.name}/{self.kind}"

    @property
    def data(self) -> bytes:
        if self.kind in (StepKind.LOAD, StepKind.UPDATE):
            return self.blob
        if self.kind in (StepKind.ENFORCE, StepKind.SUCCESS_AUDIT):
            return b"1" if self.value else b"0"
        return b"1"

    def describe(self) -> str:
        match self.kind:
            case StepKind.ENFORCE | StepKind.SUCCESS_AUDIT:
                return f"set {self.kind} = {int(bool(self.value))}"
            case StepKind.LOAD:
                return f"load {self.name} {self.version} from {self.source}"
            case StepKind.UPDATE:
                return f"update {self.name} {self.old_version} -> {self.version} from {self.source}"
            case StepKind.ACTIVATE:
                return f"activate {self.name} {self.version}"
            case _:
                return f"delete {self.name} {self.version} (no file declares it)"

    def as_dict(self) -> dict[str, object]:
        return {"kind": str(self.kind), "name": self.name, "path": self.path,
                "version": str(self.version) if self.version else None,
                "old_version": str(self.old_version) if self.old_version else None,
                "value": self.value, "source": self.source, "text_digest": self.text_digest,
                "blob_digest": self.blob_digest, "description": self.describe()}


@dataclass(frozen=True, slots=True)
class Plan:
    """Steps to run, or the errors that reject the whole plan (then ``steps`` is empty)."""

    steps: tuple[Step, ...]
    errors: tuple[DeclError, ...] = ()

    @property
    def rejected(self) -> bool:
        return bool(self.errors)

    @property
    def unchanged(self) -> bool:
        return not self.errors and not self.steps


def next_version(v: Version) -> Version:
    """The smallest version above ``v`` (each component is 0..65535): what rolling forward needs."""
    if v.rev < 0xFFFF:
        return Version(v.major, v.minor, v.rev + 1)
    if v.minor < 0xFFFF:
        return Version(v.major, v.minor + 1, 0)
    return Version(v.major + 1, 0, 0)


def _anti_rollback_update(source: str, name: str, loaded: Version, declared: Version) -> DeclError:
    same = "the same" if loaded == declared else "a lower"
    return DeclError(
        source, 1, errno.ESTALE,
        f"anti-rollback: policy {name!r} is loaded at version {loaded} with different content, and this file "
        f"carries {same} version ({declared}). The kernel only replaces a policy with a strictly higher "
        f"version (update -> ESTALE otherwise). Roll forward: set policy_version={next_version(loaded)} "
        "(or higher) in the policy text and re-sign it.")


def _anti_rollback_activate(source: str, name: str, version: Version, active: str, active_v: Version) -> DeclError:
    return DeclError(
        source, 1, errno.EINVAL,
        f"anti-rollback: cannot activate {name!r} {version}: the active policy {active!r} has version "
        f"{active_v}, and the kernel never activates a lower version (active -> EINVAL). Roll forward: set "
        f"policy_version={active_v} (or higher) in {name!r} and re-sign it.")


def make_plan(decl: DeclaredState, actual: ActualState) -> Plan:
    """Compute the steps that turn ``actual`` into ``decl`` (pure: no I/O)."""
    errors = list(decl.errors)
    pre: list[Step] = []
    changes: list[Step] = []
    post: list[Step] = []
    if decl.enforce and not actual.enforce:
        pre.append(Step(StepKind.ENFORCE, value=True))
    for p in decl.policies:
        cur = actual.get(p.name)
        common = {"name": p.name, "version": p.version, "source": str(p.source),
                  "text_digest": p.text_digest, "blob_digest": p.blob_digest, "blob": p.blob}
        if cur is None:
            changes.append(Step(StepKind.LOAD, **common))  # type: ignore[arg-type]
        elif cur.text_digest != p.text_digest:
            if p.version.as_u64() > cur.version.as_u64():
                changes.append(Step(StepKind.UPDATE, old_version=cur.version, **common))  # type: ignore[arg-type]
            else:
                errors.append(_anti_rollback_update(str(p.source), p.name, cur.version, p.version))
    cur_active = actual.active
    active_after = cur_active.name if cur_active else None
    target = decl.find_active()
    if target is not None and (cur_active is None or cur_active.name != target.name):
        if cur_active is not None:
            declared_cur = decl.get(cur_active.name)
            # an update of the active policy in this same plan raises the bar it sets
            cur_v = declared_cur.version if declared_cur and declared_cur.version.as_u64() > \
                cur_active.version.as_u64() else cur_active.version
            if target.version.as_u64() < cur_v.as_u64():
                errors.append(_anti_rollback_activate(str(target.source), target.name, target.version,
                                                      cur_active.name, cur_v))
        changes.append(Step(StepKind.ACTIVATE, name=target.name, version=target.version,
                            source=str(target.source), text_digest=target.text_digest))
        active_after = target.name
    for lp in actual.policies:
        if decl.get(lp.name) is None and lp.name != active_after and not decl.protected(lp.name):
            changes.append(Step(StepKind.DELETE, name=lp.name, version=lp.version, text_digest=lp.text_digest))
    if decl.success_audit != actual.success_audit:
        post.append(Step(StepKind.SUCCESS_AUDIT, value=decl.success_audit))
    if not decl.enforce and actual.enforce:
        post.append(Step(StepKind.ENFORCE, value=False))
    if errors:
        return Plan((), tuple(errors))
    return Plan((*pre, *changes, *post))


def drift(decl: DeclaredState, actual: ActualState) -> list[str]:
    """Human lines for status: what differs between declared and actual state."""
    plan = make_plan(decl, actual)
    lines = [s.describe() for s in plan.steps] + [f"rejected: {e}" for e in plan.errors]
    cur = actual.active
    if cur is not None and decl.get(cur.name) is None:
        lines.append(f"active policy {cur.name!r} is not declared by any file (it cannot be deleted while active)")
    return lines
