"""iped installed from its .deb into Debian trixie, systemd as PID 1, on both lab kernels.

One boot per kernel runs every check of :mod:`tests.lab.system.guest_checks` in order; each
check becomes one test here (``test_in_image[<check>-<series>]``), failing with what the guest
saw.  The packages and the root filesystem are built once (cached by input hash), then the two
kernels boot side by side, one vCPU each, all of it from the end of collection on, behind the
rest of the suite (:mod:`tests.lab.system.background`).  Knob: ``IPED_LAB_SYSTEM_TIMEOUT``
(seconds per boot, default 1500).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from _pytest.mark import ParameterSet

from tests.lab import SERIES
from tests.lab.system import SUMMARY_KEY, background, guest_checks
from tests.lab.system.boot import STOP_BOOTS, SystemRun


def _checks_by_series() -> Iterator[ParameterSet]:
    """(check, series): every check on every kernel, but a one-series check
    (guest_checks.ONE_SERIES) on its own kernel, with its stand-in on the other."""
    for position in range(len(guest_checks.CHECKS)):
        for series in SERIES:
            name = guest_checks.checks_on(series)[position].__name__
            yield pytest.param(name, series, id=f"{name}-{series}")


SystemRuns = Callable[[str], SystemRun]


def summary(run: SystemRun) -> list[str]:
    """What the lab's terminal summary says of one boot: checks passed, time, the footprint."""
    ok = sum(1 for r in run.results.values() if r["ok"])
    lines = [f"{run.release}: {ok}/{len(run.results)} in-image checks ok in {run.seconds:.0f} s",
             f"{run.release}: boots: " + ", ".join(f"{p} {s:.0f} s" for p, s in run.phases.items())]
    for stop in run.stops.values():
        lines.append(f"{run.release}: {stop.name} boot stopped in {stop.seconds:.0f} s: "
                     f"{'yes' if stop.seen else 'NO'} ({stop.marker!r})")
    footprint = run.results.get("footprint_after_start")
    if footprint is not None and footprint["ok"]:
        lines.append(f"{run.release}: iped.service after start: {footprint['detail']}")
    return lines


@pytest.fixture(scope="session")
def system_runs(request: pytest.FixtureRequest) -> SystemRuns:
    """``system_runs(series)``: that kernel's boot, started when collection ended
    (:mod:`tests.lab.system.background`); errors re-raise per test."""
    lab = background.start(request.config)

    def get(series: str) -> SystemRun:
        if series not in background.selected_series():
            pytest.skip(f"{background.SERIES_ENV}={os.environ.get(background.SERIES_ENV)}: {series} not booted")
        run = lab.result(series)
        request.config.stash.setdefault(SUMMARY_KEY, {})[series] = summary(run)
        return run

    return get


@pytest.mark.parametrize(("check", "series"), list(_checks_by_series()))
def test_in_image(system_runs: SystemRuns, check: str, series: str) -> None:
    run = system_runs(series)
    result = run.results.get(check)
    assert result is not None, f"{check} never ran on {run.release} (boot {run.seconds:.0f} s)\n{run.tail()}"
    assert result["ok"], f"{check} on {run.release} ({result['seconds']} s):\n{result['detail']}"


#: what each early-stopping boot must print, beside its marker (docs/boot.md)
STOP_REASONS = {
    "fail_closed": "iped-boot: FAIL-CLOSED: declared policy 'fleet' was NOT active before iped.service",
    "corrupted_copy": "Failed to copy the IPE policy /etc/ipe/fleet.p7b",
}


@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize("stop", [name for name, _, _ in STOP_BOOTS])
def test_boot_stops(system_runs: SystemRuns, stop: str, series: str) -> None:
    """fail_closed on with the boot copy removed: iped-boot.service fails with the reason on the
    console and the packaged drop-in halts; a corrupted boot copy: systemd 257's PID 1 stops by
    itself. Either way no unit of multi-user.target (the checks) ever runs."""
    run = system_runs(series)
    booted = run.stops.get(stop)
    assert booted is not None, f"the {stop} boot never ran: an earlier boot did not finish its checks\n{run.tail()}"
    assert booted.seen, f"{booted.marker!r} never reached the console in {booted.seconds} s\n{booted.tail()}"
    assert STOP_REASONS[stop] in booted.console_log, f"the reason is not on the console\n{booted.tail()}"
    assert "iped-lab-check" not in booted.console_log, f"the boot went on to the checks\n{booted.tail()}"
