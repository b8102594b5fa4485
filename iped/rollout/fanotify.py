"""fanotify(7) through ctypes, notification class only: ``FAN_OPEN_EXEC`` and nothing that blocks.

Shadow mode observes executions; it must never block or slow one. So the group is
``FAN_CLASS_NOTIF`` and the mask is :data:`FAN_OPEN_EXEC` alone: no ``FAN_*_PERM`` event is ever
requested (:func:`check_mask` refuses them), so the kernel never waits for this process. An
event carries an open, read-only descriptor of the executed file and the pid that opened it; a
queue overflow (``FAN_Q_OVERFLOW``, default queue 16384 events) is reported, never hidden.

Needs CAP_SYS_ADMIN (fanotify_init() is EPERM without it for mount and filesystem marks).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

# include/uapi/linux/fanotify.h
FAN_CLASS_NOTIF = 0x00
FAN_CLOEXEC = 0x01
FAN_NONBLOCK = 0x02
FAN_MARK_ADD = 0x01
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100
FAN_OPEN_EXEC = 0x1000
FAN_Q_OVERFLOW = 0x4000
FAN_OPEN_PERM = 0x10000
FAN_ACCESS_PERM = 0x20000
FAN_OPEN_EXEC_PERM = 0x40000
#: every permission event: an event of these makes the kernel wait for an answer
FAN_ALL_PERM_EVENTS = FAN_OPEN_PERM | FAN_ACCESS_PERM | FAN_OPEN_EXEC_PERM
FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100

#: struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid
_METADATA = struct.Struct("=IBBHQii")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.fanotify_mark.restype = ctypes.c_int


class FanotifyError(OSError):
    """A fanotify call failed; ``str()`` says what it means for shadow mode."""

    def __str__(self) -> str:
        what = {
            errno.EPERM: "shadow mode needs CAP_SYS_ADMIN (fanotify mount/filesystem marks are privileged)",
            errno.ENOSYS: "this kernel has no fanotify (CONFIG_FANOTIFY is off)",
            errno.EINVAL: "this kernel's fanotify lacks FAN_OPEN_EXEC or filesystem marks (needs Linux >= 5.0)",
            errno.ENODEV: "this filesystem cannot be watched (no fanotify support for its superblock)",
            errno.EXDEV: "this mount is in another mount namespace or cannot be marked as a filesystem",
        }.get(self.errno or 0, os.strerror(self.errno or 0))
        where = f"{self.filename}: " if self.filename else ""
        return f"{where}{errno.errorcode.get(self.errno or 0, '?')}: {what}"


def check_mask(mask: int) -> None:
    """Refuse any permission event: shadow mode must never make an exec wait for it."""
    if mask & FAN_ALL_PERM_EVENTS:
        raise ValueError(f"fanotify mask {mask:#x} asks for permission events: shadow mode only observes")


@dataclass(frozen=True, slots=True)
class FanEvent:
    """One event: the mask, an open fd of the file (FAN_NOFD on overflow; the caller closes it), pid."""

    mask: int
    fd: int
    pid: int

    @property
    def overflow(self) -> bool:
        return bool(self.mask & FAN_Q_OVERFLOW)


class Fanotify:
    """A notification-class fanotify group watching executions on marked mounts or filesystems."""

    def __init__(self) -> None:
        fd = _libc.fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY | os.O_LARGEFILE)
        if fd < 0:
            err = ctypes.get_errno()
            raise FanotifyError(err, os.strerror(err))
        self.fd: int = fd

    def fileno(self) -> int:
        return self.fd

    def mark(self, path: str, *, filesystem: bool = True, mask: int = FAN_OPEN_EXEC) -> None:
        """Watch executions on the filesystem (default) or only the mount that holds ``path``.

        Raises FanotifyError (EPERM no CAP_SYS_ADMIN; ENODEV/EXDEV an unwatchable fs or mount).
        """
        check_mask(mask)
        how = FAN_MARK_ADD | (FAN_MARK_FILESYSTEM if filesystem else FAN_MARK_MOUNT)
        if _libc.fanotify_mark(self.fd, how, mask, AT_FDCWD, os.fsencode(path)) < 0:
            err = ctypes.get_errno()
            raise FanotifyError(err, os.strerror(err), path)

    def read(self, size: int = 1 << 16) -> list[FanEvent]:
        """The events queued now (empty when there are none: the fd is non-blocking).

        Every returned event's fd is open: the caller owns and closes it.
        """
        try:
            buf = os.read(self.fd, size)
        except BlockingIOError:
            return []
        out: list[FanEvent] = []
        pos = 0
        while pos + _METADATA.size <= len(buf):
            event_len, vers, _, _, mask, fd, pid = _METADATA.unpack_from(buf, pos)
            if vers != FANOTIFY_METADATA_VERSION or event_len < _METADATA.size:
                for ev in out:
                    if ev.fd >= 0:
                        os.close(ev.fd)
                raise FanotifyError(errno.EPROTO, f"fanotify metadata version {vers}, expected 3")
            out.append(FanEvent(mask, fd, pid))
            pos += event_len
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
