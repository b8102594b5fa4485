"""Who can change a path iped reads with authority: checked before use, in one place.

iped takes a declaration, a key, a record or a reply as root's word only from a path that no one
else can change -- the file itself and every directory on the way to it. The rule is sshd's
``StrictModes`` and sudo's: each component is owned by root or by iped's own (effective) user and
is not writable by group or others. A root-owned sticky directory (``/tmp``, ``/var/tmp``) is fine
as an *ancestor*, as it is for everyone: there only the owner of an entry may rename or remove it,
and the entry below must pass the rule itself. The path's own last component gets no such
exception (a ``state_dir`` of ``/tmp`` is refused). Symbolic links on the way are followed the
way the kernel follows them, each link's directory checked, and in a sticky directory the link's
owner too (it can replace its link).

Used for: the config file, the drop-in dir and its files, the state_dir (and ``rolled-forward/``,
``texts/``, ``plans/``), the signing key (private: no group/other access at all) and certificate,
the trust anchors, the Prometheus textfile dir, and the control socket and its directory (the CLI
asks whether a reply can be the daemon's). Standard library only: the CLI's fast path imports it.
"""

from __future__ import annotations

import errno
import os
import stat

_MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS


class UntrustedPathError(OSError):
    """``path`` (or a directory on the way to it) can be changed by someone iped does not trust.

    An OSError (EPERM) so that callers which word filesystem errors word this one too; ``str()``
    is the whole one-line explanation, naming the path and who can write it."""

    def __init__(self, path: str, why: str, fix: str) -> None:
        super().__init__(errno.EPERM, why, path)
        self.why = why
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.filename}: {self.why} (hint: {self.fix})"


def error_line(e: OSError) -> str:
    """One line for a failed check or read: the path, then what is wrong (and for a plain
    filesystem error its errno name)."""
    if isinstance(e, UntrustedPathError):
        return str(e)
    return f"{e.filename}: {errno.errorcode.get(e.errno or 0, e.errno)}: {e.strerror or e}"


def trusted_uids() -> frozenset[int]:
    """root and the user iped runs as (a user's own dev daemon and CLI trust that user)."""
    return frozenset({0, os.geteuid()})


def _user(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    import grp

    try:
        return f"group {gid} ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return f"group {gid}"


def _who_trusted() -> str:
    uid = os.geteuid()
    return "root" if uid == 0 else f"root or {_user(uid)}"


def _owner_problem(path: str, st: os.stat_result, owners: frozenset[int], what: str) -> None:
    if st.st_uid not in owners:
        raise UntrustedPathError(
            path, f"owned by {_user(st.st_uid)}, who is not {_who_trusted()}: that user can change "
            f"what iped would take as {what}", f"chown root {path}, or remove it if you did not create it")


def _writers_problem(path: str, st: os.stat_result, what: str) -> None:
    mode = st.st_mode & 0o7777
    if mode & 0o002:
        who = "every user"
    elif mode & 0o020:
        who = f"{_group(st.st_gid)}"
    else:
        return
    raise UntrustedPathError(path, f"writable by {who} (mode {mode:04o}): they can change what iped would take "
                                   f"as {what}", f"chmod go-w {path}")


def _check_ancestor(path: str, st: os.stat_result, owners: frozenset[int], what: str) -> None:
    """A directory on the way: trusted owner, and not writable by others unless it is a sticky
    directory owned by root (then only an entry's owner can replace it: the entry is checked)."""
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    _owner_problem(path, st, owners, what)
    if st.st_mode & stat.S_ISVTX and st.st_uid == 0:
        return
    _writers_problem(path, st, what)


def check_path(path: str | os.PathLike[str], what: str, *, private: bool = False,
               owners: frozenset[int] | None = None, any_owner: bool = False) -> os.stat_result:
    """Check ``path`` and every directory on the way to it; return the stat of what it names.

    ``what`` says what iped takes from it ("the configuration", "the signing key"), for the error.
    ``private``: no access at all by group or others (a private key). ``owners``: the trusted
    uids (default :func:`trusted_uids`). ``any_owner``: the last component may be owned by anyone
    (it is still not writable by others; the Prometheus textfile dir belongs to the collector's
    user). Raises UntrustedPathError (EPERM), or the OSError of a component that cannot be looked
    up (ENOENT, EACCES, ENOTDIR, ELOOP).
    """
    trusted = trusted_uids() if owners is None else owners
    full = os.path.abspath(os.fspath(path))
    pending = [p for p in full.split("/") if p][::-1]  # a stack: the next component last
    current = "/"
    cur_st = os.lstat(current)
    _check_ancestor(current, cur_st, trusted, what)
    links = 0
    final_checked = False
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)  # current has no links in it: lexical is right
            cur_st = os.lstat(current)
            final_checked = False
            continue
        candidate = os.path.join(current, name)
        st = os.lstat(candidate)
        sticky_parent = bool(cur_st.st_mode & stat.S_ISVTX)
        if stat.S_ISLNK(st.st_mode):
            if sticky_parent:  # in a sticky directory the link's owner may replace it
                _owner_problem(candidate, st, trusted, what)
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), full)
            target = os.readlink(candidate)
            if target.startswith("/"):
                current, cur_st = "/", os.lstat("/")
            pending.extend(p for p in target.split("/")[::-1] if p)
            continue
        if pending and any(p not in (".", "") for p in pending):
            _check_ancestor(candidate, st, trusted, what)
        else:
            check_stat(candidate, st, what, private=private, owners=trusted, any_owner=any_owner)
            final_checked = True
        current, cur_st = candidate, st
    if not final_checked:  # "/" itself, or a path that ends in ".." (through a link's target)
        check_stat(current, cur_st, what, private=private, owners=trusted, any_owner=any_owner)
    return os.stat(current)


