"""Every ``iped.toml`` key, declared once: frozen dataclasses with types, defaults and limits.

This is the only declaration of the configuration. :mod:`iped.config` derives its strict pydantic
models from these classes (so pydantic stays at the edge and out of every other import) and
freezes the validated values back into them; the core, the follower and the CLI take these typed
objects. A key's limits are its field's metadata: pydantic ``Field`` arguments (``ge``, ``le``,
``min_length``), and ``max_path_bytes`` for a path, checked once it is resolved against the
config file's directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from iped.daemon.client import DEFAULT_SOCKET


class BackendKind(StrEnum):
    """Where securityfs writes go: decided by ``auto``, or forced."""

    AUTO = "auto"
    KERNEL = "kernel"
    EMULATOR = "emulator"


class AuditSource(StrEnum):
    """Where the audit follower reads IPE records from (consumed by iped.audit.follow)."""

    AUTO = "auto"
    NETLINK = "netlink"
    JOURNAL = "journal"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """``[policies]``: what the daemon makes true in the kernel."""

    dir: Path = Path("/etc/iped/policies.d")
    active: str | None = field(default=None, metadata={"min_length": 1})
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
    # sun_path is 108 bytes with its NUL: bind() cannot take a longer path
    control_socket: Path = field(default=Path(DEFAULT_SOCKET), metadata={"max_path_bytes": 107})
    control_group: str | None = "iped"
    history: int = field(default=20, metadata={"ge": 1, "le": 10000})
    debounce_ms: int = field(default=200, metadata={"ge": 0, "le": 60000})


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """``[audit]``: read by the audit follower (iped.audit.follow.make_follower)."""

    source: AuditSource = AuditSource.AUTO
    receive_buffer: int = field(default=1 << 20, metadata={"ge": 4096})  # netlink SO_RCVBUF, bytes
    prometheus_textfile: Path | None = None


@dataclass(frozen=True, slots=True)
class BootSettings:
    """``[boot]``: what PID 1's IPE loader finds at the next boot (docs/boot.md); both opt-in."""

    # keep copy_dir/<active>.p7b equal to the blob the kernel holds active (systemd >= 257 loads it)
    keep_copy: bool = False
    copy_dir: Path = field(default=Path("/etc/ipe"), metadata={"max_path_bytes": 4095})
    # iped-boot.service fails when the declared policy was not active before iped started
    fail_closed: bool = False
    # written by iped boot-check at boot (iped-boot.service), read by iped status and plan
    record: Path = field(default=Path("/run/iped-boot/boot.json"), metadata={"max_path_bytes": 4095})


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration; ``path`` is the file it came from (None: built-in defaults).

    The fields whose type is a dataclass are the ``[sections]`` of iped.toml.
    """

    policies: PolicySettings = field(default_factory=PolicySettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    boot: BootSettings = field(default_factory=BootSettings)
    path: Path | None = None
    dev: bool = False
