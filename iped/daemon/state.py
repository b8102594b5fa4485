"""Declared state (config + drop-in dir) and actual state (read back from securityfs).

Both are frozen snapshots. :func:`scan_declared` validates every file with the kernel-exact
parser and verifies (or, for ``*.pol``, creates and verifies) each PKCS#7 signature before
anything can reach the kernel; problems come back as :class:`DeclError` values, never as a
half-built state.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iped.backend import Backend
from iped.emulator.policy_parser import PolicyError, Version, parse_policy
from iped.errnos import describe_errno

#: Files in the drop-in dir that are never policies: editor, package-manager and Ansible temporaries.
IGNORED_PATTERNS = (".*", "*~", "*.dpkg-*", "*.rpm*", ".ansible_tmp*", "*.swp", "*.tmp")
SIGNED_SUFFIX = ".p7s"
PLAIN_SUFFIX = ".pol"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class DeclError:
    """Why a declared policy (or the declaration as a whole) cannot be deployed."""

    file: str
    line: int | None
    errno: int
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {describe_errno(self.errno)}: {self.reason}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "errno": self.errno,
                "errno_name": errno.errorcode.get(self.errno, str(self.errno)), "reason": self.reason,
                "message": str(self)}


@dataclass(frozen=True, slots=True)
class DeclaredPolicy:
    """One policy the drop-in dir declares, already parsed and signature-checked."""

    name: str
    version: Version
    text: bytes
    blob: bytes
    source: Path
    signer: str

    @property
    def text_digest(self) -> str:
        return sha256(self.text)

    @property
    def blob_digest(self) -> str:
        return sha256(self.blob)


@dataclass(frozen=True, slots=True)
class DeclaredState:
    """What the configuration asks the kernel to look like."""

    policies: tuple[DeclaredPolicy, ...]
    active: str | None
    enforce: bool
    success_audit: bool
    protect: tuple[str, ...] = ()
    errors: tuple[DeclError, ...] = ()

    def get(self, name: str) -> DeclaredPolicy | None:
        return next((p for p in self.policies if p.name == name), None)

    def protected(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.protect)


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


# --------------------------------------------------------------------------- declared

def is_ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in IGNORED_PATTERNS)


def policy_files(directory: Path) -> list[Path]:
    """Candidate policy files, sorted by name; temporaries and unknown suffixes are skipped."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [directory / n for n in names
            if not is_ignored(n) and n.endswith((SIGNED_SUFFIX, PLAIN_SUFFIX)) and (directory / n).is_file()]


Signer = Callable[[bytes], bytes]
Verifier = Callable[[bytes], tuple[bytes, str]]


def _policy_error(path: Path, e: PolicyError, what: str = "") -> DeclError:
    tok = f" (token {e.token.decode('utf-8', 'backslashreplace')!r})" if e.token else ""
    return DeclError(str(path), e.line, e.errno, f"{what}{e.reason}{tok}")


def load_policy_file(path: Path, sign: Signer | None, verify: Verifier,
                     raw: bytes | None = None) -> DeclaredPolicy | DeclError:
    """Read, parse, sign (``.pol``) and verify one file.

    ``verify(blob) -> (text, signer)`` raises an exception with ``errno`` (iped.pkcs7.SignatureError)
    for a bad signature; ``sign(text) -> blob`` is None when no local signing key is configured.
    """
    if raw is None:
        try:
            raw = path.read_bytes()
        except OSError as e:
            return DeclError(str(path), None, e.errno or errno.EIO, f"cannot read: {e.strerror}")
    if path.suffix == PLAIN_SUFFIX:
        text = raw
        try:
            parsed = parse_policy(text)
        except PolicyError as e:
            return _policy_error(path, e)
        if sign is None:
            return DeclError(str(path), None, errno.ENOKEY,
                             "plain-text .pol needs [policies] signing_key and signing_cert in iped.toml "
                             "(or sign it elsewhere and drop the .p7s instead)")
        try:
            blob = sign(text)
        except Exception as e:  # a broken key/cert must reject the plan, not kill the loop
            return DeclError(str(path), None, getattr(e, "errno", errno.EKEYREJECTED) or errno.EKEYREJECTED,
                             f"signing failed: {e}")
    else:
        blob = raw
    try:
        text, signer = verify(blob)
    except Exception as e:
        return DeclError(str(path), None, getattr(e, "errno", errno.EBADMSG) or errno.EBADMSG,
                         f"signature check failed: {getattr(e, 'reason', e)}")
    try:
        parsed = parse_policy(text)
    except PolicyError as e:
        return _policy_error(path, e, "signed text: ")
    return DeclaredPolicy(os.fsdecode(parsed.name), parsed.version, text, blob, path, signer)


Loader = Callable[[Path], "DeclaredPolicy | DeclError"]


def scan_declared(directory: Path, *, active: str | None, enforce: bool, success_audit: bool,
                  sign: Signer | None, verify: Verifier, protect: tuple[str, ...] = (),
                  loader: Loader | None = None) -> DeclaredState:
    """Build the declared state from the drop-in dir; every problem is collected in ``errors``.

    ``loader`` replaces :func:`load_policy_file` (the reconciler passes a cached one).
    """
    policies: list[DeclaredPolicy] = []
    errors: list[DeclError] = []
    seen: dict[str, Path] = {}
    if not directory.is_dir():
        errors.append(DeclError(str(directory), None, errno.ENOENT, "policy directory does not exist"))
    for path in policy_files(directory):
        got = loader(path) if loader is not None else load_policy_file(path, sign, verify)
        if isinstance(got, DeclError):
            errors.append(got)
            continue
        if got.name in seen:
            errors.append(DeclError(str(path), 1, errno.EEXIST,
                                    f"policy name {got.name!r} is also declared by {seen[got.name]}; "
                                    "each name may come from one file only"))
            continue
        seen[got.name] = path
        policies.append(got)
    if active is not None and active not in seen and not any(e.file.endswith(active) for e in errors):
        errors.append(DeclError(str(directory), None, errno.ENOENT,
                                f"active = {active!r} but no file in the directory declares policy_name={active}"))
    return DeclaredState(tuple(policies), active, enforce, success_audit, protect, tuple(errors))


# --------------------------------------------------------------------------- actual

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
        name=os.fsdecode(backend.read(f"{base}/name")) or dirname,
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
