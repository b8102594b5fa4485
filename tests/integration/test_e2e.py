"""End-to-end: the real ``iped daemon`` process on the emulator backend, driven through files,
signals and the real ``iped`` CLI. Waits are bounded polls on status, never fixed sleeps."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iped.pkcs7 import sign_policy
from tests.helpers.daemon import DaemonProc, Site, iped, request, start_daemon, wait_child, wait_for
from tests.helpers.policies import policy_text, unparsable


def loaded(st: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {p["name"]: (p["version"], p["active"]) for p in st["policies"]}


def test_startup_loads_and_activates_declared_policy(daemon: DaemonProc) -> None:
    st = daemon.status()
    assert st["schema_version"] == 2
    assert st["backend"]["kind"] == "emulator"
    assert st["ready"] is True
    assert st["in_sync"] is True and st["drift"] == []
    assert loaded(st) == {"base": ("1.0.0", True)}
    assert st["enforce"] is True and st["success_audit"] is False
    assert st["policies"][0]["source"] == str(daemon.site.policies / "base.pol")
    assert st["last_plans"][0]["outcome"] == "applied" and st["last_plans"][0]["trigger"] == "startup"


def test_reload_exit_codes_applied_unchanged_rejected(quiet_daemon: DaemonProc) -> None:
    daemon = quiet_daemon
    s = daemon.site
    r = iped("reload", "--socket", str(s.socket))
    assert r.returncode == 9, r.stdout + r.stderr
    s.put("extra.pol", policy_text("extra", "0.0.1"))
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["outcome"] == "applied"
    assert "extra" in loaded(daemon.status())
    (s.policies / "broken.pol").write_bytes(unparsable())
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    rec = json.loads(r.stdout)
    assert rec["outcome"] == "rejected"
    err = rec["errors"][0]
    assert err["file"].endswith("broken.pol") and err["line"] == 2 and err["errno_name"] == "EBADMSG"
    assert "EBADMSG" in err["message"] and "invalid policy" in err["message"]


def test_unreachable_daemon_exit_3(tmp_path: Path) -> None:
    r = iped("reload", "--socket", str(tmp_path / "nothing.sock"))
    assert r.returncode == 3
    assert "unreachable" in r.stderr


def test_inotify_update_and_delete(daemon: DaemonProc) -> None:
    s = daemon.site
    s.put("extra.pol", policy_text("extra", "0.0.1"))
    wait_for(lambda: loaded(daemon.status()).get("extra") == ("0.0.1", False), what="inotify load")
    s.put("extra.pol", policy_text("extra", "0.0.2", "op=EXECUTE boot_verified=TRUE action=ALLOW"))
    wait_for(lambda: loaded(daemon.status()).get("extra") == ("0.0.2", False), what="inotify update")
    (s.policies / "extra.pol").unlink()
    wait_for(lambda: "extra" not in loaded(daemon.status()), what="inotify delete")
    triggers = [p["trigger"] for p in daemon.status()["last_plans"]]
    assert "inotify" in triggers


def test_temporaries_are_ignored(daemon: DaemonProc) -> None:
    s = daemon.site
    for name in (".hidden.pol", "x.pol~", "x.pol.dpkg-new", "x.pol.rpmnew", ".ansible_tmpabc.p7s", "x.pol.swp"):
        (s.policies / name).write_bytes(b"garbage that would be rejected")
    r = iped("reload", "--socket", str(s.socket))
    assert r.returncode == 9, r.stdout + r.stderr


def test_broken_policy_never_changes_active(daemon: DaemonProc) -> None:
    s = daemon.site
    s.put("base.pol", b"policy_name=base policy_version=2.0.0\nDEFAULT action=DENY\nop=EXECUTE bogus=1 action=ALLOW\n")
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 1
    st = daemon.status()
    assert loaded(st) == {"base": ("1.0.0", True)}
    assert st["in_sync"] is False and any("rejected" in d for d in st["drift"])


def test_anti_rollback_refused_with_explanation(daemon: DaemonProc) -> None:
    s = daemon.site
    s.put("base.pol", policy_text("base", "1.0.0", "op=KMODULE action=DENY"))
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["errors"][0]
    assert err["errno_name"] == "ESTALE"
    assert "anti-rollback" in err["reason"] and "policy_version=1.0.1" in err["reason"]
    assert loaded(daemon.status()) == {"base": ("1.0.0", True)}


def test_switch_active_then_delete_old(quiet_daemon: DaemonProc) -> None:
    daemon = quiet_daemon
    s = daemon.site
    s.put("next.pol", policy_text("next", "1.0.0"))
    s.active = "next"
    s.write_config()
    (s.policies / "base.pol").unlink()
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert [st["kind"] for st in json.loads(r.stdout)["steps"]] == ["load", "activate", "delete"]
    assert loaded(daemon.status()) == {"next": ("1.0.0", True)}


def test_activating_lower_version_refused(daemon: DaemonProc) -> None:
    s = daemon.site
    s.put("older.pol", policy_text("older", "0.9.0"))
    s.active = "older"
    s.write_config()
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["errors"][0]
    assert err["errno_name"] == "EINVAL" and "never activates a lower version" in err["reason"]
    st = daemon.status()
    assert st["active"]["name"] == "base"


def test_duplicate_name_rejected(daemon: DaemonProc) -> None:
    s = daemon.site
    s.put("zz-dup.pol", policy_text("base", "5.0.0"))
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["errors"][0]
    assert err["errno_name"] == "EEXIST" and "base.pol" in err["reason"]
    assert loaded(daemon.status()) == {"base": ("1.0.0", True)}


def test_presigned_p7s_and_untrusted_signer(quiet_daemon: DaemonProc, tmp_path: Path) -> None:
    daemon = quiet_daemon
    s = daemon.site
    blob = sign_policy(policy_text("signed", "3.0.0"), s.key.read_bytes(), s.cert.read_bytes())
    s.put("signed.p7s", blob)
    r = iped("reload", "--socket", str(s.socket))
    assert r.returncode == 0, r.stdout + r.stderr
    assert loaded(daemon.status()).get("signed") == ("3.0.0", False)
    from iped.daemon.devkey import ensure_dev_key

    k2, c2 = ensure_dev_key(tmp_path / "other")
    s.put("stranger.p7s", sign_policy(policy_text("stranger", "1.0.0"), k2.read_bytes(), c2.read_bytes()))
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["errors"][0]["errno_name"] == "ENOKEY"


def test_rejection_put_right_without_a_reconcile_is_reported_in_sync(quiet_daemon: DaemonProc,
                                                                      tmp_path: Path) -> None:
    """Issue 20 defect 18 / issue 21 item 5: a rejected reconcile, then the good file restored and
    the stranger removed with no reconcile since (a long debounce; config management's ``iped plan``
    answering 9 and stopping there). Plan and status must report the state as it is now, not the
    rejection and a drift naming a file that is gone."""
    daemon = quiet_daemon
    s = daemon.site
    from iped.daemon.devkey import ensure_dev_key

    k2, c2 = ensure_dev_key(tmp_path / "rogue")
    (s.policies / "base.pol").rename(tmp_path / "base.pol")
    s.put("rogue.p7s", sign_policy(policy_text("base", "1.0.1"), k2.read_bytes(), c2.read_bytes()))
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["errors"][0]["errno_name"] == "ENOKEY", r.stdout
    assert daemon.status()["in_sync"] is False

    (tmp_path / "base.pol").rename(s.policies / "base.pol")
    (s.policies / "rogue.p7s").unlink()
    r = iped("plan", "--json", "--config", str(s.config))
    assert r.returncode == 9, r.stdout + r.stderr
    st = daemon.status()
    assert st["in_sync"] is True and st["drift"] == [], st["drift"]
    assert not any("rogue.p7s" in json.dumps(e) for e in st["declared"]["errors"])
    assert st["status_line"].startswith("in sync: active base 1.0.0"), st["status_line"]
    assert iped("reload", "--socket", str(s.socket)).returncode == 9
    assert daemon.status()["in_sync"] is True


def test_status_alone_reports_a_rejection_put_right(quiet_daemon: DaemonProc) -> None:
    """The same fix seen by ``iped status`` with no plan or reload in between."""
    daemon = quiet_daemon
    s = daemon.site
    (s.policies / "broken.pol").write_bytes(unparsable())
    assert iped("reload", "--socket", str(s.socket)).returncode == 1
    (s.policies / "broken.pol").unlink()
    st = daemon.status()
    assert st["in_sync"] is True and st["drift"] == [], st["drift"]
    assert "DEGRADED" not in st["status_line"], st["status_line"]


def test_sighup_triggers_reconcile(daemon: DaemonProc) -> None:
    before = daemon.status()["counters"]["reconciles"]
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.status()["counters"]["reconciles"] > before, what="SIGHUP reconcile")
    assert daemon.status()["last_plans"][0]["trigger"] == "sighup"


def test_config_error_reported_with_file_and_line(daemon: DaemonProc) -> None:
    s = daemon.site
    s.config.write_text(s.config.read_text() + "\n[policies.typo]\n")
    s.config.write_text(s.config.read_text().replace("enforce = true", 'enforce = "yes"'))
    r = iped("reload", "--socket", str(s.socket), "--json")
    assert r.returncode == 1
    msg = json.loads(r.stdout)["errors"][0]["reason"]
    assert msg.startswith(f"{s.config}:4: policies.enforce:")


def test_kernel_error_mid_apply_exit_4(site: Site) -> None:
    site.env["IPED_EMULATOR_FAULT"] = "active:2:EIO"
    site.debounce_ms = 60000  # file events stay pending: only the explicit reload below acts
    site.write_config()
    d = start_daemon(site)
    try:
        site.put("next.pol", policy_text("next", "2.0.0"))
        site.active = "next"
        site.write_config()
        r = iped("reload", "--socket", str(site.socket), "--json")
        assert r.returncode == 4, r.stdout + r.stderr
        rec = json.loads(r.stdout)
        assert rec["failure"]["errno_name"] == "EIO" and rec["failure"]["step"]["kind"] == "activate"
        st = d.status()
        assert st["active"]["name"] == "base"  # previous active stays
        assert loaded(st)["next"] == ("2.0.0", False)  # the load before the failed step stays
        r = iped("reload", "--socket", str(site.socket))  # the fault fired once; a retry completes
        assert r.returncode == 0
        assert d.status()["active"]["name"] == "next"
    finally:
        d.stop()


def _as_nobody(sock: Path, gid: int, groups: tuple[int, ...] = ()) -> list[dict[str, Any]] | str:
    """Fork, drop to uid nobody with primary group ``gid`` and supplementary ``groups``, ask for a
    reload and a status. Returns the two replies, or the error that stopped the child."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.chdir(sock.parent)  # tmp_path's parents are 0700: connect by a relative path
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(nobody.pw_uid)
            out: Any = [request(Path(sock.name), "reload"), request(Path(sock.name), "status")]
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
    got: list[dict[str, Any]] | str = json.loads(data)
    return got


