"""The emulated kernel: boot and the public surface (security/ipe/ipe.c).

ipe_init() loads the compiled-in boot policy (unsigned, no audit record) and makes it active;
ipe_init_securityfs() then builds the tree. :class:`Emulator` is the whole emulated IPE: the
securityfs file API (``write``/``read``/``listdir``/``stat``), the LSM hooks, and the audit
queue; it is the :class:`iped.emulator.state.Ipe` the other files are handed, as ipe.c's
globals are reached through headers. Its build options (:class:`KernelConfig`) and release
(:class:`KernelProfile`) are declared with the other header types in :mod:`iped.emulator.types`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from iped.emulator import fs, hooks, securityfs
from iped.emulator.audit import AuditLog
from iped.emulator.eval import build_eval_ctx, evaluate_event
from iped.emulator.keyring import KeyringName, Keyrings
from iped.emulator.policy import activate_boot_policy, new_policy
from iped.emulator.securityfs import Dentry, StatResult
from iped.emulator.types import (
    HOOKS,
    NEWEST_ABI,
    OPS,
    EvalContext,
    EvalState,
    FileInfo,
    Hook,
    KernelConfig,
    KernelProfile,
    Task,
    profile_for,
)

#: bound once, as eval.py's _DENY: an enum attribute lookup per event is measurable
_BPRM_CREDS_FOR_EXEC = Hook.BPRM_CREDS_FOR_EXEC


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
