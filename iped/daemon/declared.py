"""Declared state: what ``[policies]`` and the drop-in dir ask the kernel to hold.

A frozen snapshot, the model only; the kernel's side is :mod:`iped.daemon.actual`. It is built by
:mod:`iped.daemon.scan` (every file of the drop-in dir, read by :mod:`iped.daemon.dropin` and
checked as ``iped validate`` checks it), with the policies ``iped rollback`` rolled forward
overlaid by :mod:`iped.daemon.overlay`; problems come back as :class:`DeclError` values, never as
a half-built state. :meth:`DeclaredState.find_active` is the one answer to "which policy is the
active one": the planner and ``iped survey``/``suggest`` both ask it.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iped.emulator.policy_parser import Version
from iped.errnos import describe_errno, errno_name
from iped.trustpath import UntrustedPathError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class DeclError:
    """Why a declared policy (or the declaration as a whole) cannot be deployed."""

    file: str
    line: int | None
    errno: int
    reason: str
    plain: bool = False  # not the kernel's word (a filesystem or config error): no IPE meaning attached
    #: what the errno stands for here when neither the kernel's IPE meaning nor strerror() fits
    #: (ENOENT for a policy no file declares is not "No such file or directory")
    meaning: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.meaning is not None:
            said = f"{errno_name(self.errno)} ({self.meaning})"
        elif self.plain:
            said = f"{errno_name(self.errno)} ({os.strerror(self.errno)})"
        else:
            said = describe_errno(self.errno)
        return f"{where}: {said}: {self.reason}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "errno": self.errno,
                "errno_name": errno_name(self.errno), "reason": self.reason,
                "message": str(self)}


@dataclass(frozen=True, slots=True)
class DeclaredPolicy:
    """One policy the drop-in dir declares, already parsed and signature-checked."""

    name: str
    version: Version
    text: bytes
    blob: bytes
    source: Path
    signer: str

    @property
    def text_digest(self) -> str:
        return sha256(self.text)

    @property
    def blob_digest(self) -> str:
        return sha256(self.blob)


@dataclass(frozen=True, slots=True)
class DeclaredState:
    """What the configuration asks the kernel to look like."""

    policies: tuple[DeclaredPolicy, ...]
    active: str | None
    enforce: bool
    success_audit: bool
    protect: tuple[str, ...] = ()
    errors: tuple[DeclError, ...] = ()

    def get(self, name: str) -> DeclaredPolicy | None:
        return next((p for p in self.policies if p.name == name), None)

    def protected(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.protect)

    def find_active(self) -> DeclaredPolicy | None:
        """The policy ``active`` names, as declared (rolled-forward overlay included, when the
        state came from :func:`iped.daemon.scan.declare`); None: no active policy is set, or no
        valid file declares it (``errors`` says why)."""
        return self.get(self.active) if self.active is not None else None


#: reads and checks one drop-in file (the scan's and the overlay's; :mod:`iped.daemon.scan` has two)
Loader = Callable[[Path], "DeclaredPolicy | DeclError"]


def fs_error(path: Path | str, e: OSError, what: str) -> DeclError:
    """A filesystem error, worded as one (no IPE meaning attached to its errno)."""
    return DeclError(str(path), None, e.errno or errno.EIO, f"{what}: {e.strerror or e}", plain=True)




def untrusted(e: UntrustedPathError) -> DeclError:
    """A path someone other than root (or iped's user) can change: its content is not taken as a
    declaration (:mod:`iped.trustpath`)."""
    return DeclError(e.filename, None, errno.EPERM, f"{e.why} (hint: {e.fix})", plain=True)

