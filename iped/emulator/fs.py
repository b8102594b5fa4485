"""IPE's top-level securityfs files (security/ipe/fs.c).

The handlers of ``success_audit``, ``enforce`` and ``new_policy``, and ipe_init_securityfs()
which creates them with ``policies/`` between. The files of one policy directory are in
:mod:`iped.emulator.policy_fs`; what securityfs and the VFS do around the handlers (lookup,
EISDIR/EINVAL, directory names) is in :mod:`iped.emulator.securityfs`.
"""

from __future__ import annotations

import errno
import stat
from typing import TYPE_CHECKING

from iped.emulator.audit import AUDIT_IPE_POLICY_LOAD, AUDIT_MAC_STATUS, audit_enforce, audit_policy_load
from iped.emulator.kstrtox import kstrtobool_from_user
from iped.emulator.policy import new_policy as ipe_new_policy
from iped.emulator.policy_fs import new_policyfs_node
from iped.emulator.securityfs import (
    Dentry,
    FileOps,
    memdup_user,
    securityfs_create_dir,
    securityfs_create_file,
)
from iped.emulator.types import kernel_error

if TYPE_CHECKING:
    from iped.emulator.state import Ipe


def _require_cap(emu: Ipe) -> None:
    if not emu.caller_has_cap_mac_admin:
        raise kernel_error(errno.EPERM, "CAP_MAC_ADMIN is required")


def setaudit(emu: Ipe, data: bytes) -> int:
    """Write ``success_audit``: never audited. Raises OSError: EPERM; EINVAL not a boolean."""
    _require_cap(emu)
    emu.state.success_audit = kstrtobool_from_user(data, enable_disable=emu.profile.kstrtobool_enable_disable)
    return len(data)


def getaudit(emu: Ipe) -> bytes:
    return b"1" if emu.state.success_audit else b"0"


def setenforce(emu: Ipe, data: bytes) -> int:
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


def getenforce(emu: Ipe) -> bytes:
    return b"1" if emu.state.enforce else b"0"


def new_policy(emu: Ipe, data: bytes) -> int:
    """Write ``new_policy``: verify, parse, create ``policies/<name>/``; the policy stays inactive.

    Raises OSError: EPERM no CAP_MAC_ADMIN; signature errnos (EBADMSG, ENOKEY, EKEYREJECTED,
    ENOPKG, ENODATA); parser errnos (EBADMSG, EINVAL, ERANGE); EEXIST same name already loaded;
    EACCES/ENAMETOOLONG name unusable as a directory. 6.12-6.15 audit successes only; 6.16+
    audit every attempt (AUDIT_IPE_POLICY_LOAD with ``errno=``), including EPERM.
    """
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


def init_securityfs(emu: Ipe) -> Dentry:
    """ipe_init_securityfs(): success_audit, enforce, policies/, the boot policy's dir, new_policy.

    Raises OSError if the boot policy's directory cannot be created (the kernel then removes
    the whole tree).
    """
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
