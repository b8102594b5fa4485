"""Small filesystem helpers shared across iped, cheap to import (standard library only)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomically(path: str | Path, data: bytes | str, mode: int = 0o666, *, sync_dir: bool = False,
                     exact_mode: bool = False) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never half.

    A temporary file ``.<name>.<pid>.tmp`` in the same directory (same filesystem, so the rename is
    atomic; the plan log's start-up clean-up knows the name), created with ``mode`` (less the
    umask; ``exact_mode``: ``mode`` itself) and fsynced before ``os.replace``. The temporary name
    is created anew (O_EXCL, O_NOFOLLOW: a file or symlink planted there in a directory others can
    write is removed, never written through). ``sync_dir`` also fsyncs the directory, so the rename
    itself survives a crash (the state dir's records). On failure the temporary file is removed
    and the error propagates. ``str`` data is written as UTF-8.
    """
    target = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # (a leftover of a crash under this pid, or planted: unlink never follows it)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            if exact_mode:
                os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        dfd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
