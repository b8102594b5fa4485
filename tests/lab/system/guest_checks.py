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
import itertools
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
#: what PID 1's loader (systemd 257, ipe-setup.c) reads at boot; iped keeps it ([boot] keep_copy)
BOOT_COPY = Path("/etc/ipe")
#: what iped-boot.service records before iped.service starts (docs/boot.md)
BOOT_RECORD = Path("/run/iped-boot/boot.json")
#: what the lab's own early unit (iped-lab-early.service, shell, before iped-boot and iped) saw
EARLY_RECORD = Path("/run/iped-lab-early.txt")
#: the blob the last boot's checks left in the boot copy, for the next boot to find active
BOOT_EXPECTED = LAB / "boot-expected.json"
#: which group of checks the next boot runs (:data:`PHASES`)
PHASE_FILE = LAB / "phase"
FAIL_CLOSED_DROP_IN = Path("/etc/systemd/system/iped-boot.service.d/fail-closed.conf")
MSG_LOADED = "4e85e2caa5ea4630b4b769ac37a8cd93"
MSG_UPDATED = "099874aaef534d60bb269271f11decf6"
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
enforce = {enforce}
success_audit = false
trust_anchors = ["/etc/iped/lab/rsa-signer.crt", "/etc/iped/lab/untrusted-signer.crt"]
signing_key = "/etc/iped/lab/rsa-signer.key"
signing_cert = "/etc/iped/lab/rsa-signer.crt"

[daemon]
backend = "kernel"
debounce_ms = {debounce_ms}

[audit]
source = "{audit_source}"

[boot]
keep_copy = {keep_copy}
fail_closed = {fail_closed}
initramfs = {initramfs}
"""


class CheckFailedError(Exception):
    """A check's expectation did not hold; the message says what was seen instead."""


def sh(*argv: str, timeout: float = 600.0) -> tuple[int, str]:
    """Run a command; (exit status, stdout+stderr). A timeout is exit 124 (like timeout(1)).
    The default bound is generous (``systemctl restart`` waits for READY=1, a start under TCG beside
    the suite took 70-90 s); it only costs its length when the check fails anyway."""
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


def write_config(active: str, *, enforce: bool = True, debounce_ms: int = 200, audit_source: str = "auto",
                 fail_closed: bool = False, initramfs: bool = False) -> None:
    CONFIG.write_text(CONFIG_TEMPLATE.format(active=active, enforce=str(enforce).lower(), debounce_ms=debounce_ms,
                                             audit_source=audit_source, fail_closed=str(fail_closed).lower(),
                                             keep_copy=str(not initramfs).lower(), initramfs=str(initramfs).lower()))


def declare(stored: str, as_name: str) -> None:
    shutil.copyfile(STORE / stored, POLICIES / as_name)


def journal(*match: str) -> list[dict[str, str]]:
    _, out = sh("journalctl", "-o", "json", "--no-pager", *match)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def boot_copy_files() -> dict[str, str]:
    """The ``*.p7b`` PID 1 would load at the next boot: file name -> sha256."""
    import hashlib

    if not BOOT_COPY.is_dir():
        return {}
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(BOOT_COPY.glob("*.p7b"))}


def kernel_blob_sha256(name: str) -> str:
    import hashlib

    return hashlib.sha256((IPE / "policies" / name / "pkcs7").read_bytes()).hexdigest()


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


def footprint_after_start() -> str:
    """What the started service holds: a report for the lab's summary (the limit is judged by
    benchmarks/bench_daemon_start.py, not here), measured as users run it: the installed
    package on Debian's own python3-cryptography, the signed lab_a policy active, the kernel
    backend, the audit follower on."""
    pid = int(unit_property("MainPID") or 0)
    expect(pid > 0, f"iped.service has no main process (MainPID {pid})")
    status = Path(f"/proc/{pid}/status").read_text()
    rss_mb = int(status.split("VmRSS:")[1].split()[0]) / 1024
    current = unit_property("MemoryCurrent")
    cgroup = f"{int(current) / 2**20:.1f} MiB" if current.isdigit() else current
    return f"VmRSS {rss_mb:.1f} MB, cgroup MemoryCurrent {cgroup}"


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


def man_pages_and_completion() -> str:
    """What apt installed for people: ``man iped``, ``man iped.toml``, bash and zsh completion."""
    for page, want in (("iped", "EXIT STATUS"), ("iped.toml", "debounce_ms")):
        # --warnings: groff's complaints go to stderr, which must stay empty
        rc, out = sh("sh", "-c", f"MANWIDTH=80 man --warnings {page} 2>/tmp/man.err; echo rc=$?; cat /tmp/man.err")
        expect(rc == 0 and want in out and out.rstrip().endswith("rc=0"), f"man {page}:\n{out[-2000:]}")
    # bash: loaded on demand by bash-completion from /usr/share/bash-completion/completions/iped
    bash = ("source /usr/share/bash-completion/bash_completion; "
            "if declare -F _comp_load >/dev/null; then _comp_load iped; else __load_completion iped; fi; "
            'complete -p iped; COMP_WORDS=(iped sta); COMP_CWORD=1; COMP_LINE="iped sta"; COMP_POINT=8; '
            '_shtab_iped iped sta iped; echo "candidates: ${COMPREPLY[*]}"')
    rc, out = sh("bash", "-c", bash)
    expect(rc == 0 and "-F _shtab_iped iped" in out and out.strip().endswith("candidates: status"),
           f"bash completion of 'iped sta': exit {rc}: {out!r}")
    # zsh: compinit finds _iped in /usr/share/zsh/vendor-completions (on the default fpath)
    rc, zout = sh("zsh", "-fc", "autoload -Uz compinit && compinit -u -d /tmp/zcompdump && print -r -- $_comps[iped]")
    expect(rc == 0 and zout.strip() == "_iped", f"zsh: _comps[iped] is {zout!r} (exit {rc})")
    return f"man iped, man iped.toml; bash 'iped sta' -> status; zsh _comps[iped] -> {zout.strip()}"


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
    copy_before = boot_copy_files()
    expect(list(copy_before) == ["lab_a.p7b"], f"before the refused start the boot copy is {copy_before}")
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
        # the blob the kernel refused (ENOKEY) never reaches what PID 1 loads at the next boot
        expect(boot_copy_files() == copy_before, f"boot copy {copy_before} -> {boot_copy_files()} after ENOKEY")
    finally:
        sh("systemctl", "stop", "iped.service")
        (POLICIES / "lab_b.p7s").unlink()
        write_config("lab_a")
        sh("systemctl", "reset-failed", "iped.service")
        sh("systemctl", "start", "iped.service")
    return f"exit {rc} after {took:.1f} s; StatusText {status_text!r}; {kept}; boot copy unchanged"


