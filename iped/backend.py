"""The securityfs backend: the real /sys/kernel/security/ipe or the in-process emulator.

Both implement :class:`Backend` with paths relative to the IPE root (``new_policy``,
``policies/<name>/active``), so planning and applying take either; ``kind`` says which one it
is (status, readiness). A write is exactly one ``write()`` of the whole buffer and raises
``OSError`` with the kernel's errno.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from iped.settings import BackendKind, Settings

IPE_ROOT = Path("/sys/kernel/security/ipe")
SECURITYFS = Path("/sys/kernel/security")

#: Test-only fault injection for the emulator backend: ``<path-suffix>:<nth>:<WHAT>`` scripts the
#: nth write (1-based, counted per process) to a path ending in ``<path-suffix>``: WHAT is an errno
#: name or number (the write fails with it, e.g. ``active:1:EIO``), ``nochange`` (the write
#: "succeeds" but changes nothing) or ``garbage`` (the write happens, the next read returns bytes
#: no kernel shows). Ignored by the kernel backend. Documented in docs/daemon.md.
FAULT_ENV = "IPED_EMULATOR_FAULT"

#: Test-only, inert unless set: a file where the emulator backend keeps its state between
#: processes -- every write the emulator accepted, one JSON line each, replayed when a backend is
#: made. So ``iped apply --once`` and ``iped status --no-daemon`` (or a daemon restart) see one
#: emulated kernel, as they would see the real one; without it each process starts a fresh
#: emulator. Ignored by the kernel backend. Documented in docs/daemon.md.
STATE_ENV = "IPED_EMULATOR_STATE"

#: what a ``garbage`` fault's next read returns: neither a version nor a 0/1 flag
GARBAGE = b"\xffgarbage\n"


class Backend(Protocol):
    """What the daemon needs from securityfs."""

    kind: str
    reason: str

    def read(self, path: str) -> bytes:
        """Whole file content. Raises OSError: ENOENT missing (or pkcs7 of a boot policy)."""
        ...

    def write(self, path: str, data: bytes) -> int:
        """One write of ``data``. Raises OSError with the kernel's errno (see iped.errnos)."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Entries of a directory (``policies``)."""
        ...


@dataclass
class SecurityfsBackend:
    """The real IPE securityfs tree (needs CAP_MAC_ADMIN for writes)."""

    root: Path = IPE_ROOT
    reason: str = ""
    kind: str = "kernel"

    def read(self, path: str) -> bytes:
        with open(self.root / path, "rb") as f:
            return f.read()

    def write(self, path: str, data: bytes) -> int:
        # One write() of the whole blob: the kernel parses each write on its own.
        fd = os.open(self.root / path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self.root / path))


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


class EmulatorBackend:
    """Adapter over ``iped.emulator.Emulator``: the same surface as securityfs, in process."""

    kind = "emulator"

    def __init__(self, emulator: Any, reason: str, fault: Fault | None = None,
                 journal: Path | None = None) -> None:
        self.emulator = emulator
        self.reason = reason
        self._fault = fault
        self._fault_count = 0
        self._garble_next_read = False
        self._journal = journal

    def read(self, path: str) -> bytes:
        if self._garble_next_read:
            self._garble_next_read = False
            return GARBAGE
        data = self.emulator.read(path)
        return data if isinstance(data, bytes) else str(data).encode()

    def write(self, path: str, data: bytes) -> int:
        f = self._fault
        if f is not None and path.endswith(f.suffix):
            self._fault_count += 1
            if self._fault_count == f.nth:
                match f.mode:
                    case FaultMode.ERRNO:
                        raise OSError(f.errno, os.strerror(f.errno), path)
                    case FaultMode.NO_CHANGE:
                        return len(data)
                    case FaultMode.GARBAGE:
                        self._garble_next_read = True
        written = int(self.emulator.write(path, data))
        if self._journal is not None:  # only what the emulator accepted: a replay must not fail
            import json

            with self._journal.open("a", encoding="ascii") as out:
                out.write(json.dumps({"path": path, "data": data.hex()}) + "\n")
        return written

    def listdir(self, path: str) -> list[str]:
        return sorted(str(x) for x in self.emulator.listdir(path))

    def drain_audit(self) -> list[tuple[int, str]]:
        """The emulator's audit records since the last call (the audit follower's source)."""
        return list(self.emulator.drain_audit())


