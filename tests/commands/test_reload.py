"""``iped reload --unchanged-ok``: the form systemd's ExecReload= runs (systemd/iped.service).

systemd takes any non-zero exit of ExecReload as "Reload failed", so "nothing to change" must
exit 0 there, while a rejected plan must still fail the reload.
"""

from __future__ import annotations

import json

from tests.helpers.daemon import DaemonProc, Site, iped, start_daemon
from tests.helpers.policies import policy_text, unparsable


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
    (s.policies / "broken.pol").write_bytes(unparsable())
    r = iped("reload", "--unchanged-ok", "--socket", str(s.socket))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "broken.pol" in r.stdout + r.stderr


def test_unchanged_ok_still_fails_a_kernel_error_with_4(site: Site) -> None:
    """Only 9 becomes 0: a kernel error mid-apply (4) must fail ``systemctl reload``."""
    site.env["IPED_EMULATOR_FAULT"] = "active:2:EIO"
    site.debounce_ms = 60000  # file events stay pending: only the explicit reload below acts
    site.write_config()
    d = start_daemon(site)
    try:
        site.put("next.pol", policy_text("next", "2.0.0"))
        site.active = "next"
        site.write_config()
        r = iped("reload", "--unchanged-ok", "--socket", str(site.socket), "--json")
        assert r.returncode == 4, r.stdout + r.stderr
        assert json.loads(r.stdout)["failure"]["errno_name"] == "EIO"
    finally:
        d.stop()