def plain_policy(name: str, version: str) -> str:
    """An allow-all policy as a ``*.pol`` file: the daemon signs it with the lab RSA key."""
    return f"policy_name={name} policy_version={version}\nDEFAULT action=ALLOW\n"


#: A wait's bound in the guest. Generous: the guest runs niced under TCG beside the rest of the suite
#: (tests/lab/system/background.py), and a daemon restart there took over 60 s in CI on 7.x; a wait
#: only costs its bound when the check fails anyway.
WAIT_S = 240.0


def wait_until(what: str, cond: Callable[[], bool], timeout: float = WAIT_S, *, every: float = 0.2,
               unit: str = "iped.service") -> None:
    """Poll ``cond`` until it holds; past ``timeout`` fail with ``unit``'s status and log tail."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            _, status = sh("systemctl", "status", "--no-pager", "-n", "30", unit)
            raise CheckFailedError(f"timed out after {timeout:g} s waiting for {what}\n{status[-3000:]}")
        time.sleep(every)


#: The tests' pause hook (tests/helpers/iped_with_hooks.py): SIGSTOP after step N of a plan. The
#: installed iped has no such switch: the drop-in runs the installed package through that entry
#: point, copied into the image as HOOKED_IPED (named iped, so "iped daemon" stays in its cmdline).
PAUSE_ENV = "IPED_TEST_PAUSE_AFTER_STEP"
PAUSE_DROP_IN = Path("/run/systemd/system/iped.service.d/lab-pause.conf")
HOOKED_IPED = LAB / "hooked" / "iped"
#: The plan each round of sigkill_mid_plan declares, in the planner's order (enforce off comes last).
KILL_PLAN = ("new_policy", "update", "active", "delete", "enforce")


def process_state(pid: int) -> str:
    """The state letter of ``pid`` (/proc/PID/stat: R, S, T for stopped, ...), '' once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


KillState = tuple[dict[str, tuple[str, bool]], bool]


def kill_round_state(old: int, done: int) -> KillState:
    """The kernel state (kill_* policies and enforce) after ``done`` steps of :data:`KILL_PLAN` on
    the way from round ``old`` (kill_<old> active, kill_u 1.0.<old>, enforce 1) to ``old + 1``."""
    new = old + 1
    policies = {f"kill_{old}": (f"{10 + old}.0.0", done < 3), "kill_u": (f"1.0.{old}", False)}
    if done >= 1:
        policies[f"kill_{new}"] = (f"{10 + new}.0.0", done >= 3)
    if done >= 2:
        policies["kill_u"] = (f"1.0.{new}", False)
    if done >= 4:
        del policies[f"kill_{old}"]
    return policies, done < 5


def kill_state_now() -> KillState:
    """(the kill_* policies: name -> (version, active), enforce) as the kernel holds them."""
    return {n: v for n, v in kernel_state().items() if n.startswith("kill_")}, enforcing()


