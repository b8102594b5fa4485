"""What the other files reach through IPE's headers: the emulated kernel's state (security/ipe/ipe.h).

The kernel's files never include ``ipe.c``: they reach ``ipe_active_policy``, ``ipe_enforce``,
``ipe_success_audit`` (eval.h), the policy root (fs.c's ``policy_root``) and the audit path
through declarations. Here :class:`Ipe` declares that state and :class:`iped.emulator.ipe.Emulator`
provides it, so ``fs``, ``policy_fs``, ``policy`` and ``hooks`` are typed against this header,
never against ``ipe.py`` (the runtime graph and the type checker's are the same, and acyclic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from iped.emulator.audit import AuditLog
    from iped.emulator.keyring import Keyrings
    from iped.emulator.securityfs import Dentry
    from iped.emulator.types import EvalContext, EvalState, KernelConfig, KernelProfile, Task


class Ipe(Protocol):
    """The emulated kernel as its files see it: build options, release, state, audit queue."""

    config: KernelConfig
    profile: KernelProfile
    state: EvalState
    audit: AuditLog
    keyrings: Keyrings
    policy_root: Dentry | None
    caller_has_cap_mac_admin: bool
    task: Task

    def evaluate_event(self, ctx: EvalContext, task: Task | None = None) -> int:
        """ipe_evaluate_event(): 0 or -EACCES."""
        ...
