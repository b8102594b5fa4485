"""The securityfs/VFS model under IPE's files: no security/ipe/ counterpart.

What securityfs (a ramfs-like filesystem: security/inode.c, fs/libfs.c) and the VFS
(fs/read_write.c, fs/namei.c) do around IPE's handlers, which decides the errnos a caller sees
before IPE runs; IPE's own handlers are in :mod:`iped.emulator.fs` and
:mod:`iped.emulator.policy_fs`.

* reading a file without a ``.read`` op or writing one without ``.write`` -> EINVAL
  (vfs_read/vfs_write: FMODE_CAN_READ / FMODE_CAN_WRITE are unset); a directory -> EISDIR;
  a missing path -> ENOENT; a file used as a directory -> ENOTDIR;
* securityfs_create_dir(): ``.``/``..``/a name with ``/`` -> EACCES (lookup_one_len),
  over NAME_MAX (255) bytes -> ENAMETOOLONG (simple_lookup), an existing entry -> EEXIST;
* readdir order: :func:`dcache_readdir_order`;
* memdup_user() (mm/util.c): the kernel's copy of a write, ENOMEM over KMALLOC_MAX_SIZE.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iped.emulator.types import kernel_error

NAME_MAX = 255

#: KMALLOC_MAX_SIZE on x86-64 (1 << (MAX_PAGE_ORDER + PAGE_SHIFT)): memdup_user() and
#: memdup_user_nul() of a larger write fail with ENOMEM before IPE looks at the bytes.
KMALLOC_MAX_SIZE = 1 << 22


def memdup_user(data: bytes, *, nul: bool) -> bytes:
    """memdup_user()/memdup_user_nul(): the kernel's copy of a write. Raises OSError: ENOMEM."""
    if len(data) + int(nul) > KMALLOC_MAX_SIZE:
        raise kernel_error(errno.ENOMEM)
    return data


ReadOp = Callable[["Dentry"], bytes]
WriteOp = Callable[["Dentry", bytes], int]


@dataclass(frozen=True, slots=True)
class FileOps:
    """``struct file_operations`` reduced to what IPE uses."""

    read: ReadOp | None = None
    write: WriteOp | None = None


@dataclass(eq=False)
class Dentry:
    """A securityfs dentry + inode: name, mode, children in creation order, fops, i_private."""

    name: str
    mode: int
    parent: Dentry | None = None
    fops: FileOps = field(default_factory=FileOps)
    private: Any = None
    children: dict[str, Dentry] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True, slots=True)
class StatResult:
    """What stat(2) shows of a securityfs inode (files have size 0)."""

    st_mode: int
    st_size: int = 0


def dcache_readdir_order(creation_order: list[str]) -> list[str]:
    """The order dcache_readdir() lists a securityfs directory in, given creation order.

    New dentries are added at the head of the parent's child list (d_alloc: hlist_add_head /
    list_add), and dcache_readdir() walks that list from the head, so the newest entry comes
    first. This is the single place to change if the lab shows otherwise.
    """
    return list(reversed(creation_order))


def dir_name_error(name: bytes) -> tuple[int, str] | None:
    """Would securityfs refuse ``name`` as a directory? (errno, why), or None if it is usable.

    The parser accepts any policy name; creating ``policies/<name>`` is what fails:
    "", "." and ".." or a "/" -> EACCES, over NAME_MAX bytes -> ENAMETOOLONG.
    """
    if name in (b"", b".", b"..") or b"/" in name:
        return errno.EACCES, f"{name.decode('utf-8', 'backslashreplace')!r} cannot be a directory name"
    if len(name) > NAME_MAX:
        return errno.ENAMETOOLONG, f"a name of {len(name)} bytes: directory names take at most {NAME_MAX}"
    return None


def _check_name(name: str) -> None:
    bad = dir_name_error(os.fsencode(name))
    if bad is not None:
        raise kernel_error(*bad)


def securityfs_create_dentry(name: str, mode: int, parent: Dentry, fops: FileOps | None = None) -> Dentry:
    """securityfs_create_dir()/securityfs_create_file(). Raises OSError: EACCES, ENAMETOOLONG, EEXIST."""
    _check_name(name)
    if name in parent.children:
        raise kernel_error(errno.EEXIST, name)
    d = Dentry(name, mode, parent, fops or FileOps())
    parent.children[name] = d
    return d


def securityfs_create_dir(name: str, parent: Dentry) -> Dentry:
    return securityfs_create_dentry(name, stat.S_IFDIR | 0o755, parent)


def securityfs_create_file(name: str, perm: int, parent: Dentry, fops: FileOps) -> Dentry:
    return securityfs_create_dentry(name, stat.S_IFREG | perm, parent, fops)


def securityfs_remove(d: Dentry) -> None:
    """securityfs_recursive_remove(): unlink ``d`` and everything below it."""
    if d.parent is not None and d.parent.children.get(d.name) is d:
        del d.parent.children[d.name]
    d.parent = None


def lookup(root: Dentry, path: str) -> Dentry:
    """Resolve ``path`` below ``root``. Raises OSError: ENOENT, ENOTDIR."""
    d = root
    for part in (p for p in path.split("/") if p not in ("", ".")):
        if not d.is_dir:
            raise kernel_error(errno.ENOTDIR, path)
        if part == "..":
            d = d.parent or d
            continue
        nxt = d.children.get(part)
        if nxt is None:
            raise kernel_error(errno.ENOENT, path)
        d = nxt
    return d


def vfs_read(d: Dentry) -> bytes:
    """read(2) of a whole file. Raises OSError: EISDIR; EINVAL no read op; the handler's errno."""
    if d.is_dir:
        raise kernel_error(errno.EISDIR)
    if d.fops.read is None:
        raise kernel_error(errno.EINVAL, "file has no read operation")
    return d.fops.read(d)


def vfs_write(d: Dentry, data: bytes) -> int:
    """One write(2). Raises OSError: EISDIR (open fails); EINVAL no write op; the handler's errno."""
    if d.is_dir:
        raise kernel_error(errno.EISDIR)
    if d.fops.write is None:
        raise kernel_error(errno.EINVAL, "file has no write operation")
    return d.fops.write(d, data)


def readdir(d: Dentry) -> list[str]:
    """getdents(2) without ``.`` and ``..``. Raises OSError: ENOTDIR."""
    if not d.is_dir:
        raise kernel_error(errno.ENOTDIR)
    return dcache_readdir_order(list(d.children))
