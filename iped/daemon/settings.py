"""Frozen, validated configuration as the core sees it (no pydantic here: see iped.config).

``iped.config`` validates ``iped.toml`` at the edge and converts it into :class:`Settings`; every
other module takes a ``Settings`` and never imports pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/iped/iped.toml")
DEFAULT_SOCKET = Path("/run/iped/control.sock")


class BackendKind(StrEnum):
    """Where securityfs writes go: decided by ``auto``, or forced."""

    AUTO = "auto"
    KERNEL = "kernel"
    EMULATOR = "emulator"


class AuditSource(StrEnum):
    """Where the audit follower reads IPE records from (consumed by iped.audit)."""

    AUTO = "auto"
    NETLINK = "netlink"
    JOURNAL = "journal"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """``[policies]``: what the daemon makes true in the kernel."""

    dir: Path = Path("/etc/iped/policies.d")
    active: str | None = None
    enforce: bool = True
    success_audit: bool = False
    trust_anchors: tuple[Path, ...] = ()
    signing_key: Path | None = None
    signing_cert: Path | None = None
    protect: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """``[daemon]``: where the daemon keeps its records and listens."""

    backend: BackendKind = BackendKind.AUTO
    state_dir: Path = Path("/var/lib/iped")
    control_socket: Path = DEFAULT_SOCKET
    control_group: str | None = "iped"
    history: int = 20
    debounce_ms: int = 200


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """``[audit]``: read by the audit follower (iped.audit.follow)."""

    source: AuditSource = AuditSource.AUTO
    receive_buffer: int = 1 << 20
    prometheus_textfile: Path | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration; ``path`` is the file it came from (None: built-in defaults)."""

    policies: PolicySettings = field(default_factory=PolicySettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    path: Path | None = None
    dev: bool = False


def dev_runtime_dir() -> Path:
    """The ``iped daemon --dev`` runtime dir (see iped.daemon.client.dev_runtime_dir)."""
    from iped.daemon import client

    return Path(client.dev_runtime_dir())


def dev_socket_path() -> Path:
    """Control socket of the development daemon."""
    return dev_runtime_dir() / "control.sock"
