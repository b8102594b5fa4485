"""A faithful in-process emulator of the kernel's IPE LSM (security/ipe/).

``Emulator`` is the whole engine (securityfs files, LSM hooks, audit records); ``FileInfo`` the
facts about a file the kernel evaluates; ``Task`` the task an audit record names. Heavy modules
(the emulator, cryptography) load only when these names are first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iped.emulator.eval import FileInfo, Task
    from iped.emulator.ipe import Emulator, KernelConfig, KernelProfile

__all__ = ["Emulator", "FileInfo", "KernelConfig", "KernelProfile", "Task"]


def __getattr__(name: str) -> Any:
    if name in ("Emulator", "KernelConfig", "KernelProfile"):
        from iped.emulator import ipe

        return getattr(ipe, name)
    if name in ("FileInfo", "Task"):
        from iped.emulator import eval as _eval

        return getattr(_eval, name)
    raise AttributeError(name)
