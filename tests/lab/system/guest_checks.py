"""Checks of the installed iped under systemd, run INSIDE the system image (stdlib only).

A oneshot unit (``iped-lab-checks.service``) runs this with the image's own python3 once the
system reached multi-user.target; it drives iped only the way an administrator would
(``systemctl``, ``iped``, ``dpkg``, ``apt-get``) and reads the kernel's IPE state from
securityfs.  Each check's outcome goes to ``results.json`` as soon as it is known (a hang
keeps the earlier ones); the unit powers the guest off afterwards.  The host side
(``tests/lab/system/test_system_image.py``) turns each entry into a pytest outcome.

The checks run in order on one boot and each leaves the service running with ``lab_a``
declared and active, except the last (purge).  Inputs written by the host:
``/var/lib/iped-lab/policies/*`` (signed policies), ``/etc/iped/lab/*`` (certificates, the
local signing key).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

LAB = Path("/var/lib/iped-lab")
RESULTS = LAB / "results.json"
STORE = LAB / "policies"
POLICIES = Path("/etc/iped/policies.d")
CONFIG = Path("/etc/iped/iped.toml")
IPE = Path("/sys/kernel/security/ipe")
UPGRADE_SUFFIX = "+lab1"
#: MESSAGE_IDs from iped/daemon/log.py (docs/daemon.md).
MSG_ACTIVATED = "e01ef155bfc045c0ba3635e7cd124585"
MSG_READY = "0238e581d7f2471c8cadab9f2f0345ed"
#: The issue's bound for a start whose declared policy the kernel refuses.
REFUSED_START_BOUND_S = 30.0

CONFIG_TEMPLATE = """# written by the system-image lab checks
[policies]
dir = "/etc/iped/policies.d"
active = "{active}"
enforce = true
success_audit = false
trust_anchors = ["/etc/iped/lab/rsa-signer.crt", "/etc/iped/lab/untrusted-signer.crt"]
signing_key = "/etc/iped/lab/rsa-signer.key"
signing_cert = "/etc/iped/lab/rsa-signer.crt"

[daemon]
backend = "kernel"

[audit]
source = "auto"
"""


class CheckFailedError(Exception):
    """A check's expectation did not hold; the message says what was seen instead."""