def sigkill_mid_plan() -> str:
    """SIGKILL the daemon exactly after step k of a 5-step plan, k = 1..5, one round each.

    Each round declares, from kill_<k> active + kill_u 1.0.<k> + enforce on: kill_<k+1> (new_policy),
    kill_u 1.0.<k+1> (update), kill_<k+1> active (active), kill_<k> gone (delete), enforce off
    (enforce; the planner puts weakening last). The daemon runs through the tests' entry point
    (HOOKED_IPED, the installed package with the pause hook) with IPED_TEST_PAUSE_AFTER_STEP=k (a
    runtime drop-in, removed again before the kill so the restart runs the unit's own ExecStart):
    it stops itself with SIGSTOP right after step k, the kernel must then hold exactly the state after
    k steps (the old or the new active policy, never neither), and after SIGKILL systemd restarts
    iped (Restart=on-failure), which must converge to the new declared state. Enforce is then
    declared on again for the next round.
    """
    def declare_round(k: int, enforce: bool) -> None:
        (POLICIES / f"kill_{k}.pol").write_text(plain_policy(f"kill_{k}", f"{10 + k}.0.0"))
        (POLICIES / "kill_u.pol").write_text(plain_policy("kill_u", f"1.0.{k}"))
        (POLICIES / f"kill_{k - 1}.pol").unlink(missing_ok=True)
        write_config(f"kill_{k}", enforce=enforce, debounce_ms=1000)

    def converged(k: int, enforce: bool) -> bool:
        return kill_state_now() == ({f"kill_{k}": (f"{10 + k}.0.0", True), "kill_u": (f"1.0.{k}", False)}, enforce)

    def stopped(pid: int) -> bool:
        return process_state(pid) == "T"

    def restarted(old_pid: int) -> bool:
        return unit_property("ActiveState") == "active" and unit_property("MainPID") not in ("0", str(old_pid))

    def pause_knob(step: int | None) -> None:
        if step is None:
            PAUSE_DROP_IN.unlink(missing_ok=True)
        else:
            PAUSE_DROP_IN.parent.mkdir(parents=True, exist_ok=True)
            PAUSE_DROP_IN.write_text(f"[Service]\nEnvironment={PAUSE_ENV}={step}\n"
                                     f"ExecStart=\nExecStart=/usr/bin/python3 {HOOKED_IPED} daemon\n")
        sh("systemctl", "daemon-reload")

    # setup: from lab_a to kill_1 + kill_u 1.0.1, enforce on, no kill
    for f in POLICIES.glob("lab_a.*"):
        f.unlink()
    declare_round(1, enforce=True)
    sh("systemctl", "reload", "iped.service")
    wait_until("kill_1 active", lambda: converged(1, True))
    seen: list[str] = []
    done = False
    try:
        for k in range(1, len(KILL_PLAN) + 1):
            # a daemon started with the knob; the unit itself loses it again at once
            pause_knob(k)
            rc, out = sh("systemctl", "restart", "iped.service")
            expect(rc == 0, f"round {k}: systemctl restart with {PAUSE_ENV}={k}: exit {rc}\n{out}")
            pause_knob(None)
            pid = int(unit_property("MainPID"))
            declare_round(k + 1, enforce=False)  # picked up by inotify, one reconcile after the debounce
            wait_until(f"round {k}: the daemon to stop itself after step {k} ({KILL_PLAN[k - 1]})",
                       functools.partial(stopped, pid))
            at_pause = kill_state_now()
            os.kill(pid, 9)
            expected = kill_round_state(k, k)
            expect(at_pause == expected, f"round {k}: after step {k} ({KILL_PLAN[k - 1]}) the kernel holds "
                                         f"{at_pause}, expected {expected}")
            seen.append(f"k={k} ({KILL_PLAN[k - 1]}): active "
                        + ",".join(n for n, (_, a) in at_pause[0].items() if a) + f", enforce {int(at_pause[1])}")
            wait_until(f"round {k}: restart after SIGKILL (Restart=on-failure)", functools.partial(restarted, pid))
            wait_until(f"round {k}: convergence to kill_{k + 1}, enforce off",
                       functools.partial(converged, k + 1, False))
            write_config(f"kill_{k + 1}", enforce=True, debounce_ms=1000)
            wait_until(f"round {k}: enforce back on", functools.partial(converged, k + 1, True))
        done = True
    finally:
        pause_knob(None)
        if not done:  # a failed round may leave enforce declared off: the checks after it need it on
            now = active_policy()
            if now is not None:
                write_config(now[0], enforce=True)
                sh("systemctl", "restart", "iped.service")
    return f"{'; '.join(seen)}; NRestarts={unit_property('NRestarts')}"


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
    # the kernel's audit records about the daemon's writes carry its pid, not its words
    entries = [e for e in journal("_SYSTEMD_UNIT=iped.service")
               if "iped daemon" in str(e.get("_CMDLINE", "")) and e.get("_TRANSPORT") not in ("audit", "kernel")]
    expect(bool(entries), "no journal entries from the daemon")
    missing = [str(e.get("MESSAGE")) for e in entries if not e.get("MESSAGE_ID")]
    expect(not missing, f"{len(missing)} of {len(entries)} daemon entries have no MESSAGE_ID, e.g.: "
                        + " | ".join(sorted(set(missing))[:8]))
    return f"{len(entries)} entries"


AUDIT_DENY_RULE = "op=KMODULE action=DENY"


def follower() -> dict[str, object]:
    _, text = sh("iped", "status", "--json")
    return dict(json.loads(text).get("audit", {}).get("follower") or {})


def denials() -> int:
    decisions = follower().get("decisions")
    return int(decisions.get("deny", 0)) if isinstance(decisions, dict) else 0


def deny_module_load() -> None:
    """``modprobe`` under ``audit_deny`` (declared active here if it is not yet): must be refused."""
    if (active_policy() or ("", ""))[0] != "audit_deny":
        (POLICIES / "audit_deny.pol").write_text(plain_policy("audit_deny", "60000.0.0") + AUDIT_DENY_RULE + "\n")
        write_config("audit_deny")
        sh("systemctl", "reload", "iped.service")
        wait_until("audit_deny active", lambda: (active_policy() or ("", ""))[0] == "audit_deny")
    rc, out = sh("modprobe", "dummy")
    expect(rc != 0, f"modprobe dummy succeeded under {AUDIT_DENY_RULE}: {out}")


def explain_names_rule(record: str) -> str:
    rc, explained = sh("iped", "explain", "--policy", str(POLICIES / "audit_deny.pol"), record)
    expect(rc == 0 and AUDIT_DENY_RULE in explained and "audit_deny.pol:3" in explained,
           f"iped explain (exit {rc}) does not name the policy line:\n{record}\n{explained}")
    return explained.strip().splitlines()[0]


def kmodule_records() -> list[str]:
    """The kernel's printed IPE access records (type=1420) of a module load, oldest first."""
    return [ln.split("audit: ", 1)[1] for ln in sh("dmesg")[1].splitlines()
            if "type=1420" in ln and "ipe_op=KMODULE" in ln and "audit: " in ln]