def _as_member(sock: Path, gid: int, groups: tuple[int, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    got = _as_nobody(sock, gid, groups)
    assert isinstance(got, list), got
    return got[0], got[1]


def test_control_socket_mode_group_and_peer_access(daemon: DaemonProc) -> None:
    import grp
    import stat

    sock = daemon.site.socket
    nogroup = grp.getgrnam("nogroup").gr_gid  # control_group = "nogroup"
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, os.geteuid(), nogroup)
    # the control group as primary group: may read status, never change state
    reload_reply, status_reply = _as_member(sock, nogroup)
    assert reload_reply["ok"] is False and reload_reply["errno_name"] == "EACCES"
    assert "only root may change state" in reload_reply["error"]
    assert status_reply["ok"] is True and status_reply["result"]["schema_version"] == 2
    # ... and as a supplementary group only (the file's group bits and SO_PEERCRED's pid -> /proc)
    reload_reply, status_reply = _as_member(sock, 54321, (nogroup,))
    assert reload_reply["errno_name"] == "EACCES" and "only root may change state" in reload_reply["error"]
    assert status_reply["ok"] is True and status_reply["result"]["schema_version"] == 2
    # not in the group: the socket's 0660 refuses the connect itself
    refused = _as_nobody(sock, 54321)
    assert isinstance(refused, str) and refused.startswith("PermissionError(13"), refused
    # with the file's mode out of the way, SO_PEERCRED still refuses them
    os.chmod(sock, 0o666)
    reload_reply, status_reply = _as_member(sock, 54321)
    assert reload_reply["errno_name"] == "EACCES"
    assert status_reply["ok"] is False and status_reply["errno_name"] == "EACCES"
    assert "neither root nor in the control group" in status_reply["error"]
    assert daemon.status()["counters"]["reconciles"] == 1  # nothing was reconciled for them


def test_missing_control_group_leaves_the_socket_to_root(site: Site) -> None:
    import grp
    import stat

    site.config.write_text(site.config.read_text().replace('control_group = "nogroup"',
                                                           'control_group = "iped-no-such-group"'))
    d = start_daemon(site)
    try:
        st = os.stat(site.socket)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, os.getegid())
        refused = _as_nobody(site.socket, grp.getgrnam("nogroup").gr_gid)
        assert isinstance(refused, str) and refused.startswith("PermissionError(13"), refused
        assert d.status()["ready"] is True  # root still drives it
    finally:
        err = d.stop()
    assert "control_group 'iped-no-such-group' does not exist" in err


