"""The tests' pause hook IPED_TEST_PAUSE_AFTER_STEP (tests/helpers/iped_with_hooks.py, through
the executor's step observer).

The system-image lab SIGKILLs the daemon at exact step boundaries with it. Here, through the real
CLI run by the tests' entry point (``iped apply --once`` on the emulator): set to N, the process
stops itself (SIGSTOP) right after step N was written and reported, and nothing after it has run;
continued, it finishes the plan. Unset, or larger than the plan, it changes nothing. The shipped
``iped`` has no such switch: set for ``python -m iped``, it changes nothing either.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.daemon import Site, wait_child
from tests.helpers.iped_with_hooks import PAUSE_AFTER_STEP_ENV
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text


def three_step_site(site: Site) -> Site:
    """An empty emulator, base and extra declared: new_policy base, new_policy extra, active base."""
    site.put("extra.pol", policy_text("extra", "1.0.0"))
    return site


HOOKED = (sys.executable, "-m", "tests.helpers.iped_with_hooks")


def apply_once(site: Site, log: Path, pause: str | None, entry: tuple[str, ...] = HOOKED,
               cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_AFTER_STEP_ENV}
    if pause is not None:
        env[PAUSE_AFTER_STEP_ENV] = pause
    with log.open("wb") as out:
        return subprocess.Popen([*entry, "apply", "--once", "--json", "--config", str(site.config)],
                                cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=out)


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
    finish_after_pause(proc, log, pause_after)


def test_the_copy_the_system_lab_runs_pauses_outside_the_checkout(site: Site, tmp_path: Path) -> None:
    """The system-image lab copies the entry point into the guest as ``hooked/iped`` and runs it by
    path with the installed package (tests/lab/system/boot.py, guest_checks.sigkill_mid_plan):
    it needs nothing from the checkout but ``iped``."""
    three_step_site(site)
    hooked = tmp_path / "hooked" / "iped"
    hooked.parent.mkdir()
    shutil.copyfile(ROOT / "tests" / "helpers" / "iped_with_hooks.py", hooked)
    log = tmp_path / "stderr.log"
    proc = apply_once(site, log, "2", entry=(sys.executable, str(hooked)), cwd=tmp_path)
    finish_after_pause(proc, log, 2)


def finish_after_pause(proc: subprocess.Popen[bytes], log: Path, pause_after: int) -> None:
    """``proc`` stopped itself after step ``pause_after`` of three; continued, it applies all."""
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


def test_the_shipped_iped_has_no_pause_switch(site: Site, tmp_path: Path) -> None:
    """Only the tests' entry point pauses: ``python -m iped`` with the variable set runs through."""
    three_step_site(site)
    log = tmp_path / "stderr.log"
    proc = apply_once(site, log, "1", entry=(sys.executable, "-m", "iped"))
    try:
        assert not wait_stopped_or_exited(proc), f"python -m iped stopped with {PAUSE_AFTER_STEP_ENV}=1"
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert len(steps_reported(log)) == 3
