"""A faithful in-process emulator of the kernel's IPE LSM, one module per file of security/ipe/.

Hold each module next to its C file: ``policy_parser`` (policy_parser.c; the one parser of the
policy language, shared with ``iped validate`` and the daemon), ``digest`` (digest.c),
``policy`` (policy.c), ``fs`` (fs.c: ``enforce``, ``success_audit``, ``new_policy``),
``policy_fs`` (policy_fs.c: ``policies/<name>/*``), ``eval`` (eval.c), ``hooks`` (hooks.c),
``audit`` (audit.c), ``ipe`` (ipe.c: boot, the :class:`Emulator` surface), ``types``
(the headers: ``Hook``, ``MatchType``, ``EvalContext``, ``FileInfo``, ``Task``, ``Policy``, Kconfig and
release) and ``state`` (ipe.h: the kernel's shared state as the other files reach it). Around them, with
no security/ipe/ counterpart: ``securityfs`` (the securityfs/VFS model), ``kstrtox``
(lib/kstrtox.c), ``keyring`` (which keyrings verify a policy) and ``compiled`` (the indexed
policy the kernel's linear scan is compared with). Reading a real file's properties from this
host is not emulation: it lives in :mod:`iped.discovery`.

``Emulator`` is the whole engine (securityfs files, LSM hooks, audit records); ``FileInfo`` the
facts about a file the kernel evaluates; ``Task`` the task an audit record names. Heavy modules
(the emulator, cryptography) load only when these names are first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iped.emulator.ipe import Emulator
    from iped.emulator.types import FileInfo, KernelConfig, KernelProfile, Task

__all__ = ["Emulator", "FileInfo", "KernelConfig", "KernelProfile", "Task"]


def __getattr__(name: str) -> Any:
    if name == "Emulator":
        from iped.emulator import ipe

        return getattr(ipe, name)
    if name in ("FileInfo", "KernelConfig", "KernelProfile", "Task"):
        from iped.emulator import types

        return getattr(types, name)
    raise AttributeError(name)
