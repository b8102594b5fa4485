"""The converge decision of iped.ipe.ipe_state against a scripted iped (exit codes and JSON as iped prints them)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.iped.ipe.plugins.module_utils.iped import converge, reasons

PLAN = {"schema_version": 1, "outcome": "would-apply",
        "before": {"active": "base", "enforce": True, "success_audit": False, "policies": []},
        "after": {"active": "app", "enforce": True, "success_audit": False, "policies": []},
        "steps": [{"kind": "activate", "name": "app"}], "errors": [], "reasons": []}


class Iped:
    """Answers each iped verb with a scripted (rc, stdout, stderr) and records the command lines."""

    def __init__(self, **answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        verb = argv[1] if argv[1] != "apply" else "apply_once"
        rc, doc, err = self.answers[verb]
        return rc, json.dumps(doc) if doc is not None else "", err

    @property
    def verbs(self):
        return [c[1] for c in self.calls]


def run(fake, method="auto", check_mode=False):
    return converge(fake, "/usr/bin/iped", "/etc/iped/iped.toml", None, method, check_mode)


def test_unchanged_plan_is_ok_and_runs_nothing_else():
    fake = Iped(plan=(9, dict(PLAN, outcome="unchanged", steps=[]), ""))
    result = run(fake)
    assert (result["changed"], result["failed"], fake.verbs) == (False, False, ["plan"])
    assert "diff" not in result


def test_rejected_plan_fails_with_the_reasons():
    why = "/etc/iped/policies.d/app.p7s: ENOKEY: signer not trusted"
    fake = Iped(plan=(1, dict(PLAN, outcome="rejected", steps=[], reasons=[why]), ""))
    result = run(fake)
    assert result["failed"] and result["reasons"] == [why] and why in result["msg"]
    assert fake.verbs == ["plan"]


def test_invalid_config_fails_with_stderr_when_no_json():
    fake = Iped(plan=(1, None, "iped: /etc/iped/iped.toml:3: policies.enforce: Input should be a valid boolean\n"))
    result = run(fake)
    assert result["failed"] and result["reasons"] == [
        "iped: /etc/iped/iped.toml:3: policies.enforce: Input should be a valid boolean"]


def test_check_mode_reports_changed_with_diff_and_writes_nothing():
    fake = Iped(plan=(0, PLAN, ""))
    result = run(fake, check_mode=True)
    assert result["changed"] and not result["failed"]
    assert result["diff"]["before"]["active"] == "base" and result["diff"]["after"]["active"] == "app"
    assert fake.verbs == ["plan"] and result["method_used"] is None


def test_reload_through_the_daemon():
    fake = Iped(plan=(0, PLAN, ""), reload=(0, {"outcome": "applied", "done": 1}, ""))
    result = run(fake)
    assert (result["changed"], result["method_used"], fake.verbs) == (True, "daemon", ["plan", "reload"])


@pytest.mark.parametrize(("method", "failed", "verbs"), [
    ("auto", False, ["plan", "reload", "apply"]),
    ("daemon", True, ["plan", "reload"]),
])
def test_unreachable_daemon_falls_back_only_with_auto(method, failed, verbs):
    fake = Iped(plan=(0, PLAN, ""), reload=(3, None, "iped: daemon unreachable: no daemon listening\n"),
                apply_once=(0, {"outcome": "applied", "done": 1}, ""))
    result = run(fake, method=method)
    assert (result["failed"], fake.verbs) == (failed, verbs)
    assert result["changed"] is not failed
    if not failed:
        assert result["method_used"] == "once"
        assert fake.calls[-1] == ["/usr/bin/iped", "apply", "--json", "--config", "/etc/iped/iped.toml"]


def test_method_once_never_asks_a_daemon():
    fake = Iped(plan=(0, PLAN, ""), apply_once=(0, {"outcome": "applied", "done": 1}, ""))
    result = run(fake, method="once")
    assert "--no-daemon" in fake.calls[0] and fake.verbs == ["plan", "apply"] and result["changed"]


def test_kernel_error_fails_with_kernel_error():
    failure = {"errno": 5, "message": "policies/app/active: EIO: Input/output error"}
    fake = Iped(plan=(0, PLAN, ""), reload=(4, {"outcome": "failed", "done": 0, "failure": failure}, ""))
    result = run(fake)
    assert result["failed"] and result["kernel_error"] and not result["changed"]
    assert "EIO" in result["msg"]


def test_reasons_prefer_the_document():
    assert reasons({"errors": [{"message": "a"}], "failure": {"message": "b"}}, "c\n") == ["a", "b"]
    assert reasons(None, "\n x \n") == [" x "]


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        run(Iped(), method="sometimes")


def test_judge_plans_the_staged_config_and_never_converges():
    from ansible_collections.iped.ipe.plugins.module_utils.iped import judge

    fake = Iped(plan=(0, PLAN, ""))
    result = judge(fake, "/usr/bin/iped", "/tmp/stage/iped.toml", None, "auto")
    assert result["changed"] and not result["failed"] and result["diff"]["after"] == PLAN["after"]
    assert fake.calls == [["/usr/bin/iped", "plan", "--json", "--config", "/tmp/stage/iped.toml"]]


def test_judge_of_a_rejected_staged_state_fails_with_the_reasons():
    from ansible_collections.iped.ipe.plugins.module_utils.iped import judge

    why = "/tmp/stage/policies.d/fleet.p7s: ENOKEY: signer not trusted"
    fake = Iped(plan=(1, dict(PLAN, outcome="rejected", steps=[], reasons=[why]), ""))
    result = judge(fake, "/usr/bin/iped", "/tmp/stage/iped.toml", None, "once")
    assert result["failed"] and result["reasons"] == [why] and "nothing installed" in result["msg"]
    assert fake.calls[0][-1] == "--no-daemon" and fake.verbs == ["plan"]
