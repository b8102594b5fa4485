"""The pure planner: every transition, in the safe order, and every up-front refusal."""

from __future__ import annotations

import errno
from pathlib import Path

from iped.daemon.actual import ActualState, LoadedPolicy
from iped.daemon.declared import DeclaredPolicy, DeclaredState, DeclError, sha256
from iped.daemon.plan import StepKind, make_plan
from iped.emulator.policy_parser import Version
from tests.helpers.policies import policy_text


def v(s: str) -> Version:
    a, b, c = (int(x) for x in s.split("."))
    return Version(a, b, c)


def decl(name: str, ver: str, body: str = "") -> DeclaredPolicy:
    text = policy_text(name, ver) + body.encode()
    return DeclaredPolicy(name, v(ver), text, b"blob:" + text, Path(f"/p/{name}.pol"), "CN=test")


def loaded(p: DeclaredPolicy, active: bool = False) -> LoadedPolicy:
    return LoadedPolicy(p.name, p.version, active, p.text_digest, sha256(p.blob))


def want(*ps: DeclaredPolicy, active: str | None = None, enforce: bool = True, sa: bool = False,
      errors: tuple[DeclError, ...] = (), protect: tuple[str, ...] = ()) -> DeclaredState:
    return DeclaredState(ps, active, enforce, sa, protect, errors)


def have(*ps: LoadedPolicy, enforce: bool = True, sa: bool = False) -> ActualState:
    return ActualState(ps, enforce, sa)


def kinds(plan: object) -> list[tuple[str, str | None]]:
    return [(str(s.kind), s.name) for s in plan.steps]  # type: ignore[attr-defined]


def test_fresh_machine_load_then_activate() -> None:
    a, b = decl("a", "1.0.0"), decl("b", "0.0.1")
    plan = make_plan(want(a, b, active="a"), have())
    assert kinds(plan) == [("load", "a"), ("load", "b"), ("activate", "a")]
    assert plan.steps[0].path == "new_policy" and plan.steps[0].data == a.blob
    assert plan.steps[2].path == "policies/a/active" and plan.steps[2].data == b"1"


def test_nothing_to_do_is_unchanged() -> None:
    a = decl("a", "1.0.0")
    plan = make_plan(want(a, active="a"), have(loaded(a, True)))
    assert plan.unchanged and not plan.rejected


def test_resigned_same_text_is_unchanged() -> None:
    a = decl("a", "1.0.0")
    actual = have(LoadedPolicy("a", a.version, True, a.text_digest, "another-signature-digest"))
    assert make_plan(want(a, active="a"), actual).unchanged


def test_update_needs_strictly_higher_version() -> None:
    old, new = decl("a", "1.0.0"), decl("a", "1.0.1", "op=KMODULE action=DENY\n")
    plan = make_plan(want(new, active="a"), have(loaded(old, True)))
    assert kinds(plan) == [("update", "a")]
    assert plan.steps[0].path == "policies/a/update" and plan.steps[0].old_version == v("1.0.0")


def test_update_same_version_different_text_refused() -> None:
    old, new = decl("a", "1.0.0"), decl("a", "1.0.0", "op=KMODULE action=DENY\n")
    plan = make_plan(want(new, active="a"), have(loaded(old, True)))
    assert plan.rejected and plan.steps == ()
    e = plan.errors[0]
    assert e.errno == errno.ESTALE and "the same version" in e.reason and "policy_version=1.0.1" in e.reason


def test_update_lower_version_refused() -> None:
    old, new = decl("a", "2.0.0"), decl("a", "1.9.0", "op=KMODULE action=DENY\n")
    plan = make_plan(want(new), have(loaded(old)))
    assert plan.rejected and plan.errors[0].errno == errno.ESTALE and "a lower version" in plan.errors[0].reason


def test_activate_lower_than_active_refused() -> None:
    cur, low = decl("cur", "2.0.0"), decl("low", "1.0.0")
    plan = make_plan(want(cur, low, active="low"), have(loaded(cur, True), loaded(low)))
    assert plan.rejected and plan.errors[0].errno == errno.EINVAL
    assert "never activates a lower version" in plan.errors[0].reason


def test_activate_equal_version_allowed() -> None:
    cur, eq = decl("cur", "2.0.0"), decl("eq", "2.0.0")
    plan = make_plan(want(cur, eq, active="eq"), have(loaded(cur, True)))
    assert kinds(plan) == [("load", "eq"), ("activate", "eq")]


def test_activate_against_updated_active_version() -> None:
    # the active policy is updated to 3.0.0 in the same plan: activating a 2.5.0 must be refused
    cur, cur3, other = decl("cur", "2.0.0"), decl("cur", "3.0.0", "op=KMODULE action=DENY\n"), decl("o", "2.5.0")
    plan = make_plan(want(cur3, other, active="o"), have(loaded(cur, True)))
    assert plan.rejected and "3.0.0" in plan.errors[0].reason


def test_switch_active_deletes_old_only_after_activation() -> None:
    old, new = decl("old", "1.0.0"), decl("new", "1.0.0")
    plan = make_plan(want(new, active="new"), have(loaded(old, True)))
    assert kinds(plan) == [("load", "new"), ("activate", "new"), ("delete", "old")]


def test_undeclared_active_is_never_deleted() -> None:
    old = decl("old", "1.0.0")
    plan = make_plan(want(active=None), have(loaded(old, True)))
    assert plan.unchanged


def test_undeclared_inactive_deleted_unless_protected() -> None:
    a, x, y = decl("a", "1.0.0"), decl("x", "0.0.1"), decl("sys-boot", "0.0.1")
    plan = make_plan(want(a, active="a", protect=("sys-*",)), have(loaded(a, True), loaded(x), loaded(y)))
    assert kinds(plan) == [("delete", "x")]


def test_enforce_on_first_off_last() -> None:
    a, b = decl("a", "1.0.0"), decl("b", "1.0.0")
    plan = make_plan(want(a, b, active="b", enforce=True, sa=True), have(loaded(a, True), enforce=False))
    assert kinds(plan) == [("enforce", None), ("load", "b"), ("activate", "b"), ("success_audit", None)]
    assert plan.steps[0].value is True and plan.steps[0].data == b"1"
    plan = make_plan(want(a, b, active="b", enforce=False), have(loaded(a, True), enforce=True))
    assert kinds(plan) == [("load", "b"), ("activate", "b"), ("enforce", None)]
    assert plan.steps[-1].data == b"0"


def test_declaration_errors_reject_everything() -> None:
    a = decl("a", "1.0.0")
    bad = DeclError("/p/bad.pol", 3, errno.EBADMSG, "unknown operation")
    plan = make_plan(want(a, active="a", errors=(bad,)), have())
    assert plan.rejected and plan.steps == () and plan.errors == (bad,)
    assert str(bad).startswith("/p/bad.pol:3: EBADMSG (invalid policy")


def test_boot_policy_updated_in_place() -> None:
    boot = LoadedPolicy("boot", v("0.0.0"), True, sha256(b"compiled in"), None)
    new = decl("boot", "0.0.1")
    plan = make_plan(want(new, active="boot"), have(boot))
    assert kinds(plan) == [("update", "boot")]


def test_step_kinds_cover_all_paths() -> None:
    assert {k.value for k in StepKind} == {"enforce", "load", "update", "activate", "delete", "success_audit"}
