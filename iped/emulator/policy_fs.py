"""Files of one policy directory, ``policies/<name>/`` (security/ipe/policy_fs.c).

:data:`POLICY_SUBDIR` is the kernel's ``policy_subdir[]`` table: ``(name, mode, read, write)``
in creation order. Each handler finds its policy through the directory's ``i_private`` (a
:class:`~iped.emulator.policy.PolicyNode`) and reports ENOENT once it is gone.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING

from iped.emulator.audit import AUDIT_IPE_POLICY_LOAD, audit_policy_load
from iped.emulator.kstrtox import kstrtobool_from_user
from iped.emulator.policy import PolicyNode, set_active_pol, update_policy
from iped.emulator.policy_parser import name_str
from iped.emulator.securityfs import (
    Dentry,
    FileOps,
    memdup_user,
    securityfs_create_dir,
    securityfs_create_file,
    securityfs_remove,
)
from iped.emulator.types import Policy, kernel_error

if TYPE_CHECKING:
    from iped.emulator.state import Ipe


def _node(d: Dentry) -> PolicyNode:
    assert d.parent is not None
    node = d.parent.private
    assert isinstance(node, PolicyNode)
    return node


def _policy(d: Dentry) -> Policy:
    p = _node(d).policy
    if p is None:
        raise kernel_error(errno.ENOENT, "the policy was deleted")
    return p


def read_pkcs7(emu: Ipe, d: Dentry) -> bytes:
    """The blob as written. Raises OSError: ENOENT deleted, or an unsigned (boot) policy."""
    p = _policy(d)
    if p.pkcs7 is None:
        raise kernel_error(errno.ENOENT, "the boot policy is not signed")
    return p.pkcs7


def read_policy(emu: Ipe, d: Dentry) -> bytes:
    return _policy(d).text


def read_name(emu: Ipe, d: Dentry) -> bytes:
    return _policy(d).parsed.name


def read_version(emu: Ipe, d: Dentry) -> bytes:
    return str(_policy(d).parsed.version).encode()


def getactive(emu: Ipe, d: Dentry) -> bytes:
    return b"1" if _policy(d) is emu.state.active else b"0"


def _bool_true(emu: Ipe, data: bytes) -> None:
    """The common head of setactive()/delete_policy(): EPERM, then EINVAL unless true."""
    if not emu.caller_has_cap_mac_admin:
        raise kernel_error(errno.EPERM, "CAP_MAC_ADMIN is required")
    if not kstrtobool_from_user(data, enable_disable=emu.profile.kstrtobool_enable_disable):
        raise kernel_error(errno.EINVAL, "only a true value is accepted")


def setactive(emu: Ipe, d: Dentry, data: bytes) -> int:
    """Raises OSError: EPERM; EINVAL not true / older than the active policy; ENOENT deleted."""
    _bool_true(emu, data)
    set_active_pol(emu, _policy(d))
    return len(data)


def update(emu: Ipe, d: Dentry, data: bytes) -> int:
    """update_policy(): Raises OSError as policy.update_policy() (EPERM first); 6.16+ audits failures."""
    try:
        if not emu.caller_has_cap_mac_admin:
            raise kernel_error(errno.EPERM, "CAP_MAC_ADMIN is required")
        update_policy(emu, _node(d), memdup_user(data, nul=False))
    except OSError as e:
        if emu.profile.policy_load_errno:
            emu.audit.log(AUDIT_IPE_POLICY_LOAD, audit_policy_load(-(e.errno or errno.EIO), emu.task, errno_field=True))
        raise
    return len(data)


def delete_policy(emu: Ipe, d: Dentry, data: bytes) -> int:
    """Raises OSError: EPERM no capability or the active policy; EINVAL not true; ENOENT deleted."""
    _bool_true(emu, data)
    node = _node(d)
    p = node.policy
    if p is None:
        raise kernel_error(errno.ENOENT, "the policy was deleted")
    if p is emu.state.active:
        raise kernel_error(errno.EPERM, "the active policy cannot be deleted")
    node.policy = None
    assert d.parent is not None
    securityfs_remove(d.parent)
    return len(data)


Reader = Callable[["Ipe", Dentry], bytes]
Writer = Callable[["Ipe", Dentry, bytes], int]

#: policy_subdir[]: (name, mode, read, write), in creation order.
POLICY_SUBDIR: tuple[tuple[str, int, Reader | None, Writer | None], ...] = (
    ("pkcs7", 0o444, read_pkcs7, None),
    ("policy", 0o444, read_policy, None),
    ("name", 0o444, read_name, None),
    ("version", 0o444, read_version, None),
    ("active", 0o600, getactive, setactive),
    ("update", 0o200, None, update),
    ("delete", 0o200, None, delete_policy),
)


def _fops(emu: Ipe, read: Reader | None, write: Writer | None) -> FileOps:
    return FileOps(
        (lambda d: read(emu, d)) if read is not None else None,
        (lambda d, b: write(emu, d, b)) if write is not None else None,
    )


def new_policyfs_node(emu: Ipe, p: Policy) -> None:
    """ipe_new_policyfs_node(): ``policies/<name>/`` with the seven files.

    Raises OSError: EEXIST same name; EACCES/ENAMETOOLONG unusable name.
    """
    assert emu.policy_root is not None
    d = securityfs_create_dir(name_str(p.parsed.name), emu.policy_root)
    for name, mode, read, write in POLICY_SUBDIR:
        securityfs_create_file(name, mode, d, _fops(emu, read, write))
    d.private = PolicyNode(p)
