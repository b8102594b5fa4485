"""Shadow mode on this host: real fanotify FAN_OPEN_EXEC notifications, real executions.

Each test mounts its own tmpfs and marks only that filesystem, so the executions of everything
else on the machine never reach it.
"""

from __future__ import annotations

import io
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iped.rollout.facts import LiveResolver
from iped.rollout.fanotify import FAN_OPEN_EXEC, FAN_OPEN_EXEC_PERM, Fanotify, FanotifyError, check_mask
from iped.rollout.observe import observe
from iped.rollout.shadow import Shadow, ShadowLog
from iped.rollout.survey import survey
from tests.helpers.policies import policy_text

DENY_TMPFS = policy_text("s", "0.0.1", "op=EXECUTE boot_verified=FALSE action=DENY")
ALLOW_ALL = policy_text("s", "0.0.1")


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    """A private tmpfs holding a copy of /bin/true."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs and fanotify filesystem marks need root")
    target = tmp_path / "mnt"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "iped-shadow-test", str(target)], check=True, timeout=120)
    try:
        shutil.copy2("/bin/true", target / "prog")
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False, timeout=120)


def _exec_and_drain(shadow: Shadow, fan: Fanotify, prog: Path, runs: int = 1) -> int:
    for _ in range(runs):
        subprocess.run([str(prog)], check=True, timeout=120)
    seen = 0
    # notifications are queued by the time exec returns; wait a little for any stragglers
    while select.select([fan.fileno()], [], [], 0.5)[0]:
        seen += shadow.drain(fan)
    return seen


def test_exec_of_a_denied_file_gives_exactly_one_shadow_deny(mnt: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    shadow = Shadow(DENY_TMPFS, ShadowLog(out))
    fan = Fanotify()
    try:
        fan.mark(str(mnt))
        assert _exec_and_drain(shadow, fan, mnt / "prog") == 1
    finally:
        fan.close()
    lines = out.getvalue().splitlines()
    access = [line for line in lines if line.startswith("type=1420 ")]
    assert len(access) == 1 and len(lines) == 3
    assert f'path="{mnt}/prog" dev="tmpfs"' in access[0]
    assert access[0].endswith('rule="op=EXECUTE boot_verified=FALSE action=DENY"') and "enforcing=0" in access[0]
    assert 'key="iped-shadow"' in lines[1]
    assert shadow.counters.as_dict()["decisions"] == {"allow": 0, "deny": 1}
    # the log reads back through the audit code, marked as shadow, and survey says NO-GO
    log = tmp_path / "shadow.log"
    log.write_text(out.getvalue())
    obs = observe(str(log))
    (row,) = obs
    assert (row.shadow, row.hook, row.recorded["DENY"]) == (1, "BPRM_CHECK", 1)
    report = survey(DENY_TMPFS, "s.pol", obs, LiveResolver(), obs.records)
    assert [(g["rule"], g["line"]) for g in report.by_rule()] == [("op=EXECUTE boot_verified=FALSE action=DENY", 3)]


def test_denials_only_writes_nothing_for_allowed_execs(mnt: Path) -> None:
    out = io.StringIO()
    shadow = Shadow(ALLOW_ALL, ShadowLog(out), success_audit=False)
    fan = Fanotify()
    try:
        fan.mark(str(mnt))
        assert _exec_and_drain(shadow, fan, mnt / "prog", runs=3) == 3
    finally:
        fan.close()
    assert out.getvalue() == "" and shadow.counters.execs == 3


def test_permission_events_are_refused_before_the_kernel_sees_them() -> None:
    check_mask(FAN_OPEN_EXEC)
    with pytest.raises(ValueError, match="only observes"):
        check_mask(FAN_OPEN_EXEC | FAN_OPEN_EXEC_PERM)
    if os.geteuid() == 0:
        fan = Fanotify()
        try:
            with pytest.raises(ValueError):
                fan.mark("/", mask=FAN_OPEN_EXEC_PERM)
        finally:
            fan.close()


def test_fanotify_error_says_what_is_missing() -> None:
    import errno

    assert "needs CAP_SYS_ADMIN" in str(FanotifyError(errno.EPERM, "x"))
    assert str(FanotifyError(errno.ENODEV, "x", "/proc")).startswith("/proc: ENODEV: this filesystem cannot be watched")


def _iped(*args: str) -> list[str]:
    return [sys.executable, "-m", "iped", *args]


def test_cli_without_cap_sys_admin_says_so(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop CAP_SYS_ADMIN")
    pol = tmp_path / "s.pol"
    pol.write_bytes(ALLOW_ALL)
    cmd = ["setpriv", "--bounding-set", "-sys_admin", *_iped("shadow", "--policy", str(pol), "--duration", "0.1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "fanotify: EPERM: shadow mode needs CAP_SYS_ADMIN" in proc.stderr


def test_cli_shadow_of_the_declared_policy_feeds_audit(mnt: Path, tmp_path: Path) -> None:
    log, prom, policies, config = (tmp_path / n for n in ("shadow.log", "iped.prom", "policies.d", "iped.toml"))
    policies.mkdir()
    (policies / "s.pol").write_bytes(DENY_TMPFS)
    config.write_text(f'[policies]\ndir = "{policies}"\nactive = "s"\nenforce = false\n')
    args = _iped(
        "shadow", "--config", str(config), "--watch", str(mnt), "--count", "1", "--duration", "20", "-o", str(log),
        "--prometheus-textfile", str(prom),
    )  # fmt: skip
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "evaluating executions" in proc.stderr.readline()  # marks are in place
        subprocess.run([str(mnt / "prog")], check=True, timeout=120)
        assert proc.wait(timeout=20) == 0
        assert "1 execution seen, 0 allowed, 1 would be denied" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    metrics = prom.read_text()
    assert 'iped_audit_decisions_total{op="EXECUTE",hook="BPRM_CHECK",action="DENY",enforcing="0"} 1' in metrics
    audit = subprocess.run(
        _iped("audit", "--source", str(log), "--denials"), capture_output=True, text=True, check=True,
        timeout=120,
    )
    assert audit.stdout.count("AUDIT-DENY EXECUTE/BPRM_CHECK") == 1 and f"{mnt}/prog" in audit.stdout


def _blocked_wait(pid: int) -> tuple[int, int] | None:
    """(syscall number, timeout argument) while ``pid`` sleeps in epoll_wait/epoll_pwait, else None."""
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    numbers = {"x86_64": (232, 281), "aarch64": (22,)}.get(os.uname().machine, ())
    if fields[0] == "running" or fields[0] == "-1" or int(fields[0]) not in numbers:
        return None
    return int(fields[0]), int(fields[4], 16)


def test_cli_shadow_sleeps_until_an_event_and_sigterm_alone_stops_it(mnt: Path, tmp_path: Path) -> None:
    """Idle, the shadow waits with no timeout (no timer wakes it to look at a stop flag), so
    SIGTERM itself must end the wait; it stopped up to a second after SIGTERM (2.1 s measured)."""
    import signal
    import time

    pol = tmp_path / "allow.pol"
    pol.write_bytes(ALLOW_ALL)
    proc = subprocess.Popen(_iped("shadow", "--policy", str(pol), "--watch", str(mnt), "-o", str(tmp_path / "log")),
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "evaluating executions" in proc.stderr.readline()
        deadline = time.monotonic() + 20
        while (blocked := _blocked_wait(proc.pid)) is None:  # bounded poll until it sleeps in the wait
            assert time.monotonic() < deadline, "the shadow never blocked in epoll_wait"
            time.sleep(0.02)
        assert blocked[1] & 0xFFFFFFFF == 0xFFFFFFFF, f"epoll timeout {blocked[1]} ms: woken by a timer, not events"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert "shadow: 0 executions seen" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait(timeout=30)
