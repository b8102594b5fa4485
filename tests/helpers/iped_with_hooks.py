"""``iped`` with the test hooks: the tests' entry point, so that the shipped package has none.

``python -m tests.helpers.iped_with_hooks ARGS...`` (or ``python PATH/iped_with_hooks.py ARGS...``)
installs the hooks its environment asks for, then runs ``iped ARGS...`` in this same process (the
daemon's pid is this process's: a systemd unit can run it as its main process). Standard library
and ``iped`` only: the system-image lab copies this one file into the guest and runs the INSTALLED
package through it.

* ``IPED_EMULATOR_FAULT=<path-suffix>:<nth>:<WHAT>`` (emulator backend only) scripts the nth write
  (1-based, counted per process) to a securityfs path ending in ``<path-suffix>``: WHAT is an errno
  name or number (the write fails with it, e.g. ``active:2:EIO``), ``nochange`` (the write
  "succeeds" but changes nothing) or ``garbage`` (the write happens, the next read returns bytes no
  kernel shows).
* ``IPED_TEST_PAUSE_AFTER_STEP=N`` (any backend): right after step N of a plan was written, read
  back and reported, the process stops itself with SIGSTOP, so a test can SIGKILL it at an exact
  step boundary (the system-image lab's sigkill_mid_plan). Plans with fewer steps never stop.
* ``IPED_EMULATOR_STATE=FILE`` (emulator backend only) keeps the emulator's state between
  processes: every write the emulator accepted is appended to FILE (a JSON line each) and replayed
  when a process makes its emulator backend, so ``iped apply`` and a later ``iped status
  --no-daemon`` see one emulated kernel, as they would the real one. A signed blob the emulator
  took is journaled with its text and replayed without a second verification, as a kernel
  holds what it verified across a daemon's restarts (bench_daemon_start.py --production).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iped.backend import EmulatorBackend

if TYPE_CHECKING:
    from iped.backend import Backend
    from iped.daemon.apply import StepObserver
    from iped.daemon.log import Reporter
    from iped.daemon.reconcile import Reconciler
    from iped.settings import Settings

FAULT_ENV = "IPED_EMULATOR_FAULT"
PAUSE_AFTER_STEP_ENV = "IPED_TEST_PAUSE_AFTER_STEP"
STATE_ENV = "IPED_EMULATOR_STATE"
#: every variable that asks for a hook (a test runs iped through this entry point when one is set)
HOOK_ENVS = (FAULT_ENV, PAUSE_AFTER_STEP_ENV, STATE_ENV)
#: what a ``garbage`` fault's next read returns: neither a version nor a 0/1 flag
GARBAGE = b"\xffgarbage\n"


class FaultMode(StrEnum):
    """What a scripted write does instead of its normal effect."""

    ERRNO = "errno"  # fails with the fault's errno
    NO_CHANGE = "nochange"  # returns its length, changes nothing
    GARBAGE = "garbage"  # happens; the next read returns GARBAGE


@dataclass(frozen=True, slots=True)
class Fault:
    """A parsed :data:`FAULT_ENV` value."""

    suffix: str
    nth: int
    errno: int = 0
    mode: FaultMode = FaultMode.ERRNO

    @staticmethod
    def parse(spec: str) -> Fault:
        suffix, nth, what = spec.rsplit(":", 2)
        if what in (FaultMode.NO_CHANGE, FaultMode.GARBAGE):
            return Fault(suffix, int(nth), 0, FaultMode(what))
        num = getattr(errno, what, None) if not what.isdigit() else int(what)
        if not isinstance(num, int):
            raise ValueError(f"{FAULT_ENV}: unknown errno {what!r}")
        return Fault(suffix, int(nth), num)


class FaultyEmulatorBackend(EmulatorBackend):
    """The emulator backend with one scripted :class:`Fault` (still an EmulatorBackend: the
    daemon trusts configured certificates and follows the audit records on it as on any)."""

    def __init__(self, emulator: Any, reason: str, fault: Fault) -> None:
        super().__init__(emulator, reason)
        self.fault = fault
        self._count = 0
        self._garble_next_read = False

    def read(self, path: str) -> bytes:
        if self._garble_next_read:
            self._garble_next_read = False
            return GARBAGE
        return super().read(path)

    def write(self, path: str, data: bytes) -> int:
        f = self.fault
        if path.endswith(f.suffix):
            self._count += 1
            if self._count == f.nth:
                match f.mode:
                    case FaultMode.ERRNO:
                        raise OSError(f.errno, os.strerror(f.errno), path)
                    case FaultMode.NO_CHANGE:
                        return len(data)
                    case FaultMode.GARBAGE:
                        self._garble_next_read = True
        return super().write(path, data)


class JournaledEmulatorBackend(EmulatorBackend):
    """The emulator backend whose accepted writes are appended to a journal and replayed by the
    next process's (:data:`STATE_ENV`): one emulated kernel across processes."""

    def __init__(self, emulator: Any, reason: str, journal: Path) -> None:
        super().__init__(emulator, f"{reason}; state kept in {journal} ({STATE_ENV})")
        self.journal = journal
        try:
            lines = journal.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            lines = []
        entries = [json.loads(line) for line in lines]
        # a blob the earlier process's emulator verified is held as a kernel holds it across a
        # daemon's restarts: the replay takes it with the text recorded then, not verified again
        held = {bytes.fromhex(e["data"]): bytes.fromhex(e["text"]) for e in entries if "text" in e}
        from iped.emulator import policy

        names = vars(policy)  # (new_policy's own binding of the verification)
        verify = names["verify_pkcs7_signature"]
        names["verify_pkcs7_signature"] = lambda blob, *args: held.get(blob) or verify(blob, *args)
        try:
            for entry in entries:
                emulator.write(entry["path"], bytes.fromhex(entry["data"]))
        finally:
            names["verify_pkcs7_signature"] = verify

    def write(self, path: str, data: bytes) -> int:
        written = super().write(path, data)
        entry = {"path": path, "data": data.hex()}
        if path == "new_policy" or path.endswith("/update"):  # the text the verification gave
            for name in self.listdir("policies"):
                if self.read(f"policies/{name}/pkcs7") == data:
                    entry["text"] = self.read(f"policies/{name}/policy").hex()
        with self.journal.open("a", encoding="ascii") as out:  # only what was accepted: replays never fail
            out.write(json.dumps(entry) + "\n")
        return written


