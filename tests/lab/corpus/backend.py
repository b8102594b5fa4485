"""What the executor drives: the :class:`Backend` protocol (real securityfs or emulator)
and the result spellings both backends share."""

from __future__ import annotations

import errno as errno_mod
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from tests.lab.corpus.cases import Probe

PROBE_COMM = "ipe-probe"


@dataclass(frozen=True)
class ProbeOutcome:
    """What a probe child reported: ``result`` (``0``, an errno name, ``mmap:EACCES``,
    ``signal:SIGSEGV``) and the child's pid (for ``{pid}``)."""

    result: str
    pid: int


class Backend(Protocol):
    """One IPE implementation the executor can drive: the real securityfs or the emulator.

    * ``abi`` is the kernel series the results belong to (``6.12`` or ``7``);
    * paths are relative to the IPE securityfs root and spelled as latin-1 strings (one
      character per byte), as are the names ``listdir`` returns;
    * ``write`` performs ONE write() call and returns its count, or raises ``OSError`` with
      the kernel's errno; ``read`` returns the whole content; ``stat`` the ``st_mode``;
    * ``probe`` performs one exec/mmap/mprotect as a task with comm :data:`PROBE_COMM`;
    * ``drain_audit`` returns the records (type, body without ``audit(...): ``) emitted since
      the last drain, with 1420 records kept only when they name ``probe_pid``;
    * ``facts`` are the measured properties of the probe targets (path, dev, ino, digests).
    """

    @property
    def abi(self) -> str: ...

    def write(self, path: str, data: bytes) -> int: ...

    def read(self, path: str) -> bytes: ...

    def listdir(self, path: str) -> list[str]: ...

    def stat(self, path: str) -> int: ...

    def probe(self, probe: Probe) -> ProbeOutcome: ...

    def drain_audit(self, probe_pid: int | None) -> list[tuple[int, bytes]]: ...

    def facts(self) -> Mapping[str, str]: ...


def errno_text(exc: OSError) -> str:
    return errno_mod.errorcode.get(exc.errno or 0, str(exc.errno))


def signal_text(status: int) -> str:
    try:
        return "signal:" + signal.Signals(status).name
    except ValueError:
        return f"signal:{status}"