def audit_follower_sees_denial() -> str:
    """A policy denying module loads; ``modprobe`` is refused; the service's follower counts the
    denial (``iped status --json``) and ``iped explain`` names the rule from the kernel's record."""
    deny_module_load()
    wait_until("the follower to count the denial", lambda: denials() >= 1)
    source = follower().get("source")
    records = kmodule_records()
    if not records:
        # the kernel prints audit records under printk_ratelimit (10 per 5 s): systemd's BPF
        # program records around the reload can use it up ("kauditd_printk_skb: 65 callbacks
        # suppressed", seen on both kernels); past the window, a second denial is printed
        time.sleep(6)
        sh("modprobe", "dummy")
        records = kmodule_records()
    expect(bool(records), "no IPE access record (type=1420) for the module load in dmesg")
    return f"follower source {source}; explain: {explain_names_rule(records[-1])}"


def audit_follower_journal_with_auditd() -> str:
    """auditd running (it holds the audit unicast: records no longer reach the kernel log) and
    ``[audit] source = "journal"``: the service's follower reads the denial from journald's audit
    transport, auditd logs it too, and ``iped explain`` names the rule from auditd's record."""
    rc, out = sh("systemctl", "start", "auditd.service")
    expect(rc == 0, f"systemctl start auditd: exit {rc}\n{out}")
    try:
        # journald reads the audit multicast through systemd-journald-audit.socket (enabled in the image)
        expect(sh("systemctl", "is-active", "systemd-journald-audit.socket")[1].strip() == "active",
               "systemd-journald-audit.socket is not active: journald collects no audit records")
        write_config("audit_deny", audit_source="journal")
        rc, out = sh("systemctl", "restart", "iped.service")
        expect(rc == 0, f"systemctl restart iped with source = journal: exit {rc}\n{out}")
        source = str(follower().get("source"))
        expect("journal" in source, f"follower source {source!r}, expected journal")
        before = denials()
        deny_module_load()
        wait_until("the journal follower to count the denial", lambda: denials() > before)
        counted = denials() - before
        log = Path("/var/log/audit/audit.log")
        lines = [ln for ln in (log.read_text(errors="replace") if log.exists() else "").splitlines()
                 if "ipe_op=KMODULE" in ln and "): " in ln]
        expect(bool(lines), f"auditd logged no IPE access record for the module load in {log}")
        # the body only: auditd's ENRICHED format appends resolved fields after a GS (0x1d)
        explained = explain_names_rule(lines[-1].split("): ", 1)[1].split("\x1d", 1)[0])
    finally:
        write_config("audit_deny")
        sh("systemctl", "kill", "--signal=SIGTERM", "auditd.service")  # RefuseManualStop=yes
        sh("systemctl", "restart", "iped.service")
    return f"follower source {source}; {counted} denial(s) counted; explain: {explained}"


#: The collection (iped.ipe) as the host copied it into the image, and the playbook run with it.
ANSIBLE = LAB / "ansible"
PLAYBOOK = """- hosts: localhost
  connection: local
  become: false
  gather_facts: false  # the package task finds the package manager itself; saves a setup run
  roles:
    - role: iped.ipe.iped
      vars:
        iped_active: fleet
        iped_enforce: true
        iped_trust_anchors: [/etc/iped/lab/rsa-signer.crt]
        iped_signing_key: /etc/iped/lab/rsa-signer.key
        iped_signing_cert: /etc/iped/lab/rsa-signer.crt
        iped_daemon_settings: {backend: kernel}
        iped_audit_settings: {source: auto}
        iped_purge_undeclared: true
        iped_boot_keep_copy: true
        iped_policies:
          - {src: %s/fleet-60001.0.0.p7s, dest: fleet.p7s}
"""


def ansible_playbook() -> tuple[int, str, dict[str, int]]:
    """``ansible-playbook -c local`` of :data:`PLAYBOOK`; (exit, output, the localhost recap counts)."""
    (LAB / "site.yml").write_text(PLAYBOOK % STORE)
    # pipelining and a named interpreter: one python per task, no temp files, no interpreter
    # discovery (each process start costs seconds under TCG)
    env_argv = ("env", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "HOME=/root",  # ansible-core needs a UTF-8 locale
                f"ANSIBLE_COLLECTIONS_PATH={ANSIBLE}", "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0",
                "ANSIBLE_LOCALHOST_WARNING=0", "ANSIBLE_INVENTORY_UNPARSED_WARNING=0",
                "ANSIBLE_PIPELINING=1", "ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3")
    rc, out = sh(*env_argv, "ansible-playbook", "-c", "local", "-i", "localhost,", str(LAB / "site.yml"), timeout=600)
    recap = [ln for ln in out.splitlines() if ln.startswith("localhost") and "changed=" in ln]
    counts = {k: int(v) for k, v in (f.split("=") for f in recap[-1].split(":", 1)[1].split())} if recap else {}
    return rc, out, counts


def ansible_role_converges() -> str:
    """The collection's role (iped.ipe.iped) with ``ansible-playbook -c local`` in the guest: the
    first run places the signed ``fleet`` policy, templates iped.toml and converges the real kernel
    (changed); the second run changes nothing (changed=0). The package is installed already, so
    the role's install task is a no-op."""
    rc, out, first = ansible_playbook()
    expect(rc == 0 and first.get("failed", 1) == 0, f"first ansible-playbook run: exit {rc}\n{out[-4000:]}")
    expect(first.get("changed", 0) > 0, f"first run changed nothing: {first}\n{out[-3000:]}")
    now = active_policy()
    expect(now == ("fleet", "60001.0.0"), f"after the role the kernel's active policy is {now}")
    expect(enforcing(), "after the role enforce is 0")
    rc, out, second = ansible_playbook()
    expect(rc == 0 and second.get("changed") == 0, f"second run: exit {rc}, recap {second}\n{out[-4000:]}")
    return f"first run {first}; second run {second}; active {now}"