def check_stat(path: str, st: os.stat_result, what: str, *, private: bool = False,
               owners: frozenset[int] | None = None, any_owner: bool = False) -> None:
    """The rule for the object itself, on an ``lstat``/``fstat`` result (an open file's fstat
    checks exactly what was read). A socket's group bits are its access control, not writers."""
    trusted = trusted_uids() if owners is None else owners
    if not any_owner:
        _owner_problem(path, st, trusted, what)
    mode = st.st_mode & 0o7777
    if private and mode & 0o077:
        raise UntrustedPathError(path, f"{what} is accessible by group or others (mode {mode:04o}); "
                                       "refusing to use it", f"chmod 600 {path}")
    if stat.S_ISSOCK(st.st_mode):
        if mode & 0o002:
            raise UntrustedPathError(path, f"any user may use it (mode {mode:04o})", f"chmod o-rwx {path}")
        return
    _writers_problem(path, st, what)


def read_trusted(path: str | os.PathLike[str], what: str, *, private: bool = False,
                 limit: int = 1 << 20) -> bytes:
    """The bytes of a file that passed :func:`check_path`, read from the very inode that was
    checked: a file swapped in between the check and the open is refused, never read."""
    checked = check_path(path, what, private=private)
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino):
            raise UntrustedPathError(os.fspath(path), f"{what} was replaced while iped checked it",
                                     "make sure nothing rewrites it in place, then retry")
        check_stat(os.fspath(path), st, what, private=private)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{what} is not a regular file", os.fspath(path))
        chunks = []
        size = 0
        while size <= limit and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, f"{what} is over {limit} bytes", os.fspath(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


#: how the signing key is named in errors (``iped sign``, check-config, the daemon, rollback)
PRIVATE_KEY = "private key"


def read_private_key(path: str | os.PathLike[str]) -> bytes:
    """The signing key, under the one rule for it everywhere (``iped sign``, ``check-config``, the
    daemon's signing, ``rollback``): the trusted-path rule, and no access at all by group or
    others -- a key others can read signs policies the kernel trusts in their name."""
    return read_trusted(path, PRIVATE_KEY, private=True)


def check_private_key(path: str | os.PathLike[str]) -> None:
    """:func:`read_private_key`'s rule without reading the key (a dry run says it too)."""
    check_path(path, PRIVATE_KEY, private=True)
