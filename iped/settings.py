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

from iped.paths import DEFAULT_SOCKET, PID1_IPE_DIRS


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
    """``[policies]``: what the daemon makes true in the kernel.

    Keys (the meanings iped.toml(5) prints; ``tests/project/test_manual.py`` wants one per field):

    dir: the drop-in directory: ``*.p7s`` pre-signed PKCS#7 policies (production) and ``*.pol``
        plain text the daemon signs with signing_key. Dotfiles, ``*~``, ``*.swp``, ``*.dpkg-*``,
        ``*.rpm*`` and ``.ansible_tmp*`` are ignored.
    active: the policy_name that must be active. Unset: iped loads and updates policies but never
        activates one.
    enforce: false is IPE's permissive mode: denials are audited, not blocked.
    success_audit: audit ALLOW decisions too, not only denials.
    trust_anchors: certificates (PEM or DER) allowed to sign policies; they must match what the
        kernel trusts (its builtin, secondary or platform keyring).
    signing_key: a local private key with which the daemon signs ``*.pol`` files (owner-only
        permissions); its certificate must be trusted by the kernel.
    signing_cert: the certificate of signing_key; it is a trust anchor too.
    protect: glob patterns of loaded policies that are never deleted, even when no file declares
        them.
    """

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
    """``[daemon]``: where the daemon keeps its records and listens (changes need a restart).

    Keys:

    backend: where securityfs writes go. auto: the kernel when /sys/kernel/security/ipe exists
        (securityfs is mounted if needed), else the emulator; kernel or emulator force one.
    state_dir: plan records, the rollback chain and deployed texts; must be a writable directory
        (checked at start).
    control_socket: the JSON-lines control socket (mode 0660), at most 107 bytes once resolved.
    control_group: members of this group may read the status (not change state).
    history: plan records kept; also the deployments kept per policy for rollback.
    debounce_ms: quiet time after file events before reconciling, in milliseconds.
    """

    backend: BackendKind = BackendKind.AUTO
    state_dir: Path = Path("/var/lib/iped")
    # sun_path is 108 bytes with its NUL: bind() cannot take a longer path
    control_socket: Path = field(default=Path(DEFAULT_SOCKET), metadata={"max_path_bytes": 107})
    control_group: str | None = "iped"
    history: int = field(default=20, metadata={"ge": 1, "le": 10000})
    debounce_ms: int = field(default=200, metadata={"ge": 0, "le": 60000})


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """``[audit]``: where the daemon's audit follower reads IPE records, and where it writes its
    counters; changes need a restart.

    Read by the audit follower (iped.audit.follow.make_follower).

    Keys:

    source: where IPE audit records are read from. auto: netlink (needs CAP_AUDIT_READ), else the
        journal; with the emulator backend, the emulator's own records. none: no follower.
    receive_buffer: the netlink socket's receive buffer (SO_RCVBUF), in bytes.
    prometheus_textfile: where the daemon's state and audit counters are written for
        node_exporter's textfile collector. Unset: not written.
    """

    source: AuditSource = AuditSource.AUTO
    receive_buffer: int = field(default=1 << 20, metadata={"ge": 4096})  # netlink SO_RCVBUF, bytes
    prometheus_textfile: Path | None = None


@dataclass(frozen=True, slots=True)
class BootSettings:
    """``[boot]``: what PID 1's IPE loader or the initramfs loads at the next boot (docs/boot.md); opt-in.

    Read by the daemon after each reconcile (iped.daemon.bootcopy) and by ``iped boot-check``
    (iped-boot.service).

    Keys:

    keep_copy: keep copy_dir/<active>.p7b equal to the blob the kernel holds active (what
        systemd >= 257's PID 1 loads at the next boot); other ``*.p7b`` there are removed.
    copy_dir: PID 1's first IPE directory; the daemon's unit may write only there.
    fail_closed: iped-boot.service fails (and, with the shipped drop-in linked in, halts the boot)
        when the declared policy was not active before iped started; never with enforce off.
    record: where iped boot-check records, once per boot, what PID 1 loaded; read by iped status
        and iped plan.
    initramfs: keep initramfs_dir/<active>.p7b equal to the blob the kernel holds active; the
        packaged initramfs-tools hook carries it into the initramfs, which activates it before
        switch_root (for a PID 1 without a loader: systemd < 257). Not with keep_copy.
    initramfs_dir: where the initramfs copy is kept (iped-initramfs.path runs update-initramfs when
        it changes); never one of PID 1's IPE directories.
    """

    keep_copy: bool = False
    copy_dir: Path = field(default=Path("/etc/ipe"), metadata={"max_path_bytes": 4095})
    fail_closed: bool = False
    record: Path = field(default=Path("/run/iped-boot/boot.json"), metadata={"max_path_bytes": 4095})
    initramfs: bool = False
    initramfs_dir: Path = field(default=Path("/etc/iped/initramfs"), metadata={"max_path_bytes": 4095})

    def problems(self) -> list[tuple[str, str]]:
        """(key, problem) for combinations that would stop or weaken the boot (docs/boot.md)."""
        out = []
        if self.initramfs and self.keep_copy:
            # the initramfs activates NAME, then PID 1 loads NAME.p7b again: ESTALE, PID 1 freezes
            out.append(("initramfs", "cannot be on with keep_copy: PID 1 would load the policy the initramfs "
                                     "activated again (ESTALE on update) and freeze the boot; choose one"))
        if str(self.initramfs_dir).rstrip("/") in PID1_IPE_DIRS:
            out.append(("initramfs_dir", f"{self.initramfs_dir} is a directory systemd's PID 1 loads *.p7b "
                                         "from: the policy would be loaded twice at boot (ESTALE) and PID 1 "
                                         "would freeze the boot"))
        return out


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
