"""Actual state: what the kernel (or emulator) holds, read back from securityfs as one snapshot."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from iped.backend import Backend
from iped.daemon.declared import sha256
from iped.emulator.policy_parser import Version, name_str


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    """One ``policies/<name>/`` directory as securityfs shows it."""

    name: str
    version: Version
    active: bool
    text_digest: str
    blob_digest: str | None  # None: unsigned boot policy (pkcs7 reads ENOENT)


@dataclass(frozen=True, slots=True)
class ActualState:
    """What the kernel (or emulator) holds right now."""

    policies: tuple[LoadedPolicy, ...]
    enforce: bool
    success_audit: bool

    def get(self, name: str) -> LoadedPolicy | None:
        return next((p for p in self.policies if p.name == name), None)

    @property
    def active(self) -> LoadedPolicy | None:
        return next((p for p in self.policies if p.active), None)


def parse_version_text(text: bytes) -> Version:
    major, minor, rev = (int(x) for x in text.strip().split(b"."))
    return Version(major, minor, rev)


def read_flag(backend: Backend, path: str) -> bool:
    return backend.read(path).strip()[:1] == b"1"


def read_loaded(backend: Backend, dirname: str) -> LoadedPolicy:
    base = f"policies/{dirname}"
    try:
        blob_digest: str | None = sha256(backend.read(f"{base}/pkcs7"))
    except FileNotFoundError:
        blob_digest = None
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
        blob_digest = None
    return LoadedPolicy(
        name=name_str(backend.read(f"{base}/name")) or dirname,
        version=parse_version_text(backend.read(f"{base}/version")),
        active=read_flag(backend, f"{base}/active"),
        text_digest=sha256(backend.read(f"{base}/policy")),
        blob_digest=blob_digest,
    )


def read_actual(backend: Backend) -> ActualState:
    """Snapshot of securityfs: every loaded policy plus the two switches."""
    policies = []
    for d in backend.listdir("policies"):
        try:
            policies.append(read_loaded(backend, d))
        except FileNotFoundError:
            continue  # deleted while we looked
    return ActualState(tuple(policies), read_flag(backend, "enforce"), read_flag(backend, "success_audit"))