def test_malformed_requests_get_error_replies(daemon: DaemonProc) -> None:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(os.fspath(daemon.site.socket))
        s.sendall(b"not json\n[1,2]\n{\"op\": \"frobnicate\"}\n{\"op\": \"ping\"}\n")
        buf = b""
        while buf.count(b"\n") < 4:
            buf += s.recv(65536)
    replies = [json.loads(x) for x in buf.splitlines()]
    assert [r.get("errno_name") for r in replies[:3]] == ["EBADMSG", "EINVAL", "EINVAL"]
    assert replies[3]["ok"] is True
    assert daemon.proc.poll() is None


def test_status_cli_and_plan(quiet_daemon: DaemonProc) -> None:
    daemon = quiet_daemon
    s = daemon.site
    r = iped("status", "--socket", str(s.socket), "--json")
    assert r.returncode == 0
    st = json.loads(r.stdout)
    assert st["schema_version"] == 2 and st["active"]["name"] == "base"
    r = iped("status", "--socket", str(s.socket))
    assert "EMULATOR" in r.stdout and "* base" in r.stdout
    s.put("extra.pol", policy_text("extra", "0.0.1"))
    r = iped("plan", "--socket", str(s.socket), "--json")
    plan = json.loads(r.stdout)
    assert plan["daemon"] is True
    assert (r.returncode, plan["outcome"]) == (0, "would-apply")
    assert [(st["kind"], st["name"]) for st in plan["steps"]] == [("load", "extra")]
    assert "extra" not in loaded(daemon.status())  # a plan writes nothing


