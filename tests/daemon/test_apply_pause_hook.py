"""The executor's test hook IPED_TEST_PAUSE_AFTER_STEP (iped.daemon.apply.PAUSE_AFTER_STEP_ENV).

The system-image lab SIGKILLs the daemon at exact step boundaries with it. Here, through the real
CLI (``iped apply --once`` on the emulator): set to N, the process stops itself (SIGSTOP) right
after step N was written and reported, and nothing after it has run; continued, it finishes the
plan. Unset, or larger than the plan, it changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iped.daemon.apply import PAUSE_AFTER_STEP_ENV
from tests.daemon.conftest import ROOT, Site, policy_text, wait_child


def three_step_site(site: Site) -> Site:
    """An empty emulator, base and extra declared: new_policy base, new_policy extra, active base."""
    site.put("extra.pol", policy_text("extra", "1.0.0"))
    return site


def apply_once(site: Site, log: Path, pause: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_AFTER_STEP_ENV}
    if pause is not None:
        env[PAUSE_AFTER_STEP_ENV] = pause
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "iped", "apply", "--once", "--json",
                                 "--config", str(site.config)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=out)


def wait_stopped_or_exited(proc: subprocess.Popen[bytes]) -> bool:
    """True when ``proc`` stopped itself, False when it exited (then it is reaped)."""
    status = wait_child(proc.pid, 60, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        return True
    proc.returncode = os.waitstatus_to_exitcode(status)
    return False


def steps_reported(log: Path) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if "loaded" in ln or "activated" in ln]


@pytest.mark.parametrize("pause_after", [1, 2])
def test_stops_after_step_n_and_finishes_when_continued(site: Site, tmp_path: Path, pause_after: int) -> None:
    three_step_site(site)
    log = tmp_path / "stderr.log"
    proc = apply_once(site, log, str(pause_after))
    try:
        assert wait_stopped_or_exited(proc), f"exited {proc.returncode} without stopping:\n{log.read_text()}"
        assert len(steps_reported(log)) == pause_after, log.read_text()
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    record = json.loads(out)
    assert len(record["steps"]) == 3 and len(steps_reported(log)) == 3


@pytest.mark.parametrize("pause", [None, "4", "0", "x"])
def test_inert_unless_set_to_a_reached_step(site: Site, tmp_path: Path, pause: str | None) -> None:
    three_step_site(site)
    log = tmp_path / "stderr.log"
    proc = apply_once(site, log, pause)
    try:
        assert not wait_stopped_or_exited(proc), f"stopped with {PAUSE_AFTER_STEP_ENV}={pause}"
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert len(steps_reported(log)) == 3