def with_fault(backend: Backend, fault: Fault) -> Backend:
    """``backend`` with ``fault`` scripted in, when it is the emulator (a kernel is left alone)."""
    if isinstance(backend, EmulatorBackend):
        return FaultyEmulatorBackend(backend.emulator, backend.reason, fault)
    return backend


def pause_after(step: str) -> StepObserver:
    """The step observer that stops this process (SIGSTOP) once ``step`` steps are done."""
    def observe(done: int) -> None:
        if str(done) == step:
            os.kill(os.getpid(), signal.SIGSTOP)  # the test SIGKILLs (or SIGCONTs) us here
    return observe


def install(environ: Mapping[str, str]) -> None:
    """Put the hooks ``environ`` asks for where iped builds its backend and reconciler."""
    from iped.daemon import runtime

    spec, step, state = environ.get(FAULT_ENV), environ.get(PAUSE_AFTER_STEP_ENV), environ.get(STATE_ENV)
    if state:
        journaled = runtime.make_backend

        def journaled_backend(settings: Settings) -> Backend:
            backend = journaled(settings)
            if isinstance(backend, EmulatorBackend):
                return JournaledEmulatorBackend(backend.emulator, backend.reason, Path(state))
            return backend

        runtime.make_backend = journaled_backend
    if spec:
        fault = Fault.parse(spec)
        make_backend = runtime.make_backend

        def faulty_backend(settings: Settings) -> Backend:
            return with_fault(make_backend(settings), fault)

        runtime.make_backend = faulty_backend
    if step:
        make_reconciler = runtime.make_reconciler

        def pausing_reconciler(settings: Settings, reporter: Reporter, backend: Backend | None = None,
                               **kwargs: Any) -> Reconciler:
            rec = make_reconciler(settings, reporter, backend, **kwargs)
            rec.after_step = pause_after(step)
            return rec

        runtime.make_reconciler = pausing_reconciler


def main(argv: list[str]) -> int:
    install(os.environ)
    from iped.cli import main as iped_main

    return iped_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