def declare_fleet() -> str:
    """The quick run's stand-in for the checks between: ``fleet`` 60001.0.0 declared active, as
    the Ansible role leaves it."""
    for f in POLICIES.glob("*"):
        f.unlink()
    declare("fleet-60001.0.0.p7s", "fleet.p7s")
    write_config("fleet")
    rc, _ = sh("systemctl", "reload", "iped.service")
    wait_until("fleet active", lambda: active_policy() == ("fleet", "60001.0.0"))
    return f"reload exit {rc}; active {active_policy()}"


def boot_copy_follows() -> str:
    """After every change of this boot (versions, rollback, kill rounds, the role), the boot copy
    is exactly the blob the kernel holds active: the one PID 1 loads at the next boot."""
    now = active_policy()
    expect(now is not None, "no active policy")
    assert now is not None
    files = boot_copy_files()
    want = kernel_blob_sha256(now[0])
    expect(files == {f"{now[0]}.p7b": want}, f"boot copy {files}, the kernel's active {now} is sha256 {want}")
    _, text = sh("iped", "status", "--json")
    copy = json.loads(text)["boot"]["copy"]
    expect(copy["current"] is True and copy["enabled"] is True, f"iped status --json boot.copy: {copy}")
    BOOT_EXPECTED.write_text(json.dumps({"name": now[0], "version": now[1], "sha256": want}))
    return f"{BOOT_COPY}/{now[0]}.p7b = active {now}, sha256 {want[:16]}"


def journal_this_boot(*match: str) -> list[dict[str, str]]:
    return journal("-b", *match)


def boot_policy_before_iped() -> str:
    """After the reboot: PID 1 loaded the boot copy before any unit, the lab's early unit saw it
    active before iped-boot and iped ran, iped-boot recorded it as PID 1's, the digest is the one
    iped deployed last boot, and the journal shows PID 1's activation before iped.service started."""
    want = json.loads(BOOT_EXPECTED.read_text())
    early = EARLY_RECORD.read_text() if EARLY_RECORD.exists() else "(missing)"
    line = f"{want['name']} {want['version']} active=1 sha256={want['sha256']}"
    expect(line in early.splitlines(), f"the early unit saw:\n{early}\nexpected the line {line!r}")
    record = json.loads(BOOT_RECORD.read_text())
    expect(record["in_force"] is True and record["loaded_by"] == "pid1"
           and record["kernel"]["active"]["blob_digest"] == want["sha256"], f"iped-boot's record: {record}")
    # only PID 1 writes these two messages; it logs to the kernel log until journald runs (such
    # entries carry no _PID), so they are matched by text, ordered by their monotonic time
    entries = journal_this_boot()
    pid1 = [e for e in entries
            if f"Successfully loaded and activated the IPE policy {want['name']}." in str(e.get("MESSAGE"))]
    starting = [e for e in entries if str(e.get("MESSAGE", "")).startswith("Starting iped.service")]
    expect(bool(pid1) and bool(starting),
           f"journal: {len(pid1)} PID 1 IPE activations, {len(starting)} 'Starting iped.service' entries")
    t_pid1, t_iped = int(pid1[0]["__MONOTONIC_TIMESTAMP"]), int(starting[0]["__MONOTONIC_TIMESTAMP"])
    expect(t_pid1 < t_iped, f"PID 1's activation at {t_pid1} us is not before iped.service's start at {t_iped} us")
    expect(kernel_blob_sha256(want["name"]) == want["sha256"], "the active blob changed after boot")
    uptime = early.splitlines()[-1]
    return (f"PID 1 activated {want['name']} {want['version']} at {t_pid1 / 1e6:.2f} s, iped.service started at "
            f"{t_iped / 1e6:.2f} s; the early unit saw it active ({uptime} s); iped-boot: {record['reason']}")


def nothing_to_do_after_boot() -> str:
    """iped started on the policy PID 1 loaded: no load, update or activation at this boot, the
    plan is unchanged, and status says the boot policy was in force."""
    writes = [e.get("MESSAGE") for m in (MSG_LOADED, MSG_UPDATED, MSG_ACTIVATED)
              for e in journal_this_boot(f"MESSAGE_ID={m}")]
    expect(not writes, f"iped wrote to the kernel at this boot: {writes}")
    rc, out = sh("iped", "plan", "--json")
    plan = json.loads(out) if out.strip().startswith("{") else {}
    expect(rc == 9 and plan.get("outcome") == "unchanged" and plan.get("boot", {}).get("notes") == [],
           f"iped plan: exit {rc}\n{out[-2000:]}")
    _, text = sh("iped", "status", "--json")
    status = json.loads(text)
    expect(status["counters"].get("applied", 0) == 0, f"counters {status['counters']}")
    summary = status["boot"]["summary"]
    expect(summary.startswith("in force:") and "loaded by PID 1" in summary, f"status boot summary: {summary}")
    return f"plan unchanged; {summary}"