def test_rollback_rolls_forward(quiet_daemon: DaemonProc) -> None:
    daemon = quiet_daemon
    s = daemon.site
    s.put("base.pol", policy_text("base", "1.1.0", "op=KMODULE action=DENY"))
    assert iped("reload", "--socket", str(s.socket)).returncode == 0
    assert daemon.status()["active"]["version"] == "1.1.0"
    r = iped("rollback", "--socket", str(s.socket), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)
    rolled = s.state / "rolled-forward" / "base.pol"
    assert res["new_version"] == "1.1.1" and res["target"] == str(rolled)
    text = rolled.read_bytes()
    assert b"policy_version=1.1.1" in text and b"KMODULE" not in text
    assert b"policy_version=1.1.0" in (s.policies / "base.pol").read_bytes(), "the drop-in dir is not written"
    st = daemon.status()
    assert st["active"]["version"] == "1.1.1" and st["in_sync"] is True
    assert st["policies"][0]["source"] == str(rolled)
    # the next higher version deployed to the drop-in dir supersedes the rolled-forward file
    s.put("base.pol", policy_text("base", "1.2.0"))
    assert iped("reload", "--socket", str(s.socket)).returncode == 0  # quiet_daemon: no inotify reload in time
    assert daemon.status()["active"]["version"] == "1.2.0"
    assert not rolled.exists()
    assert daemon.status()["policies"][0]["source"] == str(s.policies / "base.pol")


