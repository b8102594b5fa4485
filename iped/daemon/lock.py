"""Whether a daemon is running is answered by a lock, not by whether it answers a ping.

A busy daemon (a long reload, a full accept queue, SIGSTOP) does not answer for seconds; taking
its silence for death made a second daemon delete and re-create the control socket, leaving the
first one unreachable. Instead each daemon holds ``flock(LOCK_EX)`` on ``<control_socket>.lock``
next to its socket for as long as it runs (the kernel drops the lock when the process dies, however
it dies), and only the holder may remove a stale socket.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path


class DaemonLockError(Exception):
    """Another daemon holds the lock, or the lock file cannot be used."""


def lock_path(control_socket: Path) -> Path:
    return control_socket.with_name(control_socket.name + ".lock")


class DaemonLock:
    """The held lock; keep it for the daemon's lifetime (closing the fd releases it)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def acquire(control_socket: Path) -> DaemonLock:
    """Lock ``<control_socket>.lock`` (creating the runtime dir and the file), without waiting.

    Raises DaemonLockError naming the holder's pid when another daemon holds it, or when
    ``control_socket`` exists and is not a socket (nothing is created or removed then).
    """
    try:
        if not stat.S_ISSOCK(os.lstat(control_socket).st_mode):
            raise DaemonLockError(f"control_socket {control_socket} exists and is not a socket; refusing to "
                                  "replace it (fix [daemon] control_socket)")
    except FileNotFoundError:
        pass
    from iped.trustpath import UntrustedPathError, check_path, check_stat

    path = lock_path(control_socket)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:  # whoever can change the directory can swap the socket, or hold the lock
        check_path(path.parent, "the control socket's directory")
    except UntrustedPathError as e:
        raise DaemonLockError(str(e)) from None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise DaemonLockError(f"{path}: cannot open the daemon lock: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DaemonLockError(f"{path}: the daemon lock is not a regular file")
        try:  # a lock file others can open is a lock others can hold
            check_stat(os.fspath(path), st, "the daemon lock", private=True)
        except UntrustedPathError as e:
            raise DaemonLockError(str(e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DaemonLockError(f"{path}: cannot lock: {e.strerror}") from None
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise DaemonLockError(
                f"another iped daemon (pid {holder}) is running for {control_socket}: it holds {path} "
                "(it may be busy rather than dead; stop it first)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return DaemonLock(path, fd)