def sh(*argv: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run a command; (exit status, stdout+stderr). A timeout is exit 124 (like timeout(1))."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n(timed out after {timeout:g} s)"
    return p.returncode, p.stdout


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise CheckFailedError(message)


def kernel_state() -> dict[str, tuple[str, bool]]:
    """name -> (version, active) of every loaded policy (one deleted while being read is left out)."""
    state: dict[str, tuple[str, bool]] = {}
    for d in (IPE / "policies").iterdir():
        try:
            state[d.name] = ((d / "version").read_text().strip(), (d / "active").read_text().strip() == "1")
        except FileNotFoundError:
            continue
    return state


def active_policy() -> tuple[str, str] | None:
    """(name, version) of the policy the kernel enforces, or None."""
    active = [(name, version) for name, (version, is_active) in kernel_state().items() if is_active]
    return active[0] if active else None


def enforcing() -> bool:
    return (IPE / "enforce").read_text().strip() == "1"


def unit_property(name: str) -> str:
    return sh("systemctl", "show", "-P", name, "iped.service")[1].strip()


def write_config(active: str) -> None:
    CONFIG.write_text(CONFIG_TEMPLATE.format(active=active))


def declare(stored: str, as_name: str) -> None:
    shutil.copyfile(STORE / stored, POLICIES / as_name)


def journal(*match: str) -> list[dict[str, str]]:
    _, out = sh("journalctl", "-o", "json", "--no-pager", *match)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def enforcement_kept(before: tuple[str, str] | None, what: str) -> str:
    after = active_policy()
    expect(after == before, f"{what}: active policy {before} -> {after}")
    expect(enforcing(), f"{what}: enforce dropped to 0")
    return f"active {after}, enforce 1"


# --------------------------------------------------------------------------- checks


def enable_start_ready() -> str:
    write_config("lab_a")
    declare("lab_a-1.0.0.p7s", "lab_a.p7s")
    expect(active_policy() is None, f"a policy is active before iped ran: {active_policy()}")
    rc, out = sh("systemctl", "enable", "--now", "iped.service", timeout=150)
    expect(rc == 0, f"systemctl enable --now: exit {rc}\n{out}")
    # Type=notify: start returned, so READY=1 came; the policy must be active already
    now = active_policy()
    expect(now == ("lab_a", "1.0.0"), f"after start returned the kernel's active policy is {now}")
    expect(unit_property("ActiveState") == "active", f"ActiveState {unit_property('ActiveState')}")
    activated = journal(f"MESSAGE_ID={MSG_ACTIVATED}")
    ready = journal(f"MESSAGE_ID={MSG_READY}")
    expect(bool(activated) and bool(ready), f"journal: {len(activated)} activated, {len(ready)} ready entries")
    expect(int(ready[0]["__REALTIME_TIMESTAMP"]) >= int(activated[0]["__REALTIME_TIMESTAMP"]),
           "the ready entry precedes the activation")
    expect("lab_a" in activated[0].get("MESSAGE", ""), f"activation entry: {activated[0].get('MESSAGE')}")
    return f"active {now}; StatusText: {unit_property('StatusText')}"


def security_exposure() -> str:
    rc, out = sh("systemd-analyze", "security", "--no-pager", "iped.service")
    last = [ln for ln in out.splitlines() if "Overall exposure level" in ln]
    expect(bool(last), f"systemd-analyze security (exit {rc}):\n{out[-2000:]}")
    level = float(last[0].split("level for iped.service:")[1].split()[0])
    expect(level <= 1.5, f"exposure {level} > 1.5")
    return last[0].strip()


def status_cli() -> str:
    rc, out = sh("iped", "status")
    expect(rc == 0 and "lab_a" in out, f"iped status: exit {rc}\n{out}")
    return out.strip().splitlines()[0] if out.strip() else ""


def reload_nothing_to_change() -> str:
    rc, out = sh("systemctl", "reload", "iped.service")
    expect(rc == 0, f"systemctl reload with nothing to change: exit {rc}\n{out}"
                    f"\n{sh('systemctl', 'status', '--no-pager', '-n', '5', 'iped.service')[1]}")
    return "exit 0"


def reload_applied() -> str:
    declare("lab_a-1.0.1.p7s", "lab_a.p7s")
    rc, out = sh("systemctl", "reload", "iped.service")
    now = active_policy()
    expect(now == ("lab_a", "1.0.1"), f"after reload the active policy is {now}")
    expect(rc == 0, f"systemctl reload after a change: exit {rc}\n{out}"
                    f"\n{sh('systemctl', 'status', '--no-pager', '-n', '5', 'iped.service')[1]}")
    return f"exit 0, active {now}"


def reload_rejected() -> str:
    before = active_policy()
    (POLICIES / "broken.pol").write_text("policy_name=broken policy_version=0.0.1\nDEFAULT action=MAYBE\n")
    try:
        rc, _ = sh("systemctl", "reload", "iped.service")
        status = sh("systemctl", "status", "--no-pager", "-n", "20", "iped.service")[1]
        expect(rc != 0, f"systemctl reload with a broken policy: exit 0\n{status}")
        expect("broken.pol" in status, f"systemctl status does not name broken.pol:\n{status}")
        kept = enforcement_kept(before, "rejected reload")
    finally:
        (POLICIES / "broken.pol").unlink()
        sh("systemctl", "reload", "iped.service")
    return f"exit {rc}; {kept}"


def rollback_through_service() -> str:
    before = active_policy()
    drop_in = sorted(p.name for p in POLICIES.iterdir())
    rc, out = sh("iped", "rollback")
    expect(rc == 0, f"iped rollback: exit {rc}\n{out}")
    now = active_policy()
    expect(now is not None and now[0] == "lab_a" and now != before, f"after rollback: {before} -> {now}")
    # rolled forward into the state dir (ProtectSystem=strict: /etc is read-only to the daemon)
    rolled = sorted(p.name for p in Path("/var/lib/iped/rolled-forward").iterdir())
    expect([n for n in rolled if n.startswith("lab_a.")] != [], f"nothing in /var/lib/iped/rolled-forward: {rolled}")
    expect(sorted(p.name for p in POLICIES.iterdir()) == drop_in, "rollback wrote into the drop-in dir")
    rc, out = sh("systemctl", "reload", "iped.service")
    expect(active_policy() == now, f"the next reload moved the kernel from {now} to {active_policy()}: {out}")
    return f"{before} -> {now}"


def stop_keeps_enforcement() -> str:
    before = active_policy()
    rc, out = sh("systemctl", "stop", "iped.service")
    expect(rc == 0, f"systemctl stop: exit {rc}\n{out}")
    kept = enforcement_kept(before, "stop")
    rc, out = sh("systemctl", "start", "iped.service")
    expect(rc == 0, f"systemctl start after stop: exit {rc}\n{out}")
    return kept


def restart_keeps_enforcement() -> str:
    before = active_policy()
    rc, out = sh("systemctl", "restart", "iped.service")
    expect(rc == 0, f"systemctl restart: exit {rc}\n{out}")
    return enforcement_kept(before, "restart")


def kernel_refused_start() -> str:
    before = active_policy()
    sh("systemctl", "stop", "iped.service")
    declare("lab_b-2.0.0-untrusted.p7s", "lab_b.p7s")
    write_config("lab_b")
    try:
        start = time.monotonic()
        rc, out = sh("systemctl", "start", "iped.service", timeout=REFUSED_START_BOUND_S + 15)
        took = time.monotonic() - start
        status_text = unit_property("StatusText")
        time.sleep(5)  # RestartSec=2s: a restart loop would show by now
        restarts, state = unit_property("NRestarts"), unit_property("ActiveState")
        expect(rc != 0, f"systemctl start succeeded with a declared policy the kernel refuses\n{out}")
        expect(took <= REFUSED_START_BOUND_S, f"systemctl start took {took:.1f} s (> {REFUSED_START_BOUND_S:g})")
        expect("ENOKEY" in status_text and "lab_b.p7s" in status_text,
               f"StatusText does not name ENOKEY and lab_b.p7s: {status_text!r}")
        expect(restarts == "0" and state in ("failed", "inactive"), f"NRestarts={restarts} ActiveState={state}")
        kept = enforcement_kept(before, "refused start")
    finally:
        sh("systemctl", "stop", "iped.service")
        (POLICIES / "lab_b.p7s").unlink()
        write_config("lab_a")
        sh("systemctl", "reset-failed", "iped.service")
        sh("systemctl", "start", "iped.service")
    return f"exit {rc} after {took:.1f} s; StatusText {status_text!r}; {kept}"


def plain_policy(name: str, version: str) -> str:
    """An allow-all policy as a ``*.pol`` file: the daemon signs it with the lab RSA key."""
    return f"policy_name={name} policy_version={version}\nDEFAULT action=ALLOW\n"


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        expect(time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def kill_step_done(st: dict[str, tuple[str, bool]], new: int, step: int) -> bool:
    """Whether the kernel state ``st`` shows step 1 (new_policy), 2 (update), 3 (active) or 4
    (delete) of the round that declares ``kill_<new>``."""
    if step == 1:
        return f"kill_{new}" in st
    if step == 2:
        return st.get("kill_u", ("", False))[0] == f"1.0.{new}"
    if step == 3:
        return st.get(f"kill_{new}", ("", False))[1]
    return f"kill_{new - 1}" not in st


def kill_after_write(step: int, new: int, pid: int, declare: Callable[[], None]) -> None:
    """``declare()`` the round, then SIGKILL ``pid`` as soon as its write of ``step`` returns.

    A write to a securityfs file raises IN_MODIFY like any other (vfs_write), so the moment the
    daemon's write of new_policy (1), kill_u/update (2), kill_<new>/active (3) or
    kill_<new-1>/delete (4; its watch also ends with IN_IGNORED when the policy goes) returns is
    seen at once, not when a poller next looks.  The daemon may still get a little further.
    """
    from inotify_simple import INotify, flags  # the python3-inotify-simple package iped depends on

    with INotify() as ino:
        watches = {ino.add_watch(str(IPE / "new_policy"), flags.MODIFY): 1,
                   ino.add_watch(str(IPE / "policies/kill_u/update"), flags.MODIFY): 2,
                   ino.add_watch(str(IPE / f"policies/kill_{new - 1}/delete"), flags.MODIFY): 4}
        declare()
        deadline = time.monotonic() + 60
        while True:
            for event in ino.read(timeout=1000):
                seen = watches.get(event.wd)
                if seen == 1 and 3 not in watches.values():
                    watches[ino.add_watch(str(IPE / f"policies/kill_{new}/active"), flags.MODIFY)] = 3
                if seen == step:
                    os.kill(pid, 9)
                    return
            expect(time.monotonic() < deadline, f"step {step} (kill_{new}) never written: {kernel_state()}")


def sigkill_mid_plan() -> str:
    """SIGKILL the daemon once the kernel shows step k of a 4-step plan, k = 1..4.

    Each round declares: a new policy (new_policy), an update of kill_u (update), the new policy
    active (active) and the previous active one gone (delete).  The kill lands right after the
    daemon's k-th write returns (:func:`kill_after_write`).  Right after the
    kill the kernel must hold a state on the way from old to new with enforcement on; systemd
    restarts the daemon (Restart=on-failure) and it must converge to the new declared state.
    """
    def declare_round(k: int) -> None:
        (POLICIES / f"kill_{k}.pol").write_text(plain_policy(f"kill_{k}", f"{10 + k}.0.0"))
        (POLICIES / "kill_u.pol").write_text(plain_policy("kill_u", f"1.0.{k}"))
        (POLICIES / f"kill_{k - 1}.pol").unlink(missing_ok=True)
        write_config(f"kill_{k}")

    def converged(k: int) -> bool:
        st = kernel_state()
        return (st.get(f"kill_{k}") == (f"{10 + k}.0.0", True) and st.get("kill_u") == (f"1.0.{k}", False)
                and f"kill_{k - 1}" not in st)

    def restarted(old_pid: str) -> bool:
        return unit_property("ActiveState") == "active" and unit_property("MainPID") not in ("0", old_pid)

    # round 0: from lab_a to kill_1 + kill_u, no kill
    for f in POLICIES.glob("lab_a.*"):
        f.unlink()
    declare_round(1)
    sh("systemctl", "reload", "iped.service")
    wait_until("kill_1 active", lambda: converged(1))
    seen: list[str] = []
    for k in range(1, 5):
        new = k + 1
        pid = int(unit_property("MainPID"))
        expect(pid > 0, f"round {k}: the daemon is not running")
        kill_after_write(k, new, pid, functools.partial(declare_round, new))
        at_kill = kernel_state()
        active = [n for n, (_, a) in at_kill.items() if a]
        expect(active in ([f"kill_{k}"], [f"kill_{new}"]), f"round {k}: after SIGKILL active {active}: {at_kill}")
        expect(enforcing(), f"round {k}: enforce 0 after SIGKILL")
        done = sum(1 for j in range(1, 5) if kill_step_done(at_kill, new, j))
        seen.append(f"k={k}: {done}/4 steps done at kill")
        wait_until(f"round {k}: restart (Restart=on-failure)", functools.partial(restarted, str(pid)))
        wait_until(f"round {k}: convergence to kill_{new}", functools.partial(converged, new))
    restarts = unit_property("NRestarts")
    return f"{'; '.join(seen)}; NRestarts={restarts}"


def upgrade_keeps_enforcement() -> str:
    before = active_policy()
    pid_before = unit_property("MainPID")
    debs = sorted((LAB / "debs").glob(f"iped_*{UPGRADE_SUFFIX}_*.deb"))
    rc, out = sh("dpkg", "-i", str(debs[0]), timeout=300)
    expect(rc == 0, f"dpkg -i {debs[0].name}: exit {rc}\n{out}")
    version = sh("dpkg-query", "-W", "-f=${Version}", "iped")[1]
    expect(version.endswith(UPGRADE_SUFFIX), f"installed version {version}")
    expect(unit_property("ActiveState") == "active", f"after upgrade ActiveState {unit_property('ActiveState')}")
    restarted = unit_property("MainPID") != pid_before
    return f"{version}, restarted {restarted}; {enforcement_kept(before, 'upgrade')}"


def message_id_on_every_entry() -> str:
    entries = [e for e in journal("_SYSTEMD_UNIT=iped.service")
               if "iped daemon" in str(e.get("_CMDLINE", ""))]
    expect(bool(entries), "no journal entries from the daemon")
    missing = [str(e.get("MESSAGE")) for e in entries if not e.get("MESSAGE_ID")]
    expect(not missing, f"{len(missing)} of {len(entries)} daemon entries have no MESSAGE_ID, e.g.: "
                        + " | ".join(sorted(set(missing))[:8]))
    return f"{len(entries)} entries"


def audit_follower_sees_denial() -> str:
    """A policy denying module loads; ``modprobe`` is refused; the service's follower counts the
    denial (``iped status --json``) and ``iped explain`` names the rule from the kernel's record."""
    rule = "op=KMODULE action=DENY"
    (POLICIES / "audit_deny.pol").write_text(plain_policy("audit_deny", "60000.0.0") + rule + "\n")
    write_config("audit_deny")
    sh("systemctl", "reload", "iped.service")
    wait_until("audit_deny active", lambda: (active_policy() or ("", ""))[0] == "audit_deny")
    rc, out = sh("modprobe", "dummy")
    expect(rc != 0, f"modprobe dummy succeeded under {rule}: {out}")

    def denials() -> int:
        _, text = sh("iped", "status", "--json")
        follower = (json.loads(text).get("audit") or {}).get("follower") or {}
        return int((follower.get("decisions") or {}).get("deny", 0))

    wait_until("the follower to count the denial", lambda: denials() >= 1, timeout=30)
    _, text = sh("iped", "status", "--json")
    source = json.loads(text)["audit"]["follower"].get("source")
    records = [ln.split("audit: ", 1)[1] for ln in sh("dmesg")[1].splitlines()
               if "type=1420" in ln and "ipe_op=KMODULE" in ln and "audit: " in ln]
    expect(bool(records), "no IPE access record (type=1420) for the module load in dmesg")
    rc, explained = sh("iped", "explain", "--policy", str(POLICIES / "audit_deny.pol"), records[-1])
    expect(rc == 0 and rule in explained and "audit_deny.pol:3" in explained,
           f"iped explain (exit {rc}) does not name the policy line:\n{records[-1]}\n{explained}")
    return f"follower source {source}; explain: {explained.strip().splitlines()[0]}"


def purge_keeps_enforcement() -> str:
    before = active_policy()
    rc, out = sh("apt-get", "purge", "-y", "-q", "iped", timeout=300)
    expect(rc == 0, f"apt-get purge iped: exit {rc}\n{out}")
    expect(not Path("/usr/bin/iped").exists(), "/usr/bin/iped still there after purge")
    return enforcement_kept(before, "purge")


CHECKS: tuple[Callable[[], str], ...] = (
    enable_start_ready, security_exposure, status_cli, reload_nothing_to_change, reload_applied,
    reload_rejected, rollback_through_service, stop_keeps_enforcement, restart_keeps_enforcement,
    kernel_refused_start, sigkill_mid_plan, upgrade_keeps_enforcement, audit_follower_sees_denial,
    message_id_on_every_entry, purge_keeps_enforcement,
)


def main() -> int:
    results: list[dict[str, object]] = []
    facts = {"uname": os.uname().release, "python": sys.version.split()[0],
             "systemd": sh("systemctl", "--version")[1].split("\n")[0]}
    for check in CHECKS:
        start = time.monotonic()
        try:
            detail, ok = check(), True
        except CheckFailedError as e:
            detail, ok = str(e), False
        except Exception:  # a broken check is a failed check, with its traceback
            detail, ok = traceback.format_exc(), False
        seconds = round(time.monotonic() - start, 2)
        results.append({"name": check.__name__, "ok": ok, "seconds": seconds, "detail": detail})
        print(f"iped-lab-check {check.__name__}: {'ok' if ok else 'FAILED'} ({seconds} s)", flush=True)
        RESULTS.write_text(json.dumps({"facts": facts, "checks": results}, indent=1))
        os.sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
