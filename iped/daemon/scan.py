"""The scan: the declared state of a drop-in dir, every file checked before anything can reach
the kernel.

:func:`scan_declared` checks every file with the validator ``iped validate`` uses
(:mod:`iped.policyfile`: format by content, kernel-exact parser, directory name) and verifies (or,
for plain text, creates and verifies) each PKCS#7 signature; :func:`declare` is the whole
declaration as the daemon sees it: that scan with the policies ``iped rollback`` rolled forward
overlaid (:mod:`iped.daemon.overlay`).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING

from iped.daemon.declared import DeclaredPolicy, DeclaredState, DeclError, Loader, fs_error, untrusted
from iped.daemon.dropin import declares, policy_files, read_policy_file
from iped.daemon.overlay import Overlaid, overlay_rolled_forward
from iped.policyfile import CheckedPolicy, PolicyProblem, SigningMaterial, Stage, check_policy
from iped.trustpath import UntrustedPathError, check_path

if TYPE_CHECKING:
    from iped.settings import PolicySettings

#: the meaning of the error that says no file declares the active policy
UNDECLARED_ACTIVE = "the active policy is declared by no file"

_STAGE_PREFIX = {Stage.SIGNATURE: "signature check failed: ", Stage.SIGNING: "signing failed: ",
                 Stage.SIGNED_TEXT: "signed text: "}


def _decl_error(path: Path, p: PolicyProblem) -> DeclError:
    """The daemon's wording of a problem. A token is bytes of the file: it is shown only when the
    file is a policy (its first line is a policy header), since status readers, the log and the
    plan records must never see a line of some other file (a hard link to /etc/shadow)."""
    if p.is_policy:
        tok = f" (token {p.token!r})" if p.token else ""
    else:
        tok = " (not a policy: its first line is no policy_name=... policy_version=... header; content not shown)"
    # signing happens here, not in the kernel: the kernel's meaning of its errno does not apply
    return DeclError(str(path), p.line, p.errno, f"{_STAGE_PREFIX.get(p.stage, '')}{p.reason}{tok}",
                     plain=p.stage is Stage.SIGNING)


def _check_policy_small(raw: bytes, signing: SigningMaterial,
                        in_process: bool = False) -> CheckedPolicy | PolicyProblem:  # fmt: skip
    """``check_policy(raw, signing, sign_text=True)``; when that needs the crypto stack (a blob to
    verify, text to sign) and this process has not loaded it, in a short-lived child
    (:func:`iped.forked.call_in_child`): the stack (cryptography + asn1crypto, ~14 MB) would
    otherwise stay resident for the daemon's life after one verification. A child that dies,
    raises or sends nothing is a failed verification (fail closed: the plan is rejected,
    nothing reaches the kernel). ``in_process``: here, whatever it loads."""
    from iped.forked import call_in_child, crypto_loaded
    from iped.pkcs7 import is_pkcs7

    needs_crypto = is_pkcs7(raw) or signing.key_pem is not None
    if not needs_crypto or in_process or crypto_loaded():
        return check_policy(raw, signing, sign_text=True)
    try:
        return call_in_child(lambda: check_policy(raw, signing, sign_text=True))
    except Exception as e:  # ChildFailedError, or what the child raised
        return PolicyProblem(Stage.SIGNATURE, errno.EBADMSG, f"verification failed unexpectedly ({e})",
                             signed=True)  # fmt: skip


def load_policy_file(path: Path, signing: SigningMaterial, raw: bytes | None = None, *,
                     in_process: bool = False) -> DeclaredPolicy | DeclError:  # fmt: skip
    """Read and check one file (:func:`iped.policyfile.check_policy`); plain text is signed with
    the local key of ``signing``, and every blob verified against its anchors (``in_process``:
    in this process, else in a child unless the crypto stack is loaded already)."""
    if raw is None:
        read = read_policy_file(path)
        if isinstance(read, DeclError):
            return read
        raw = read
    got = _check_policy_small(raw, signing, in_process)
    if isinstance(got, PolicyProblem):
        return _decl_error(path, got)
    assert got.blob is not None and got.signer is not None  # sign_text: every accepted file is signed
    return DeclaredPolicy(got.name, got.version, got.text, got.blob, path, got.signer)


def load_for_reading(path: Path) -> DeclaredPolicy | DeclError:
    """One file read and checked as the daemon does, but for its text only (``iped survey`` and
    ``suggest``, which evaluate it and never deploy it): plain text is not signed (``blob`` is the
    file as found, ``signer`` empty) and a blob's signature is checked against its own
    certificate, not the anchors (whether the kernel trusts the signer is ``iped validate
    --trust``'s question)."""
    raw = read_policy_file(path)
    if isinstance(raw, DeclError):
        return raw
    got = check_policy(raw, SigningMaterial())
    if isinstance(got, PolicyProblem):
        return _decl_error(path, got)
    return DeclaredPolicy(got.name, got.version, got.text, got.blob or raw, path, got.signer or "")


def scan_declared(directory: Path, *, active: str | None, enforce: bool, success_audit: bool,
                  load: Loader, protect: tuple[str, ...] = ()) -> DeclaredState:
    """Build the declared state from the drop-in dir, each file read by ``load`` (the daemon's:
    :func:`load_policy_file`, cached); every problem is collected in ``errors``."""
    policies: list[DeclaredPolicy] = []
    errors: list[DeclError] = []
    seen: dict[str, Path] = {}
    try:
        check_path(directory, "declared policies")
        paths = policy_files(directory)
    except UntrustedPathError as e:
        paths = []
        errors.append(untrusted(e))
    except OSError as e:
        paths = []
        errors.append(fs_error(directory, e, "cannot list the policy directory"))
    for path in paths:
        got = load(path)
        if isinstance(got, DeclError):
            errors.append(got)
            continue
        if got.name in seen:
            errors.append(DeclError(str(path), 1, errno.EEXIST,
                                    f"two files declare policy_name={got.name}: {seen[got.name]} and {path}; "
                                    "each name may come from one file only (a .p7s signed from a .pol replaces "
                                    "it: remove the .pol, or sign outside the drop-in dir)",
                                    meaning="one policy name declared twice"))
            continue
        seen[got.name] = path
        policies.append(got)
    # a broken file named after the active policy already explains why it is missing
    if active is not None and active not in seen and not any(declares(Path(e.file), active) for e in errors):
        empty = "; it holds no policy file (*.pol, *.p7s)" if not paths and not errors else ""
        errors.append(DeclError(str(directory), None, errno.ENOENT,
                                f"active = {active!r} but no file in the directory declares policy_name={active}"
                                f"{empty}", plain=True, meaning=UNDECLARED_ACTIVE))
    return DeclaredState(tuple(policies), active, enforce, success_audit, protect, tuple(errors))



def declare(pol: PolicySettings, rolled_forward: Path, load: Loader) -> Overlaid:
    """The declaration as the daemon acts on it: the drop-in dir of ``pol`` scanned with ``load``,
    and the policies ``iped rollback`` wrote to ``rolled_forward`` overlaid. The reconciler and
    ``iped survey``/``suggest`` both build their declared state here, so that
    :meth:`~iped.daemon.declared.DeclaredState.find_active` names the same file for both."""
    decl = scan_declared(pol.dir, active=pol.active, enforce=pol.enforce, success_audit=pol.success_audit,
                         load=load, protect=pol.protect)
    return overlay_rolled_forward(decl, rolled_forward, load)
