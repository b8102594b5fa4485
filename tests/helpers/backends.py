"""A securityfs backend for in-process daemon tests: the emulator posing as the kernel."""

from __future__ import annotations

from iped.backend import KERNEL_CAPABILITIES, Backend


class PosingAsKernel:
    """The emulator backend with kind "kernel": the deployed case, where no emulator shortcut
    (the emulator enforces nothing) can make readiness look right. ``listings`` counts the reads
    of the policy list, i.e. how often the daemon looked at the kernel's state."""

    kind = "kernel"
    capabilities = KERNEL_CAPABILITIES

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.reason = "the emulator posing as the kernel"
        self.listings = 0

    def read(self, path: str) -> bytes:
        return self.inner.read(path)

    def write(self, path: str, data: bytes) -> int:
        return self.inner.write(path, data)

    def listdir(self, path: str) -> list[str]:
        if path == "policies":
            self.listings += 1
        return self.inner.listdir(path)
