"""The system-image lab's work, started when collection ends and run behind the rest of the suite.

Building the packages and the root filesystem and booting both kernels through every phase is
most of the suite's time, and the other tests leave one of the two cores mostly idle. So
:func:`start` (called by ``tests/lab/conftest.py`` once the selected tests are known) begins it
all at once on threads of their own, at a lower CPU priority (nice is per thread on Linux and
QEMU inherits it): the unit tests keep their core and their timing, the guests take what is left,
and all of the machine once the rest is done. The tests then only wait for the results.

The threads are daemon threads and QEMU dies with the thread that started it
(:func:`tests.lab.vm.die_with_parent`), so a session that ends early (``-x``, Ctrl-C) never waits
for the guests.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

import pytest

from tests.lab import SERIES
from tests.lab.system.boot import SystemRun

#: how much lower than the test process the background work runs (nice(2) increment)
NICE = 10
T = TypeVar("T")


def _in_background(name: str, work: Callable[[], T]) -> Future[T]:
    """``work()`` on a niced daemon thread; its result or exception in the future."""
    future: Future[T] = Future()

    def body() -> None:
        os.nice(NICE)  # this thread and what it starts
        future.set_running_or_notify_cancel()
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to the waiting test
            future.set_exception(exc)

    threading.Thread(target=body, name=f"iped-lab-system-{name}", daemon=True).start()
    return future


class SystemLab:
    """The packages, the root filesystem, then both kernels' boots; ``result(series)`` waits."""

    def __init__(self, base: Path, timeout: float) -> None:
        from tests.lab.system.boot import boot_checks
        from tests.lab.system.image import build_rootfs
        from tests.lab.system.packages import build_debs

        def build_then_boot() -> dict[str, Future[SystemRun]]:
            rootfs = build_rootfs(build_debs())
            return {s: _in_background(s, lambda s=s: boot_checks(rootfs, s, base, timeout=timeout))  # type: ignore[misc]
                    for s in selected_series()}

        self._boots = _in_background("build", build_then_boot)

    def result(self, series: str) -> SystemRun:
        """That kernel's finished run; a build or boot failure re-raises here, in each test."""
        return self._boots.result()[series].result()


#: "6.12" or "7" (comma-separated): boot only these kernels (the others' tests are skipped)
SERIES_ENV = "IPED_LAB_SYSTEM_SERIES"


def selected_series() -> tuple[str, ...]:
    wanted = [s.strip() for s in os.environ.get(SERIES_ENV, "").split(",") if s.strip()]
    return tuple(s for s in SERIES if s in wanted) if wanted else SERIES


#: seconds each boot of a guest may take (``IPED_LAB_SYSTEM_TIMEOUT``)
DEFAULT_TIMEOUT = 1500.0
_lab: SystemLab | None = None


def start(config: pytest.Config) -> SystemLab:
    """Start the system lab once per session (a directory under pytest's basetemp) and return it."""
    global _lab
    if _lab is None:
        factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
        timeout = float(os.environ.get("IPED_LAB_SYSTEM_TIMEOUT") or DEFAULT_TIMEOUT)
        _lab = SystemLab(factory.mktemp("system-image"), timeout)
    return _lab
