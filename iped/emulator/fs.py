"""IPE's top-level securityfs files and the securityfs/VFS behaviour under them (security/ipe/fs.c).

Two concerns live here because the kernel splits them the same way around ``fs.c``: the handlers
of ``success_audit``, ``enforce`` and ``new_policy`` plus ipe_init_securityfs(), and a minimal
model of what securityfs (a ramfs-like filesystem, fs/libfs.c + security/inode.c) and the VFS
do around them, which decides the errnos a caller sees before IPE runs:

* reading a file without a ``.read`` op or writing one without ``.write`` -> EINVAL
  (vfs_read/vfs_write: FMODE_CAN_READ / FMODE_CAN_WRITE are unset); a directory -> EISDIR;
  a missing path -> ENOENT; a file used as a directory -> ENOTDIR;
* securityfs_create_dir(): ``.``/``..``/a name with ``/`` -> EACCES (lookup_one_len),
  over NAME_MAX (255) bytes -> ENAMETOOLONG (simple_lookup), an existing entry -> EEXIST;
* readdir order: :func:`dcache_readdir_order`.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iped.emulator.audit import AUDIT_IPE_POLICY_LOAD, AUDIT_MAC_STATUS, audit_enforce, audit_policy_load

if TYPE_CHECKING:
    from iped.emulator.ipe import Emulator

NAME_MAX = 255

#: KMALLOC_MAX_SIZE on x86-64 (1 << (MAX_PAGE_ORDER + PAGE_SHIFT)): memdup_user() and
#: memdup_user_nul() of a larger write fail with ENOMEM before IPE looks at the bytes.
KMALLOC_MAX_SIZE = 1 << 22


def memdup_user(data: bytes, *, nul: bool) -> bytes:
    """memdup_user()/memdup_user_nul(): the kernel's copy of a write. Raises OSError: ENOMEM."""
    if len(data) + int(nul) > KMALLOC_MAX_SIZE:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
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


def _err(err: int, what: str = "") -> OSError:
    return OSError(err, os.strerror(err) + (f": {what}" if what else ""))


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
        raise _err(*bad)


def securityfs_create_dentry(name: str, mode: int, parent: Dentry, fops: FileOps | None = None) -> Dentry:
    """securityfs_create_dir()/securityfs_create_file(). Raises OSError: EACCES, ENAMETOOLONG, EEXIST."""
    _check_name(name)
    if name in parent.children:
        raise _err(errno.EEXIST, name)
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
            raise _err(errno.ENOTDIR, path)
        if part == "..":
            d = d.parent or d
            continue
        nxt = d.children.get(part)
        if nxt is None:
            raise _err(errno.ENOENT, path)
        d = nxt
    return d


def vfs_read(d: Dentry) -> bytes:
    """read(2) of a whole file. Raises OSError: EISDIR; EINVAL no read op; the handler's errno."""
    if d.is_dir:
        raise _err(errno.EISDIR)
    if d.fops.read is None:
        raise _err(errno.EINVAL, "file has no read operation")
    return d.fops.read(d)


def vfs_write(d: Dentry, data: bytes) -> int:
    """One write(2). Raises OSError: EISDIR (open fails); EINVAL no write op; the handler's errno."""
    if d.is_dir:
        raise _err(errno.EISDIR)
    if d.fops.write is None:
        raise _err(errno.EINVAL, "file has no write operation")
    return d.fops.write(d, data)


def readdir(d: Dentry) -> list[str]:
    """getdents(2) without ``.`` and ``..``. Raises OSError: ENOTDIR."""
    if not d.is_dir:
        raise _err(errno.ENOTDIR)
    return dcache_readdir_order(list(d.children))


# --- lib/kstrtox.c ------------------------------------------------------------------------------


def kstrtobool(s: bytes, *, enable_disable: bool) -> bool:
    """kstrtobool(): decide on the first (two) bytes of a NUL-terminated string.

    ``1yYtT`` true, ``0nNfF`` false, ``o``+``nN`` true, ``o``+``fF`` false (case-insensitive
    ``o``), and with ``enable_disable`` (lib/kstrtox.c commit ae5b3500856f) ``eE`` true and
    ``dD`` false. Raises OSError: EINVAL anything else (including an empty string).
    """
    nul = s.find(b"\0")
    if nul >= 0:
        s = s[:nul]
    first = s[:1]
    if first and first in b"1yYtT":
        return True
    if first and first in b"0nNfF":
        return False
    if enable_disable and first and first in b"eE":
        return True
    if enable_disable and first and first in b"dD":
        return False
    if first in (b"o", b"O"):
        second = s[1:2]
        if second and second in b"nN":
            return True
        if second and second in b"fF":
            return False
    raise _err(errno.EINVAL, "not a boolean")


