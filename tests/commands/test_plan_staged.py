"""``iped plan --config STAGED`` through the daemon, and ``iped status --no-daemon``."""

from __future__ import annotations

import grp
import json
import os
import pwd
from pathlib import Path
from typing import Any

from tests.helpers.daemon import DaemonProc, Site, iped, request, wait_child
from tests.helpers.iped_with_hooks import STATE_ENV
from tests.helpers.policies import policy_text


def stage(site: Site, root: Path, active: str, *policies: tuple[str, str]) -> Path:
    """A staged iped.toml (the site's, with another active policy) and its own drop-in dir."""
    (root / "policies.d").mkdir(parents=True)
    for name, version in policies:
        (root / "policies.d" / f"{name}.pol").write_bytes(policy_text(name, version))
    text = site.config.read_text().replace('active = "base"', f'active = "{active}"')
    text = text.replace('dir = "policies.d"', f'dir = "{root}/policies.d"')
    text = text.replace('"run/control.sock"', f'"{site.socket}"').replace('"state"', f'"{site.state}"')
    (root / "iped.toml").write_text(text)
    return root / "iped.toml"


def test_the_daemon_plans_a_staged_configuration_and_keeps_its_own(quiet_daemon: DaemonProc,
                                                                    tmp_path: Path) -> None:
    site = quiet_daemon.site
    before = quiet_daemon.status()
    staged = stage(site, tmp_path / "stage", "app", ("app", "2.0.0"))
    r = iped("plan", "--json", "--config", str(staged))
    assert r.returncode == 0, r.stdout + r.stderr
    plan = json.loads(r.stdout)
    assert plan["daemon"] is True and plan["config"] == str(staged)
    assert (plan["before"]["active"], plan["after"]["active"]) == ("base", "app")
    assert [s["kind"] for s in plan["steps"]] == ["load", "activate", "delete"]
    after = quiet_daemon.status()  # the daemon's own declared state and records: untouched
    assert after["declared"] == before["declared"] and after["last_plans"] == before["last_plans"]
    assert after["active"]["name"] == "base" and after["in_sync"]

    rejected = stage(site, tmp_path / "stage2", "nothing", ("app", "2.0.0"))
    r = iped("plan", "--json", "--config", str(rejected))
    assert r.returncode == 1 and json.loads(r.stdout)["outcome"] == "rejected", r.stdout
    assert iped("plan", "--json", "--config", str(site.config)).returncode == 9  # its own: as before


def _plan_as_control_group_member(sock: Path, staged: Path) -> dict[str, Any]:
    nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrnam("nogroup").gr_gid
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.chdir(sock.parent)  # tmp_path's parents are 0700: connect by a relative path
            os.setgroups([])
            os.setgid(nogroup)
            os.setuid(nobody.pw_uid)
            out: Any = request(Path(sock.name), "plan", config=str(staged))
        except BaseException as e:
            out = repr(e)
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    wait_child(pid, 60)
    got: dict[str, Any] = json.loads(data)
    return got


def test_only_root_plans_another_configuration(quiet_daemon: DaemonProc, tmp_path: Path) -> None:
    """The control group may plan the daemon's configuration, not make it read other files."""
    staged = stage(quiet_daemon.site, tmp_path / "stage", "app", ("app", "2.0.0"))
    reply = _plan_as_control_group_member(quiet_daemon.site.socket, staged)
    assert reply["ok"] is False and reply["errno_name"] == "EACCES" and "only root" in reply["error"], reply


def test_status_without_a_daemon_reads_the_state_directly(site: Site, tmp_path: Path) -> None:
    env = {STATE_ENV: str(tmp_path / "emulated.jsonl")}
    assert iped("status", "--config", str(site.config)).returncode == 3  # the contract without --no-daemon
    r = iped("status", "--json", "--no-daemon", "--config", str(site.config), env=env)
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["daemon"] is False and st["in_sync"] is False and st["active"] is None
    assert iped("apply", "--once", "--config", str(site.config), env=env).returncode == 0
    st = json.loads(iped("status", "--json", "--no-daemon", "--config", str(site.config), env=env).stdout)
    assert st["in_sync"] is True and st["active"]["name"] == "base" and st["drift"] == []
    assert "no daemon" in st["status_line"]
    text = iped("status", "--no-daemon", "--config", str(site.config), env=env).stdout
    assert "in sync (no daemon: read directly from the emulator" in text