def test_restart_rederives_from_backend(site: Site) -> None:
    d = start_daemon(site)
    d.stop()
    (site.state / "plans").mkdir(exist_ok=True)
    # a stale/garbage record must not matter: the emulator starts empty, the daemon reloads from files
    (site.state / "plans" / "0000000099.json").write_text("{not json")
    d = start_daemon(site)
    try:
        assert loaded(d.status()) == {"base": ("1.0.0", True)}
    finally:
        d.stop()


def test_stop_leaves_enforce_alone(site: Site) -> None:
    d = start_daemon(site)
    assert d.status()["enforce"] is True
    err = d.stop()
    assert "never weakened" in err


def test_sd_notify_protocol(site: Site, tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from tests.helpers.paths import ROOT

    ns = tmp_path / "notify.sock"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(os.fspath(ns))
    rx.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": os.fspath(ns), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "iped", "daemon", "--config", str(site.config)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got: list[str] = []

    def until(pred: Any) -> list[str]:
        while not pred():
            got.append(rx.recv(4096).decode())
        return got

    try:
        until(lambda: any(m.startswith("READY=1") for m in got))
        ready = next(m for m in got if m.startswith("READY=1"))
        assert "STATUS=in sync: active base 1.0.0, enforce on (applied, startup)" in ready
        until(lambda: got.count("WATCHDOG=1") >= 2)  # pinged from the idle loop at half the interval
        assert iped("reload", "--socket", str(site.socket)).returncode == 9
        n = len(got)
        until(lambda: any(m.startswith("READY=1") for m in got[n:]))
        tail = [m for m in got[n - 2:] if m != "WATCHDOG=1"]
        reloading = next(m for m in tail if m.startswith("RELOADING=1"))
        assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", reloading)
        assert tail.index(reloading) < next(i for i, m in enumerate(tail) if m.startswith("READY=1"))
        proc.send_signal(signal.SIGTERM)
        until(lambda: any(m.startswith("STOPPING=1") for m in got))
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        rx.close()


def test_dev_mode_quick_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers.paths import ROOT

    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "iped", "daemon", "--dev"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        sock = tmp_path / "iped-dev" / "control.sock"
        wait_for(lambda: sock.exists() and request(sock, "ping")["ok"], what="dev daemon")
        r = iped("status", "--json", env=env)  # no --socket: found via the well-known dev path
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["dev"] is True and st["backend"]["kind"] == "emulator"
        assert st["active"]["name"] == "allow_all"
        assert {p["name"] for p in st["policies"]} == {"allow_all", "boot_verified"}
        key = Path(st["state_dir"]).parent / "keys" / "dev-signer.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert iped("reload", env=env).returncode == 9
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.stderr is not None
    banner = proc.stderr.read()
    assert "iped status" in banner and str(sock) in banner
    # the run's throw-away signing key goes with it: no private key left in /tmp after each run
    assert proc.returncode == 0
    assert not key.exists() and not key.with_suffix(".crt").exists() and not key.parent.exists()


def test_rollback_json_error_from_the_daemon(quiet_daemon: DaemonProc) -> None:
    r = iped("rollback", "--socket", str(quiet_daemon.site.socket), "--json")  # base 1.0.0 has no earlier content
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["errno"], doc["errno_name"]) == (False, 2, "ENOENT")
    assert doc["error"].startswith("no earlier content of 'base'")
    assert r.stderr.startswith("iped: error: ENOENT: no earlier content of 'base'")