def kstrtobool_from_user(data: bytes, *, enable_disable: bool) -> bool:
    """kstrtobool_from_user(): only the first three bytes are copied (then NUL-terminated)."""
    return kstrtobool(data[:3], enable_disable=enable_disable)


# --- fs.c handlers ------------------------------------------------------------------------------


def _require_cap(emu: Emulator) -> None:
    if not emu.caller_has_cap_mac_admin:
        raise _err(errno.EPERM, "CAP_MAC_ADMIN is required")


def setaudit(emu: Emulator, data: bytes) -> int:
    """Write ``success_audit``: never audited. Raises OSError: EPERM; EINVAL not a boolean."""
    _require_cap(emu)
    emu.state.success_audit = kstrtobool_from_user(data, enable_disable=emu.profile.kstrtobool_enable_disable)
    return len(data)


def getaudit(emu: Emulator) -> bytes:
    return b"1" if emu.state.success_audit else b"0"


def setenforce(emu: Emulator, data: bytes) -> int:
    """Write ``enforce``: AUDIT_MAC_STATUS only when the value changes. Raises OSError: EPERM, EINVAL."""
    _require_cap(emu)
    old = emu.state.enforce
    new = kstrtobool_from_user(data, enable_disable=emu.profile.kstrtobool_enable_disable)
    if new != old:
        emu.audit.log(AUDIT_MAC_STATUS, audit_enforce(new, old, emu.task))
        if emu.profile.empty_mac_status_record:
            emu.audit.log(AUDIT_MAC_STATUS, b"")
        emu.state.enforce = new
    return len(data)


def getenforce(emu: Emulator) -> bytes:
    return b"1" if emu.state.enforce else b"0"


def new_policy(emu: Emulator, data: bytes) -> int:
    """Write ``new_policy``: verify, parse, create ``policies/<name>/``; the policy stays inactive.

    Raises OSError: EPERM no CAP_MAC_ADMIN; signature errnos (EBADMSG, ENOKEY, EKEYREJECTED,
    ENOPKG, ENODATA); parser errnos (EBADMSG, EINVAL, ERANGE); EEXIST same name already loaded;
    EACCES/ENAMETOOLONG name unusable as a directory. 6.12-6.15 audit successes only; 6.16+
    audit every attempt (AUDIT_IPE_POLICY_LOAD with ``errno=``), including EPERM.
    """
    from iped.emulator.policy import new_policy as ipe_new_policy
    from iped.emulator.policy_fs import new_policyfs_node

    errno_field = emu.profile.policy_load_errno
    try:
        _require_cap(emu)
        p = ipe_new_policy(emu, None, memdup_user(data, nul=True))
        new_policyfs_node(emu, p)
    except OSError as e:
        if errno_field:
            emu.audit.log(AUDIT_IPE_POLICY_LOAD, audit_policy_load(-(e.errno or errno.EIO), emu.task, errno_field=True))
        raise
    emu.audit.log(AUDIT_IPE_POLICY_LOAD, audit_policy_load(p, emu.task, errno_field=errno_field))
    return len(data)


def init_securityfs(emu: Emulator) -> Dentry:
    """ipe_init_securityfs(): success_audit, enforce, policies/, the boot policy's dir, new_policy.

    Raises OSError if the boot policy's directory cannot be created (the kernel then removes
    the whole tree).
    """
    from iped.emulator.policy_fs import new_policyfs_node

    root = Dentry("ipe", stat.S_IFDIR | 0o755)
    securityfs_create_file(
        "success_audit", 0o600, root, FileOps(lambda d: getaudit(emu), lambda d, b: setaudit(emu, b))
    )
    securityfs_create_file("enforce", 0o600, root, FileOps(lambda d: getenforce(emu), lambda d, b: setenforce(emu, b)))
    emu.policy_root = securityfs_create_dir("policies", root)
    if emu.state.active is not None:
        new_policyfs_node(emu, emu.state.active)
    securityfs_create_file("new_policy", 0o200, root, FileOps(None, lambda d, b: new_policy(emu, b)))
    return root
