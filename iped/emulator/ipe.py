"""The emulated kernel: build options, ABI profile, boot, and the public surface (security/ipe/ipe.c).

ipe_init() loads the compiled-in boot policy (unsigned, no audit record) and makes it active;
ipe_init_securityfs() then builds the tree. :class:`Emulator` is the whole emulated IPE: the
securityfs file API (``write``/``read``/``listdir``/``stat``), the LSM hooks, and the audit
queue. :class:`KernelProfile` pins every behaviour that changed between releases, so a lab
recording of one kernel can be replayed against the matching profile.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from iped.emulator import fs, hooks, securityfs
from iped.emulator.audit import AuditLog
from iped.emulator.eval import EvalState, build_eval_ctx, evaluate_event
from iped.emulator.keyring import KeyringName, Keyrings
from iped.emulator.policy import activate_boot_policy, new_policy
from iped.emulator.securityfs import Dentry, StatResult
from iped.emulator.types import HOOKS, OPS, EvalContext, FileInfo, Hook, Task

#: bound once, as eval.py's _DENY: an enum attribute lookup per event is measurable
_BPRM_CREDS_FOR_EXEC = Hook.BPRM_CREDS_FOR_EXEC


@dataclass(frozen=True, slots=True)
class KernelProfile:
    """Behaviour that differs between kernel releases (each field names its commit or release).

    * ``policy_load_errno`` (6.16, 1d887d6f): AUDIT_IPE_POLICY_LOAD gains ``errno=`` and failed
      new_policy/update writes (EPERM included) are audited.
    * ``kstrtobool_enable_disable`` (lib/kstrtox.c ae5b3500856f, taken as 6.16): ``e``/``d``.
    * ``bprm_creds_for_exec`` (6.19): the AT_EXECVE_CHECK hook exists.
    * ``reading_module_compressed`` (6.19): READING_MODULE_COMPRESSED maps to KMODULE.
    * ``empty_mac_status_record``: ipe_audit_enforce()'s second, empty 1404 record (every
      release by code reading; the lab decides).
    """

    name: str
    policy_load_errno: bool
    kstrtobool_enable_disable: bool
    bprm_creds_for_exec: bool
    reading_module_compressed: bool
    empty_mac_status_record: bool = True


PROFILES: dict[str, KernelProfile] = {
    "6.12": KernelProfile("6.12", False, False, False, False),
    "6.16": KernelProfile("6.16", True, True, False, False),
    "6.19": KernelProfile("6.19", True, True, True, True),
    "7.0": KernelProfile("7.0", True, True, True, True),
}
NEWEST_ABI = "7.0"


def _version_key(abi: str) -> tuple[int, int]:
    parts = abi.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(f"abi {abi!r} is not a kernel version like '6.12' or '7.0.3'") from None


def profile_for(abi: str) -> KernelProfile:
    """The profile of the newest listed release not newer than ``abi`` ("6.18" -> 6.16's, "7.1" -> 7.0's).

    Raises ValueError: not a version, or older than 6.12 (no IPE, or its pre-release behaviour).
    """
    want = _version_key(abi)
    fits = [p for name, p in PROFILES.items() if _version_key(name) <= want]
    if not fits:
        raise ValueError(f"abi {abi!r}: IPE is emulated from 6.12 on; known: {', '.join(PROFILES)}")
    return max(fits, key=lambda p: _version_key(p.name))


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """Kconfig options and boot parameters that change what IPE does.

    The four ``prop_*`` options make a property evaluate (off: it still parses, but evaluates
    false — both TRUE and FALSE forms of the signature properties). ``boot_policy`` is the text
    of CONFIG_IPE_BOOT_POLICY; ``enforce``/``success_audit`` are ``ipe.enforce=`` and
    ``ipe.success_audit=`` on the kernel command line.
    """

    prop_dm_verity: bool = True
    prop_dm_verity_signature: bool = True
    prop_fs_verity: bool = True
    prop_fs_verity_builtin_sig: bool = True
    policy_sig_secondary_keyring: bool = True
    policy_sig_platform_keyring: bool = True
    boot_policy: bytes | None = None
    enforce: bool = True
    success_audit: bool = False


@dataclass
class Emulator:
    """An in-process IPE: securityfs, hooks and audit, as the kernel of ``abi`` behaves.

    ``caller_has_cap_mac_admin`` is the writer's capability; ``task`` is the task named by the
    records that securityfs writes produce (auid/ses of 1421/1422/1404) and the default task of
    hook evaluations.
    """

    abi: str = NEWEST_ABI
    config: KernelConfig = field(default_factory=KernelConfig)
    caller_has_cap_mac_admin: bool = True
    task: Task = field(default_factory=lambda: Task(pid=1, comm="iped"))
    profile: KernelProfile = field(init=False)
    state: EvalState = field(init=False)
    audit: AuditLog = field(init=False, default_factory=AuditLog)
    keyrings: Keyrings = field(init=False, default_factory=Keyrings)
    policy_root: Dentry | None = field(init=False, default=None)
    boot_error: OSError | None = field(init=False, default=None)
    securityfs_error: OSError | None = field(init=False, default=None)
    _root: Dentry | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.profile = profile_for(self.abi)
        self.state = EvalState(enforce=self.config.enforce, success_audit=self.config.success_audit)
        self._init()

    def _init(self) -> None:
        """ipe_init() then ipe_init_securityfs()."""
        if self.config.boot_policy:
            try:
                activate_boot_policy(self, new_policy(self, self.config.boot_policy, None))
            except OSError as e:
                self.boot_error = e  # ipe_init() fails; hooks stay, nothing is active
        try:
            self._root = fs.init_securityfs(self)
        except OSError as e:
            self.securityfs_error = e  # the whole tree is removed

    # --- trust -----------------------------------------------------------------------------

    def trust(self, cert: bytes, keyring: KeyringName = "secondary") -> None:
        """Add a PEM or DER certificate to a keyring (``builtin``, ``secondary`` or ``platform``)."""
        self.keyrings.add(cert, keyring)

    # --- securityfs --------------------------------------------------------------------------

    def _lookup(self, path: str) -> Dentry:
        if self._root is None:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return securityfs.lookup(self._root, path)

    def write(self, path: str, data: bytes) -> int:
        """One write(2) of ``data`` to ``path`` (relative to the IPE root); raises OSError(errno)."""
        return securityfs.vfs_write(self._lookup(path), bytes(data))

    def read(self, path: str) -> bytes:
        """The whole content of ``path``; raises OSError(errno)."""
        return securityfs.vfs_read(self._lookup(path))

    def listdir(self, path: str = "") -> list[str]:
        """Entries of a directory in the kernel's readdir order."""
        return securityfs.readdir(self._lookup(path))

    def stat(self, path: str = "") -> StatResult:
        return StatResult(self._lookup(path).mode)

    def drain_audit(self) -> list[tuple[int, str]]:
        """Records emitted since the last call, oldest first: ``(type, body)``."""
        return self.audit.drain()

    # --- hooks -------------------------------------------------------------------------------

    def evaluate_event(self, ctx: EvalContext, task: Task | None = None) -> int:
        """ipe_evaluate_event(): 0 or -EACCES."""
        return evaluate_event(self.state, ctx, task or self.task, self.audit)

    def evaluate(self, op: str | None, hook: str, file: FileInfo | None, task: Task | None = None) -> None:
        """Evaluate one event directly. Raises PermissionError(EACCES) when denied and enforcing."""
        try:
            ctx = build_eval_ctx(file, OPS[op], HOOKS[hook])
        except KeyError as e:
            raise ValueError(f"unknown op or hook: {e}") from None
        if ctx.hook is _BPRM_CREDS_FOR_EXEC and not self.profile.bprm_creds_for_exec:
            raise ValueError(f"hook BPRM_CREDS_FOR_EXEC does not exist on {self.profile.name}")
        if evaluate_event(self.state, ctx, task or self.task, self.audit):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    def bprm_check(self, file: FileInfo, task: Task | None = None) -> None:
        _raise(hooks.bprm_check(self, file, task))

    def bprm_creds_for_exec(self, file: FileInfo, is_check: bool, task: Task | None = None) -> None:
        _raise(hooks.bprm_creds_for_exec(self, file, is_check, task))

    def mmap_file(self, file: FileInfo | None, prot: int, task: Task | None = None) -> None:
        _raise(hooks.mmap_file(self, file, prot, task))

    def file_mprotect(self, vma_file: FileInfo | None, vma_is_exec: bool, prot: int, task: Task | None = None) -> None:
        _raise(hooks.file_mprotect(self, vma_file, vma_is_exec, prot, task))

    def kernel_read_file(self, file: FileInfo, read_id: int, task: Task | None = None) -> None:
        _raise(hooks.kernel_read_file(self, file, read_id, task))

    def kernel_load_data(self, load_id: int, task: Task | None = None) -> None:
        _raise(hooks.kernel_load_data(self, load_id, task))


def _raise(rc: int) -> None:
    if rc:
        raise PermissionError(-rc, os.strerror(-rc))
