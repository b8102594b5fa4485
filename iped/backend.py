"""The securityfs backend: the real /sys/kernel/security/ipe or the in-process emulator.

Both implement :class:`Backend` with paths relative to the IPE root (``new_policy``,
``policies/<name>/active``), so planning and applying take either. Where they differ in a way
the daemon must act on, a backend says so in its :class:`Capabilities`; the daemon never asks
which one it has (``kind`` is only shown: status, plan records). A write is exactly one
``write()`` of the whole buffer and raises ``OSError`` with the kernel's errno. Faults are
scripted by the tests' own entry point (tests/helpers/iped_with_hooks.py), never by the shipped
package: no environment variable changes what a backend does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from iped.settings import BackendKind, Settings

IPE_ROOT = Path("/sys/kernel/security/ipe")
SECURITYFS = Path("/sys/kernel/security")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the daemon may rely on, or must do, for one backend: asked instead of its ``kind``."""

    #: the IPE state lives in this process: it ends with it, and nothing is enforced
    state_in_process: bool
    #: the audit records are those of this process's own writes, each a complete event, read in
    #: process (``drain_audit()``): drained and flushed after each reconcile, never polled
    audit_from_own_writes: bool


KERNEL_CAPABILITIES = Capabilities(state_in_process=False, audit_from_own_writes=False)
EMULATOR_CAPABILITIES = Capabilities(state_in_process=True, audit_from_own_writes=True)


class Backend(Protocol):
    """What the daemon needs from securityfs."""

    kind: str
    reason: str
    capabilities: Capabilities

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
    capabilities: Capabilities = KERNEL_CAPABILITIES

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


class EmulatorBackend:
    """Adapter over ``iped.emulator.Emulator``: the same surface as securityfs, in process."""

    kind = "emulator"
    capabilities = EMULATOR_CAPABILITIES

    def __init__(self, emulator: Any, reason: str) -> None:
        self.emulator = emulator
        self.reason = reason

    def read(self, path: str) -> bytes:
        data = self.emulator.read(path)
        return data if isinstance(data, bytes) else str(data).encode()

    def write(self, path: str, data: bytes) -> int:
        return int(self.emulator.write(path, data))

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
    return EmulatorBackend(emu, f"{reason}; {EMULATOR_DIFFERENCES}")


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
