"""Declared state: what ``[policies]`` and the drop-in dir ask the kernel to hold.

A frozen snapshot; the kernel's side is :mod:`iped.daemon.actual`. :func:`scan_declared` checks
every file with the validator ``iped validate`` uses (:mod:`iped.policyfile`: format by content,
kernel-exact parser, directory name) and verifies (or, for plain text, creates and verifies) each
PKCS#7 signature before anything can reach the kernel; problems come back as :class:`DeclError`
values, never as a half-built state.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iped.emulator.policy_parser import Version
from iped.errnos import describe_errno, errno_name
from iped.policyfile import PolicyProblem, SigningMaterial, Stage, check_policy

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
                "errno_name": errno_name(self.errno), "reason": self.reason,
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


_STAGE_PREFIX = {Stage.SIGNATURE: "signature check failed: ", Stage.SIGNING: "signing failed: ",
                 Stage.SIGNED_TEXT: "signed text: "}


def _decl_error(path: Path, p: PolicyProblem) -> DeclError:
    tok = f" (token {p.token!r})" if p.token else ""
    return DeclError(str(path), p.line, p.errno, f"{_STAGE_PREFIX.get(p.stage, '')}{p.reason}{tok}")


def load_policy_file(path: Path, signing: SigningMaterial, raw: bytes | None = None) -> DeclaredPolicy | DeclError:
    """Read and check one file (:func:`iped.policyfile.check_policy`); plain text is signed with
    the local key of ``signing``, and every blob verified against its anchors."""
    if raw is None:
        try:
            raw = path.read_bytes()
        except OSError as e:
            return DeclError(str(path), None, e.errno or errno.EIO, f"cannot read: {e.strerror}")
    got = check_policy(raw, signing, sign_text=True)
    if isinstance(got, PolicyProblem):
        return _decl_error(path, got)
    assert got.blob is not None and got.signer is not None  # sign_text: every accepted file is signed
    return DeclaredPolicy(got.name, got.version, got.text, got.blob, path, got.signer)


Loader = Callable[[Path], "DeclaredPolicy | DeclError"]


def _declares(path: Path, name: str) -> bool:
    """Does this (broken) file stand for policy ``name``? Its file name says so: ``name.pol``."""
    return path.name in (name + PLAIN_SUFFIX, name + SIGNED_SUFFIX)


def scan_declared(directory: Path, *, active: str | None, enforce: bool, success_audit: bool,
                  signing: SigningMaterial, protect: tuple[str, ...] = (),
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
        got = loader(path) if loader is not None else load_policy_file(path, signing)
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
    # a broken file named after the active policy already explains why it is missing
    if active is not None and active not in seen and not any(_declares(Path(e.file), active) for e in errors):
        errors.append(DeclError(str(directory), None, errno.ENOENT,
                                f"active = {active!r} but no file in the directory declares policy_name={active}"))
    return DeclaredState(tuple(policies), active, enforce, success_audit, protect, tuple(errors))
