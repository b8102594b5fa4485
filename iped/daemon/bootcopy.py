"""The boot copy: ``<copy_dir>/<active>.p7b``, what systemd PID 1's IPE loader loads at the next boot.

systemd >= 257 (``src/core/ipe-setup.c``, docs/boot.md) loads every ``*.p7b`` of ``/etc/ipe``
(then ``/run/ipe``, ``/usr/local/lib/ipe``, ``/usr/lib/ipe``) before it starts any unit, names
the policy after the file, and activates each file in turn; a blob the kernel refuses makes PID 1
stop the boot ("Failed to load IPE policy"). So the copy must be exactly a blob the kernel
accepted, complete, and the only ``*.p7b`` there. It is taken from the kernel itself
(``policies/<name>/pkcs7`` of the active policy, once the declared policy is active), never from
a file: a blob the kernel refused never reaches it, and its version is the active one, never lower.
Written with :func:`iped.fsutil.write_atomically` (temporary file, fsync, rename, directory
fsync): a reader -- PID 1 at the next boot, even after a power cut or a SIGKILL mid-write --
sees the old blob or the new one, never part of one; the temporary's name does not end in
``.p7b``, so PID 1 never loads it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from iped.backend import Backend
from iped.daemon.actual import ActualState
from iped.errnos import describe_errno, errno_name
from iped.fsutil import write_atomically

SUFFIX = ".p7b"


@dataclass(frozen=True, slots=True)
class BootCopy:
    """What the last sync found or did. ``state``: ``current`` (the copy is the active blob),
    ``written`` (it was replaced now), ``waiting`` (the declared policy is not active in the
    kernel: nothing written), ``failed`` (a write or read failed: ``message`` says errno and path)."""

    path: str
    state: str
    name: str | None = None
    version: str | None = None
    blob_digest: str | None = None
    removed: tuple[str, ...] = ()
    message: str = ""

    @property
    def current(self) -> bool:
        return self.state in ("current", "written")

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "state": self.state, "current": self.current, "name": self.name,
                "version": self.version, "blob_digest": self.blob_digest, "removed": list(self.removed),
                "message": self.message}


def copy_path(copy_dir: Path, name: str) -> Path:
    """``<copy_dir>/<name>.p7b``: PID 1 takes the policy's name from the file's name."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"policy name {name!r} cannot be a file name")
    return copy_dir / f"{name}{SUFFIX}"


def _others(copy_dir: Path, keep: Path) -> list[Path]:
    """Every other ``*.p7b`` (PID 1 would load and activate each) and temporaries left by a kill."""
    out = []
    for entry in os.scandir(copy_dir):
        is_tmp = entry.name.startswith(".") and entry.name.endswith(".tmp") and SUFFIX in entry.name
        if (entry.name.endswith(SUFFIX) or is_tmp) and entry.name != keep.name:
            out.append(Path(entry.path))
    return sorted(out)


def sync(backend: Backend, actual: ActualState, declared_active: str | None, copy_dir: Path) -> BootCopy:
    """Make ``copy_dir`` hold exactly the kernel's active blob when it is the declared active policy."""
    active = actual.active
    if declared_active is None or active is None or active.name != declared_active:
        now = f"{active.name} {active.version}" if active else "none"
        return BootCopy(str(copy_dir), "waiting", declared_active, None, None, (),
                        f"declared active policy {declared_active!r} is not active in the kernel (active: {now}): "
                        "the boot copy is left as it is")
    try:
        target = copy_path(copy_dir, active.name)
    except ValueError as e:
        return BootCopy(str(copy_dir), "failed", active.name, str(active.version), None, (), str(e))
    try:
        blob = backend.read(f"policies/{active.name}/pkcs7")
    except OSError as e:
        code = e.errno or errno.EIO
        return BootCopy(str(target), "failed", active.name, str(active.version), None, (),
                        f"{target}: cannot read policies/{active.name}/pkcs7: {errno_name(code)}: "
                        f"{describe_errno(code)}" + (" (an unsigned boot policy has no blob)"
                                                     if code == errno.ENOENT else ""))
    digest = hashlib.sha256(blob).hexdigest()
    name, version = active.name, str(active.version)
    try:
        try:
            current = target.read_bytes() == blob and not target.is_symlink()
        except FileNotFoundError:
            current = False
        if not current:
            write_atomically(target, blob, 0o644, sync_dir=True, exact_mode=True)
        removed = []
        for other in _others(copy_dir, target):
            with contextlib.suppress(FileNotFoundError):
                other.unlink()
                removed.append(other.name)
    except OSError as e:
        code = e.errno or errno.EIO
        return BootCopy(str(target), "failed", name, version, digest, message=(
            f"{e.filename or target}: {errno_name(code)}: {e.strerror or describe_errno(code)}: the boot copy "
            "may be stale (PID 1 loads what is there at the next boot)"))
    return BootCopy(str(target), "current" if current else "written", name, version, digest, tuple(removed),
                    message=f"{target}: {active.name} {active.version} sha256:{digest[:16]}")


def read_copy(copy_dir: Path) -> list[dict[str, object]]:
    """The ``*.p7b`` files PID 1 would load at the next boot, in its order: name, size, sha256."""
    out: list[dict[str, object]] = []
    try:
        entries = sorted(e for e in os.listdir(copy_dir) if e.endswith(SUFFIX))
    except OSError:
        return out
    for name in entries:
        path = copy_dir / name
        try:
            raw = path.read_bytes()
        except OSError as e:
            out.append({"path": str(path), "name": name[: -len(SUFFIX)], "error": errno_name(e.errno or errno.EIO)})
            continue
        out.append({"path": str(path), "name": name[: -len(SUFFIX)], "size": len(raw),
                    "blob_digest": hashlib.sha256(raw).hexdigest()})
    return out
