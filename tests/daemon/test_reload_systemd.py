"""``iped reload --unchanged-ok``: the form systemd's ExecReload= runs (systemd/iped.service).

systemd takes any non-zero exit of ExecReload as "Reload failed", so "nothing to change" must
exit 0 there, while a rejected plan must still fail the reload.
"""

from __future__ import annotations

from tests.daemon.conftest import DaemonProc, iped, policy_text


def test_unchanged_ok_exits_0_for_nothing_to_change_and_after_a_change(daemon: DaemonProc) -> None:
    s = daemon.site
    r = iped("reload", "--unchanged-ok", "--socket", str(s.socket))
    assert r.returncode == 0, r.stdout + r.stderr
    s.put("extra.pol", policy_text("extra", "0.0.1"))
    # applied now, or already by inotify (then unchanged): both are a successful reload
    r = iped("reload", "--unchanged-ok", "--socket", str(s.socket))
    assert r.returncode == 0, r.stdout + r.stderr


def test_unchanged_ok_still_fails_a_rejected_plan(daemon: DaemonProc) -> None:
    s = daemon.site
    (s.policies / "broken.pol").write_bytes(b"policy_name=broken policy_version=1.0.0\nop=EXECUTE action=ALOW\n")
    r = iped("reload", "--unchanged-ok", "--socket", str(s.socket))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "broken.pol" in r.stdout + r.stderr