def setup_remove_boot_copy() -> str:
    """For the next boot: the boot copy removed (as an attacker would), iped stopped first so it
    cannot write it back, iped still enabled."""
    rc, out = sh("systemctl", "stop", "iped.service")
    expect(rc == 0, f"systemctl stop: exit {rc}\n{out}")
    for p in BOOT_COPY.glob("*.p7b"):
        p.unlink()
    os.sync()
    return f"{BOOT_COPY} now {boot_copy_files()}"


def boot_copy_removed_fail_open() -> str:
    """fail_closed off, the boot copy removed: PID 1 loaded nothing, the boot went on, iped-boot
    recorded the failure (journal, status), iped then activated the declared policy and wrote the
    copy back."""
    want = json.loads(BOOT_EXPECTED.read_text())
    early = EARLY_RECORD.read_text() if EARLY_RECORD.exists() else "(missing)"
    expect("active=1" not in early, f"a policy was active before iped although the copy was removed:\n{early}")
    record = json.loads(BOOT_RECORD.read_text())
    expect(record["in_force"] is False and record["stops_boot"] is False, f"iped-boot's record: {record}")
    logged = " ".join(str(e.get("MESSAGE")) for e in journal_this_boot("_SYSTEMD_UNIT=iped-boot.service"))
    expect(f"WARNING: declared policy '{want['name']}' was NOT active" in logged, f"iped-boot's journal: {logged}")
    _, text = sh("iped", "status", "--json")
    status = json.loads(text)
    summary = status["boot"]["summary"]
    expect(summary.startswith("FAILED:"), f"status boot summary: {summary}")
    expect(active_policy() == (want["name"], want["version"]), f"iped did not activate it: {active_policy()}")
    wait_until("the boot copy written back", lambda: boot_copy_files() == {f"{want['name']}.p7b": want["sha256"]})
    return f"status: {summary}"


def setup_fail_closed() -> str:
    """For the next boot (it must halt): iped installed again after the purge, fail_closed on with
    the packaged drop-in linked, the declared policy as before, the boot copy removed."""
    want = json.loads(BOOT_EXPECTED.read_text())
    reinstall()
    for f in POLICIES.glob("*"):
        f.unlink()
    declare(f"fleet-{want['version']}.p7s", "fleet.p7s")
    write_config(want["name"], fail_closed=True)
    FAIL_CLOSED_DROP_IN.parent.mkdir(parents=True, exist_ok=True)
    FAIL_CLOSED_DROP_IN.unlink(missing_ok=True)
    FAIL_CLOSED_DROP_IN.symlink_to("/usr/share/iped/fail-closed.conf")
    rc, out = sh("systemctl", "enable", "iped.service")
    expect(rc == 0, f"systemctl enable: exit {rc}\n{out}")
    for p in BOOT_COPY.glob("*.p7b"):
        p.unlink()
    os.sync()
    return f"fail_closed on, drop-in {FAIL_CLOSED_DROP_IN}, boot copy {boot_copy_files()}"


def reinstall() -> None:
    """iped installed again after the purge (the same package), unless it is installed already."""
    if sh("dpkg-query", "-W", "-f=${Status}", "iped")[1].strip() == "install ok installed":
        return
    debs = sorted(p for p in (LAB / "debs").glob("iped_*.deb") if UPGRADE_SUFFIX not in p.name)
    rc, out = sh("dpkg", "-i", str(debs[0]), timeout=300)
    expect(rc == 0, f"dpkg -i {debs[0].name}: exit {rc}\n{out}")
    POLICIES.mkdir(parents=True, exist_ok=True)


#: [boot] initramfs: iped's copy, what the initramfs script records, the binary an early unit runs
INITRAMFS_COPY = Path("/etc/iped/initramfs")
INITRAMFS_RECORD = Path("/run/iped-initramfs/activated")
INITRAMFS_EXPECTED = LAB / "initramfs-expected.json"
#: run by the lab's early unit (image.EARLY_SCRIPT_TEXT) when present: the initramfs's policy denies it
DENIED = LAB / "denied-true"
INITRAMFS_UNIT = "iped-initramfs.service"
#: <linux/fsverity.h>: _IOW('f', 133, struct fsverity_enable_arg), _IOWR('f', 134, struct fsverity_digest)
FS_IOC_ENABLE_VERITY = 0x40806685
FS_IOC_MEASURE_VERITY = 0xC0046686


#: initramfs-tools' switch for update-initramfs -u (its dpkg trigger and iped-initramfs.service)
UPDATE_INITRAMFS_CONF = Path("/etc/initramfs-tools/update-initramfs.conf")


def initramfs_tools_updates(on: bool) -> None:
    """update_initramfs=yes|no. The image has it off (tests/lab/system/image.py): every dpkg run
    of the checks (upgrade, purge, reinstall) fires initramfs-tools' own trigger, a full
    mkinitramfs of 70-200 s under TCG that proves nothing of iped's; iped-initramfs.path's
    rebuild, the one under test, runs with it on."""
    text = UPDATE_INITRAMFS_CONF.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("update_initramfs=")]
    UPDATE_INITRAMFS_CONF.write_text("\n".join([*lines, f"update_initramfs={'yes' if on else 'no'}"]) + "\n")


def fsverity_digest(path: Path) -> str:
    """Enable fs-verity on ``path`` (SHA-256, 4 KiB blocks, no salt, no signature); its digest in hex."""
    import fcntl
    import struct

    fd = os.open(path, os.O_RDONLY)
    try:
        arg = struct.pack("=IIIIQIIQ88x", 1, 1, 4096, 0, 0, 0, 0, 0)
        fcntl.ioctl(fd, FS_IOC_ENABLE_VERITY, arg)
        buf = bytearray(struct.pack("=HH", 0, 64) + bytes(64))
        fcntl.ioctl(fd, FS_IOC_MEASURE_VERITY, buf)
    finally:
        os.close(fd)
    size = struct.unpack_from("=HH", buf)[1]
    return bytes(buf[4:4 + size]).hex()


