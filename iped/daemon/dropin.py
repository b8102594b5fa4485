"""Reading a drop-in dir safely: which names stand for policies, and the bytes of one file.

Every name that looks like a policy is read by :func:`read_policy_file`, which trusts nothing
about the directory: a symlink is refused (never followed), anything but a regular file is
reported without being opened, a file over the kernel's size limit is refused by its size, and a
file someone still holds open for writing is not read at all (a read lease, see
:func:`held_for_writing`). Each of these rejects the plan: a name that cannot be read never
counts as a deleted policy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import os
import signal
import stat
from pathlib import Path

from iped.daemon.declared import DeclError, fs_error, untrusted
from iped.policyfile import MAX_POLICY_BYTES, size_problem
from iped.trustpath import UntrustedPathError, check_stat

#: Files in the drop-in dir that are never policies: editor, package-manager and Ansible temporaries.
IGNORED_PATTERNS = (".*", "*~", "*.dpkg-*", "*.rpm*", ".ansible_tmp*", "*.swp", "*.tmp")
SIGNED_SUFFIX = ".p7s"
PLAIN_SUFFIX = ".pol"


def is_ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in IGNORED_PATTERNS)


def policy_files(directory: Path) -> list[Path]:
    """Every name that stands for a policy, sorted; temporaries and unknown suffixes are skipped.

    Whatever the name is (a symlink, a FIFO, a directory) it is listed: :func:`read_policy_file`
    says why it cannot be a policy. Raises OSError when the directory cannot be listed.
    """
    return [directory / n for n in sorted(os.listdir(directory))
            if not is_ignored(n) and n.endswith((SIGNED_SUFFIX, PLAIN_SUFFIX))]



def declares(path: Path, name: str) -> bool:
    """Does this (broken) file stand for policy ``name``? Its file name says so: ``name.pol``."""
    return path.name in (name + PLAIN_SUFFIX, name + SIGNED_SUFFIX)


#: lstat() file types -> how a non-regular file is named in errors
_FILE_TYPES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def _not_a_policy_file(path: Path, st: os.stat_result) -> DeclError | None:
    """Why this lstat() result cannot be read as a policy (None: a regular file of sane size)."""
    if stat.S_ISLNK(st.st_mode):
        return DeclError(str(path), None, errno.ELOOP,
                         "is a symbolic link: links in the drop-in dir are never followed; copy the file in "
                         "(write a temporary name, then rename it)", plain=True)
    if stat.S_ISDIR(st.st_mode):
        return DeclError(str(path), None, errno.EISDIR, "is a directory, named like a policy file", plain=True)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_TYPES if test(st.st_mode)), "a special file")
        return DeclError(str(path), None, errno.EINVAL, f"not a regular file ({kind}); not opened", plain=True)
    too_large = size_problem(st.st_size)
    if too_large is not None:
        return DeclError(str(path), None, too_large.errno, f"{too_large.reason}, so the file is not read")
    return None


def held_for_writing(fd: int, st: os.stat_result) -> bool:
    """Is the file behind ``fd`` (opened read-only) open for writing by anyone?

    The exact and cheap test is a read lease: F_SETLEASE F_RDLCK fails with EAGAIN while any
    descriptor or shared mapping has the inode open for writing. It is kept while the caller
    reads (a writer's open() then waits for :func:`release_lease`, microseconds), so the bytes
    read are the bytes of a closed file. A lease needs the file's owner uid or CAP_LEASE and a
    filesystem with leases; without them the /proc/*/fd scan answers instead (slower, and blind
    to processes hidden from us).
    """
    try:
        # a broken lease signals us; SIGURG is ignored by default (SIGIO, the default, would kill us)
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        return False
    except OSError as e:
        if e.errno == errno.EAGAIN:
            return True
    return writer_in_proc(st)


def release_lease(fd: int) -> None:
    with contextlib.suppress(OSError):  # no lease was taken (the /proc scan answered)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def writer_in_proc(st: os.stat_result) -> bool:
    """Does any process we can see hold the inode ``st`` open with write access?"""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.stat(f"/proc/{pid}/fd/{fd}")
                if (target.st_dev, target.st_ino) != (st.st_dev, st.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as info:
                    flags = next(int(line.split()[1], 8) for line in info if line.startswith(b"flags:"))
            except (OSError, StopIteration, ValueError, IndexError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                return True
    return False


def is_being_written(path: Path) -> bool:
    """Is ``path`` a regular file someone holds open for writing? (A symlink, FIFO or a name that
    is gone is not: it will not change by being written.)"""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        held = held_for_writing(fd, os.fstat(fd))
        release_lease(fd)
        return held
    finally:
        os.close(fd)


def read_policy_file(path: Path) -> bytes | DeclError:
    """The bytes of one drop-in file, or why they are not to be had.

    Never follows a symlink (lstat, then O_NOFOLLOW), never opens anything but a regular file
    and opens that with O_NONBLOCK (a FIFO swapped in after the lstat cannot block the loop),
    refuses by size before reading (fstat; at most MAX_POLICY_BYTES are ever read), and does not
    read a file that someone still holds open for writing (EBUSY: it is read on IN_CLOSE_WRITE).
    """
    try:
        bad = _not_a_policy_file(path, os.lstat(path))
        if bad is not None:
            return bad
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a symlink after the lstat
            return DeclError(str(path), None, errno.ELOOP, "is a symbolic link: never followed", plain=True)
        return fs_error(path, e, "cannot open")
    try:
        st = os.fstat(fd)
        bad = _not_a_policy_file(path, st)
        if bad is not None:
            return bad
        try:  # the inode read: its owner and mode (the directory was checked by the caller)
            check_stat(str(path), st, "a declared policy")
        except UntrustedPathError as e:
            return untrusted(e)
        if held_for_writing(fd, st):
            return DeclError(str(path), None, errno.EBUSY,
                             "still open for writing by another process: it is read once closed. Write "
                             "policies to a temporary name (.*, *.tmp) and rename them in", plain=True)
        try:
            data = os.read(fd, MAX_POLICY_BYTES + 1)
            while len(data) <= MAX_POLICY_BYTES and (more := os.read(fd, MAX_POLICY_BYTES + 1 - len(data))):
                data += more
        finally:
            release_lease(fd)
    except OSError as e:
        return fs_error(path, e, "cannot read")
    finally:
        os.close(fd)
    if len(data) > MAX_POLICY_BYTES:
        return DeclError(str(path), None, errno.EMSGSIZE, f"grew over {MAX_POLICY_BYTES} bytes while read")
    return data