def test_rollback_dry_run_writes_nothing_and_says_so(quiet_daemon: DaemonProc) -> None:
    s = quiet_daemon.site
    s.put("base.pol", policy_text("base", "1.1.0", "op=KMODULE action=DENY"))
    assert iped("reload", "--socket", str(s.socket)).returncode == 0
    rolled = s.state / "rolled-forward" / "base.pol"
    r = iped("rollback", "--socket", str(s.socket), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("rollback base: 1.1.0 -> 1.1.1 with the content of sha256:")
    assert f"would be written to {rolled} (--dry-run: nothing written, nothing applied)" in r.stdout
    assert ", written to" not in r.stdout and not rolled.exists()
    assert quiet_daemon.status()["active"]["version"] == "1.1.0"


def _iped_as_nobody(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``iped ARGS --socket control.sock`` as uid nobody, group 54321 (not the control group), run
    in the socket's directory (tmp_path's parents are 0700)."""
    import subprocess

    cmd = ["setpriv", "--reuid=nobody", "--regid=54321", "--clear-groups",
           sys.executable, "-m", "iped", *args, "--socket", sock.name]
    # (no coverage of this process: under pytest-cov it would write its data file as nobody, fail,
    # and say so on stderr)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE_", "COVERAGE_"))}
    return subprocess.run(cmd, cwd=sock.parent, capture_output=True, text=True, timeout=60, check=False, env=env)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_plan_and_rollback_refused_on_the_socket_say_so_instead_of_running_locally(daemon: DaemonProc) -> None:
    sock = daemon.site.socket
    for verb in (("plan",), ("rollback", "--config", str(daemon.site.config))):
        r = _iped_as_nobody(sock, *verb)
        assert r.returncode == 3, r.stderr
        assert r.stderr == (f"iped: error: daemon unreachable: {sock.name}: EACCES (Permission denied): "
                            "needs root or the control group\n"), r.stderr
    # the socket's mode and its directories' out of the way (the CLI checks who owns each, which
    # needs search permission; a socket others can write is not trusted, so the group's bits open
    # it): the daemon's own peer check refuses
    opened = [d for d in sock.parents if d.stat().st_mode & 0o001 == 0]
    os.chown(sock, 0, 54321)
    os.chmod(sock, 0o660)
    for d in opened:
        os.chmod(d, d.stat().st_mode | 0o001)
    try:
        r = _iped_as_nobody(sock, "plan")
    finally:
        for d in opened:
            os.chmod(d, d.stat().st_mode & ~0o001)
    assert r.returncode == 1 and r.stdout == "", r.stderr
    assert r.stderr.startswith("iped: error: EACCES: uid ") and "needs root or the control group" in r.stderr
    assert daemon.status()["counters"]["reconciles"] == 1


def test_emulator_start_whose_declared_policy_is_rejected_exits_78_as_on_a_kernel(site: Site) -> None:
    site.put("base.pol", policy_text("base", "1.0.0", default="DEFAULT action=MAYBE"))
    r = iped("daemon", "--config", str(site.config), timeout=30)  # never READY: it must end by itself
    assert r.returncode == 78, r.stderr
    assert re.search(r"FAILED: declared active policy 'base' not activated, rejected: .*base\.pol:2: EBADMSG",
                     r.stderr), r.stderr


def test_signing_cert_added_to_a_running_emulator_daemon_is_trusted_by_plan_and_reload(site: Site) -> None:
    """The emulator's keyring holds the configured certificates, re-read with the configuration:
    a plan that says would-apply is what the reload does (it applied nothing: 4 ENOKEY)."""
    signed = site.config.read_text()
    (site.policies / "base.pol").unlink()
    site.debounce_ms = 60000  # only the explicit plan and reload act
    site.active = None
    site.write_config()
    site.config.write_text("".join(line for line in site.config.read_text().splitlines(keepends=True)
                                   if not line.startswith("signing_")))
    d = start_daemon(site)
    try:
        site.config.write_text(signed.replace("debounce_ms = 50", "debounce_ms = 60000"))
        site.put("base.pol", policy_text("base", "1.0.0"))
        r = iped("plan", "--socket", str(site.socket))
        assert r.returncode == 0 and "would-apply" in r.stdout, r.stdout + r.stderr
        r = iped("reload", "--socket", str(site.socket))
        assert r.returncode == 0, r.stdout + r.stderr
        st = d.status()
        assert st["active"]["name"] == "base"
        assert "its keyring holds the configured trust_anchors and signing_cert" in st["backend"]["reason"]
    finally:
        d.stop()


def test_the_daemons_plan_carries_the_boot_facts(daemon: DaemonProc) -> None:
    """`iped plan --json` asked of the daemon has the boot facts (schema 2) as the local plan has:
    the system lab's nothing_to_do_after_boot found `"boot": null` from the daemon."""
    r = iped("plan", "--json", "--socket", str(daemon.site.socket))
    doc = json.loads(r.stdout)
    assert doc["daemon"] is True and isinstance(doc["boot"], dict) and "notes" in doc["boot"], doc