def initramfs_runs() -> str:
    """iped-initramfs.service's last start (ExecMainStartTimestampMonotonic, 0: never) and result."""
    _, out = sh("systemctl", "show", "-P", "ExecMainStartTimestampMonotonic", INITRAMFS_UNIT)
    return out.strip() or "0"


def initramfs_copy_files() -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(INITRAMFS_COPY.glob("*.p7b"))}


def setup_initramfs() -> str:
    """For the next boot, with the image's own initramfs (initramfs-tools) and PID 1's loader kept
    out (/etc/ipe empty): iped installed again, [boot] initramfs on, fleet changed through iped to
    60002.0.0 whose rule denies one fs-verity binary (by digest, unsigned); the daemon writes the
    initramfs copy, iped-initramfs.path runs update-initramfs once. Then a change the kernel
    refuses (ENOKEY) leaves the copy and the initramfs as they were."""
    reinstall()
    initramfs_tools_updates(True)
    DENIED.unlink(missing_ok=True)
    shutil.copyfile("/usr/bin/true", DENIED)
    DENIED.chmod(0o755)
    digest = fsverity_digest(DENIED)
    for f in POLICIES.glob("*"):
        f.unlink()
    for p in BOOT_COPY.glob("*.p7b"):
        p.unlink()
    before = initramfs_runs()
    (POLICIES / "fleet.pol").write_text(
        "policy_name=fleet policy_version=60002.0.0\nDEFAULT action=ALLOW\n"
        f"op=EXECUTE fsverity_digest=sha256:{digest} action=DENY\n")
    write_config("fleet", initramfs=True)
    sh("systemctl", "enable", "iped.service")
    rc, out = sh("systemctl", "restart", "iped.service")
    expect(rc == 0, f"systemctl restart iped: exit {rc}\n{out}")
    expect(active_policy() == ("fleet", "60002.0.0"), f"active {active_policy()}")
    want = kernel_blob_sha256("fleet")
    wait_until("the initramfs copy written", lambda: initramfs_copy_files() == {"fleet.p7b": want})
    start = time.monotonic()
    wait_until("update-initramfs run by iped-initramfs.path",
               lambda: initramfs_runs() != before and unit_state(INITRAMFS_UNIT) == ("inactive", "success"),
               timeout=600, every=2.0, unit=INITRAMFS_UNIT)
    regen = time.monotonic() - start
    initrd = Path(f"/boot/initrd.img-{os.uname().release}")
    copy_mtime = (INITRAMFS_COPY / "fleet.p7b").stat().st_mtime
    expect(initrd.is_file() and initrd.stat().st_mtime >= copy_mtime,
           f"{initrd} not rebuilt after the copy was written:\n"
           + sh("journalctl", "-b", "--no-pager", "-n", "40", "-u", INITRAMFS_UNIT)[1][-3000:])
    expect(not BOOT_COPY.exists() or boot_copy_files() == {}, f"PID 1's dir holds {boot_copy_files()}")
    INITRAMFS_EXPECTED.write_text(json.dumps({"name": "fleet", "version": "60002.0.0", "sha256": want,
                                              "regen_s": round(regen, 1)}))
    # a change the kernel refuses: the copy and the initramfs stay as they are
    runs = initramfs_runs()
    (POLICIES / "fleet.pol").unlink()
    declare("fleet-60003.0.0-untrusted.p7s", "fleet.p7s")
    rc, out = sh("systemctl", "reload", "iped.service")
    expect(rc != 0 and active_policy() == ("fleet", "60002.0.0"), f"reload of ENOKEY fleet: exit {rc}, "
           f"active {active_policy()}\n{out}")
    time.sleep(3)
    expect(initramfs_copy_files() == {"fleet.p7b": want} and initramfs_runs() == runs,
           f"after ENOKEY: copy {initramfs_copy_files()}, iped-initramfs.service {runs} -> {initramfs_runs()}")
    (POLICIES / "fleet.p7s").unlink()
    (POLICIES / "fleet.pol").write_text(
        "policy_name=fleet policy_version=60002.0.0\nDEFAULT action=ALLOW\n"
        f"op=EXECUTE fsverity_digest=sha256:{digest} action=DENY\n")
    sh("systemctl", "reload", "iped.service")
    os.sync()
    return f"fleet 60002.0.0 sha256 {want[:16]} in the initramfs copy; update-initramfs took {regen:.0f} s; " \
           f"ENOKEY 60003.0.0 left the copy and the initramfs alone"


def unit_state(unit: str) -> tuple[str, str]:
    _, out = sh("systemctl", "show", "-P", "ActiveState", unit)
    _, result = sh("systemctl", "show", "-P", "Result", unit)
    return out.strip(), result.strip()