def _securityfs_mounted() -> bool:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            return any(line.split()[1:3] == [str(SECURITYFS), "securityfs"] for line in f)
    except OSError:
        return False


def _mount_securityfs() -> str:
    """mount -t securityfs securityfs /sys/kernel/security (as systemd does at boot)."""
    import ctypes

    from iped.errnos import errno_name

    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(b"securityfs", os.fsencode(SECURITYFS), b"securityfs", 0, None)
    if rc != 0:
        e = ctypes.get_errno()
        return f"mounting securityfs failed: {errno_name(e)}"
    return "mounted securityfs"


def _lsm_list() -> str:
    try:
        return (SECURITYFS / "lsm").read_text().strip()
    except OSError:
        return "?"


def detect_kernel(root: Path = IPE_ROOT) -> tuple[bool, str]:
    """Is the kernel's IPE securityfs there? Returns (yes, human reason either way)."""
    notes = []
    if not root.exists() and not _securityfs_mounted():
        notes.append(_mount_securityfs())
    if root.is_dir():
        return True, f"{root} exists (IPE is in the active LSM list: {_lsm_list()})" + (
            f"; {notes[0]}" if notes else ""
        )
    why = f"{root} does not exist"
    if _securityfs_mounted():
        why += f": IPE is not an active LSM (lsm={_lsm_list()}; needs CONFIG_SECURITY_IPE and 'ipe' in lsm=)"
    else:
        why += f": securityfs is not mounted ({notes[0] if notes else 'not tried'})"
    return False, why


#: where the emulator differs from a kernel, said with its reason (``iped status``'s backend line)
EMULATOR_DIFFERENCES = ("nothing is enforced; its keyring holds the configured trust_anchors and signing_cert, "
                        "re-read at every reload (a kernel trusts only the keys enrolled in its keyrings)")


def make_emulator_backend(extra_certs: list[bytes], reason: str) -> EmulatorBackend:
    """A fresh emulator trusting ``extra_certs`` (configured anchors + the dev cert)."""
    from iped.emulator import Emulator

    emu = Emulator()
    for cert in extra_certs:
        emu.trust(cert)
    spec = os.environ.get(FAULT_ENV)
    journal = Path(os.environ[STATE_ENV]) if os.environ.get(STATE_ENV) else None
    if journal is not None:
        reason += f"; state kept in {journal} ({STATE_ENV})"
        _replay(emu, journal)
    return EmulatorBackend(emu, f"{reason}; {EMULATOR_DIFFERENCES}", Fault.parse(spec) if spec else None, journal)


def _replay(emu: Any, journal: Path) -> None:
    """The writes an earlier process's emulator accepted, in order (:data:`STATE_ENV`)."""
    import json

    try:
        lines = journal.read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        entry = json.loads(line)
        emu.write(entry["path"], bytes.fromhex(entry["data"]))


def select_backend(settings: Settings, extra_certs: list[bytes]) -> Backend:
    """Pick the backend ``settings.daemon.backend`` asks for; ``auto`` says loudly why.

    Raises RuntimeError when ``kernel`` is forced but IPE's securityfs is absent.
    """
    kind = settings.daemon.backend
    if kind == BackendKind.EMULATOR:
        return make_emulator_backend(extra_certs, "backend = emulator in the configuration")
    present, why = detect_kernel()
    if present:
        prefix = "backend = kernel: " if kind == BackendKind.KERNEL else "auto: "
        return SecurityfsBackend(IPE_ROOT, reason=prefix + why)
    if kind == BackendKind.KERNEL:
        raise RuntimeError(f"backend = kernel, but {why}")
    return make_emulator_backend(extra_certs,
                                 f"auto: {why}; using the in-process EMULATOR")
