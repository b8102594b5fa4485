"""pytest integration of the IPE lab: real Debian IPE kernels booted under QEMU.

Every test in this directory gets the ``lab`` marker.  Each kernel series is booted at most
ONCE per pytest session and runs the whole guest side (``python -m tests.lab.guest``: the
corpus, then ``tests/lab_guest``); tests then assert on what it left behind.

Fixtures:

* ``lab_guest_run`` - a factory: ``lab_guest_run("6.12")`` / ``lab_guest_run("7")`` returns
  the :class:`tests.lab.vm.GuestResult` of that kernel's run (``.outdir``, ``.guest_log``,
  ``.console_log``, ``.returncode``, ``.output.facts()/.steps()/.junit()``, ``.tail()``).
  Call it inside the test: a download or boot failure then FAILS that test with the reason
  (a fixture error or a skip would be easier to overlook).
* ``lab_result_612`` / ``lab_result_7`` - the same, as plain fixtures.

Environment knobs: ``IPED_LAB_TIMEOUT`` (seconds per guest, default 900),
``IPED_LAB_PARALLEL`` (1, the default: boot the needed kernels side by side, one vCPU each;
0: one after the other), ``IPED_LAB_CACHE`` (download cache), ``IPED_LAB_ACCEL`` /
``IPED_LAB_KVM_SILENCE`` / ``IPED_LAB_KVM_DEVICE`` (accelerator: see :mod:`tests.lab.accel`).
The terminal summary says which accelerator each guest ran under and why.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.lab import SERIES, LabError
from tests.lab.vm import GuestResult, LabGuestRun, describe_accel, run_guest

HERE = Path(__file__).resolve().parent
DEFAULT_TIMEOUT = 900.0
#: Measured on the 2-core reference machine: see tests/lab/README.md ("Timing").
DEFAULT_PARALLEL = "1"
_SERIES_FIXTURES = {"lab_result_612": "6.12", "lab_result_7": "7"}
_session_key = pytest.StashKey["_LabSession"]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/lab as ``lab`` (before ``-m`` selection runs), and put the
    system-image tests last: their guests run behind everything before them."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.lab)
    items.sort(key=_is_system_image)  # stable: every other test keeps its place


def _is_system_image(item: pytest.Item) -> bool:
    return item.path.name == "test_system_image.py" and item.path.is_relative_to(HERE)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the system-image lab as soon as its tests are selected: it runs behind the rest."""
    if any(_is_system_image(item) for item in session.items):
        from tests.lab.system import background

        background.start(session.config)


def _needed_series(items: list[pytest.Item]) -> frozenset[str]:
    """Kernels the selected lab tests use, so parallel mode boots no kernel in vain."""
    needed: set[str] = set()
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        needed |= {series for name, series in _SERIES_FIXTURES.items() if name in fixtures}
        if "lab_guest_run" in fixtures:
            series = getattr(getattr(item, "callspec", None), "params", {}).get("series")
            needed |= {series} if series in SERIES else set(SERIES)
    return frozenset(needed)


class _LabSession:
    """Boots each needed kernel once; in parallel mode all of them on first demand."""

    def __init__(self, base: Path, needed: frozenset[str]) -> None:
        self._base = base
        self._needed = needed
        self._timeout = float(os.environ.get("IPED_LAB_TIMEOUT") or DEFAULT_TIMEOUT)
        self._parallel = (os.environ.get("IPED_LAB_PARALLEL") or DEFAULT_PARALLEL) == "1"
        self._pool = ThreadPoolExecutor(max_workers=len(SERIES), thread_name_prefix="iped-lab")
        self._runs: dict[str, Future[GuestResult]] = {}
        self._lock = threading.Lock()

    def _start(self, series: str) -> Future[GuestResult]:
        if series not in self._runs:
            outdir = self._base / f"guest-{series}"
            self._runs[series] = self._pool.submit(run_guest, series, outdir, timeout=self._timeout)
        return self._runs[series]

    def get(self, series: str) -> GuestResult:
        if series not in SERIES:
            raise ValueError(f"unknown lab kernel series {series!r}; known: {SERIES}")
        with self._lock:
            if self._parallel:
                for other in sorted(self._needed | {series}):
                    self._start(other)
            future = self._start(series)
        exc = future.exception()
        if isinstance(exc, LabError):
            pytest.fail(f"lab kernel {series}: {exc}", pytrace=False)
        return future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def summary(self) -> list[str]:
        """One line per booted kernel: how long it took and where its logs are."""
        lines = []
        for series, future in sorted(self._runs.items()):
            if not future.done():
                continue
            exc = future.exception()
            if exc is not None:
                lines.append(f"{series}: FAILED: {str(exc).splitlines()[0]}")
                continue
            r = future.result()
            steps = ", ".join(f"{n} {s['status']} {s['seconds']:.0f} s" for n, s in _steps(r).items())
            lines.append(f"{series}: {r.release} guest exit {r.returncode} in {r.seconds:.0f} s "
                         f"({steps}); logs: {r.outdir}")
            lines.append(f"{series}: {describe_accel(r)}")
        return lines


def _steps(result: GuestResult) -> dict[str, dict[str, Any]]:
    try:
        return result.output.steps()
    except (OSError, ValueError):
        return {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    from tests.lab.system import SUMMARY_KEY

    session = config.stash.get(_session_key, None)
    lines = session.summary() if session is not None else []
    for series, system in sorted(config.stash.get(SUMMARY_KEY, {}).items()):
        lines += [f"{series} system image: {line}" for line in system]
    if lines:
        terminalreporter.write_sep("-", "IPE lab")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def _lab_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_LabSession]:
    needed = _needed_series(request.session.items)
    session = _LabSession(tmp_path_factory.mktemp("lab"), needed)
    request.config.stash[_session_key] = session
    yield session
    session.close()


@pytest.fixture(scope="session")
def lab_guest_run(_lab_session: _LabSession) -> LabGuestRun:
    """``lab_guest_run(series) -> GuestResult``, booting that kernel once per session."""
    return _lab_session.get


@pytest.fixture(scope="session")
def lab_result_612(lab_guest_run: LabGuestRun) -> GuestResult:
    return lab_guest_run("6.12")


@pytest.fixture(scope="session")
def lab_result_7(lab_guest_run: LabGuestRun) -> GuestResult:
    return lab_guest_run("7")