def initramfs_before_switch_root() -> str:
    """Booted with the image's own initramfs-tools initramfs and /etc/ipe empty: the initramfs
    script activated the declared policy (its record in /run), the lab's early unit saw it active,
    iped-boot recorded loaded_by initramfs, and PID 1 loaded nothing."""
    want = json.loads(INITRAMFS_EXPECTED.read_text())
    record = INITRAMFS_RECORD.read_text() if INITRAMFS_RECORD.exists() else "(missing)"
    line = f"policy fleet sha256={want['sha256']} load=ok active=ok"
    expect(line in record.splitlines(), f"the initramfs recorded:\n{record}\nexpected {line!r}")
    early = EARLY_RECORD.read_text() if EARLY_RECORD.exists() else "(missing)"
    expect(f"fleet {want['version']} active=1 sha256={want['sha256']}" in early.splitlines(),
           f"the early unit saw:\n{early}")
    boot = json.loads(BOOT_RECORD.read_text())
    expect(boot["in_force"] is True and boot["loaded_by"] == "initramfs", f"iped-boot's record: {boot}")
    expect(boot_copy_files() == {}, f"PID 1's dir holds {boot_copy_files()}")
    pid1 = [e for e in journal_this_boot() if "Successfully loaded and activated the IPE policy" in
            str(e.get("MESSAGE"))]
    expect(not pid1, f"PID 1 loaded a policy: {[e.get('MESSAGE') for e in pid1]}")
    return (f"initramfs record {record.splitlines()[-1]}; early unit {early.splitlines()[-1]}; "
            f"iped-boot: {boot['reason']}")


def early_unit_denied() -> str:
    """The binary the policy denies, run by the early unit (before iped-boot and iped), got EACCES
    with enforce on; run now it still does."""
    early = EARLY_RECORD.read_text() if EARLY_RECORD.exists() else "(missing)"
    expect("denied-true exit 126 enforce 1" in early and "Permission denied" in early,
           f"the early unit saw:\n{early}")
    try:
        subprocess.run([str(DENIED)], check=False)
    except PermissionError as e:
        return f"early unit: {[ln for ln in early.splitlines() if 'denied' in ln]}; now: {e}"
    raise CheckFailedError(f"{DENIED} ran after boot")


def purge_keeps_enforcement() -> str:
    before = active_policy()
    rc, out = sh("apt-get", "purge", "-y", "-q", "iped", timeout=300)
    expect(rc == 0, f"apt-get purge iped: exit {rc}\n{out}")
    expect(not Path("/usr/bin/iped").exists(), "/usr/bin/iped still there after purge")
    return enforcement_kept(before, "purge")


#: The checks of each boot of one image, in boot order; the last check of a boot prepares the next.
#: After "initramfs" the host boots twice more without checks (tests/lab/system/boot.py): the
#: fail-closed boot must halt, and a corrupted boot copy must stop PID 1 itself.
PHASES: dict[str, tuple[Callable[[], str], ...]] = {
    "main": (
        enable_start_ready, footprint_after_start, security_exposure, status_cli, man_pages_and_completion,
        reload_nothing_to_change,
        reload_applied, reload_rejected, rollback_through_service, stop_keeps_enforcement, restart_keeps_enforcement,
        kernel_refused_start, sigkill_mid_plan, upgrade_keeps_enforcement, audit_follower_sees_denial,
        audit_follower_journal_with_auditd, ansible_role_converges, message_id_on_every_entry, boot_copy_follows,
    ),
    "after_reboot": (boot_policy_before_iped, nothing_to_do_after_boot, setup_remove_boot_copy),
    "copy_removed": (boot_copy_removed_fail_open, purge_keeps_enforcement, setup_initramfs),
    # booted with the image's own initramfs (tests/lab/system/boot.py: INITRAMFS_PHASES)
    "initramfs": (initramfs_before_switch_root, early_unit_denied, setup_fail_closed),
}
PHASE_ORDER = tuple(PHASES)
CHECKS: tuple[Callable[[], str], ...] = tuple(c for phase in PHASES.values() for c in phase)
#: Checks that run on one kernel series only, and what runs in their place on the other. The role
#: drives iped, whose kernel side every other check proves on both kernels; under TCG its two
#: ansible-playbook runs are ~520 s of guest time, the largest single cost of the suite.
ONE_SERIES: dict[str, tuple[str, Callable[[], str]]] = {"ansible_role_converges": ("6.12", declare_fleet)}


def series_of(release: str) -> str:
    """The lab's series name (tests.lab.SERIES) of a kernel release string."""
    return "6.12" if release.startswith("6.12.") else release.split(".", 1)[0]


def checks_on(series: str) -> tuple[Callable[[], str], ...]:
    """The checks a boot on ``series`` runs, in order (:data:`ONE_SERIES` swapped in)."""
    return tuple(_on(series, check) for check in CHECKS)


def _on(series: str, check: Callable[[], str]) -> Callable[[], str]:
    only = ONE_SERIES.get(check.__name__)
    return check if only is None or only[0] == series else only[1]
#: IPED_LAB_SYSTEM_QUICK=1 (host): the first boot runs only this, then the boot phases as usual
QUICK_PHASE = "quick"
PHASES[QUICK_PHASE] = (enable_start_ready, kernel_refused_start, declare_fleet, boot_copy_follows)
NEXT_PHASE = {**dict(itertools.pairwise(PHASE_ORDER)), QUICK_PHASE: PHASE_ORDER[1]}


def main() -> int:
    phase = PHASE_FILE.read_text().strip() if PHASE_FILE.exists() else PHASE_ORDER[0]
    results: list[dict[str, object]] = []
    if phase not in (PHASE_ORDER[0], QUICK_PHASE) and RESULTS.exists():
        results = json.loads(RESULTS.read_text())["checks"]
    facts = {"uname": os.uname().release, "python": sys.version.split()[0],
             "systemd": sh("systemctl", "--version")[1].split("\n")[0]}
    following = NEXT_PHASE.get(phase, "done")
    series = series_of(os.uname().release)
    for check in (_on(series, c) for c in PHASES.get(phase, ())):
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
    PHASE_FILE.write_text(following + "\n")
    os.sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
