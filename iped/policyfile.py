"""One policy file, checked as the kernel would take it: shared by ``iped validate`` and the daemon.

:func:`check_policy` tells a signed DER PKCS#7 blob from policy text by content (never by the
file's suffix), verifies a blob as verify_pkcs7_signature() would (:mod:`iped.pkcs7`), parses the
text with the kernel-exact parser, and checks that the policy name can become a securityfs
directory (``.``/``..`` or a ``/`` -> EACCES, over 255 bytes -> ENAMETOOLONG: the parser accepts
such names and the load fails later). With ``sign_text`` (the daemon), plain text is signed with
the local key and the blob verified like any other. The signing material is one object,
:class:`SigningMaterial`.

The verdict is a :class:`CheckedPolicy` or a :class:`PolicyProblem`; each caller words it its
own way (validate's ``FILE:LINE: ERRNO: ...`` lines, the daemon's plan errors).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from enum import StrEnum

from iped.emulator.policy_parser import PolicyError, Version, name_str, parse_header, parse_policy

#: The largest policy the kernel takes: a new_policy write of 65535 bytes is parsed, 65536 gives
#: EMSGSIZE (asn1_ber_decoder's limit, pinned in the corpus; iped.pkcs7.ASN1_MAX_LEN). Plain text
#: is at most as long as the signed blob that carries it, so a file over this size can never load.
MAX_POLICY_BYTES = 65535


@dataclass(frozen=True, slots=True)
class SigningMaterial:
    """Trust anchors for verifying, and the optional local key + certificate for signing text.

    ``anchors`` None: a blob is checked against its own embedded certificate only (trust not
    checked: the kernel's keyrings cannot be read from userspace); a tuple (even empty) is the
    keyring, and a signer outside it is ENOKEY.
    """

    anchors: tuple[bytes, ...] | None = None
    key_pem: bytes | None = None
    cert_pem: bytes | None = None


class Stage(StrEnum):
    """Which check a problem comes from."""

    TEXT = "text"  # parsing plain policy text
    SIGNATURE = "signature"  # the PKCS#7 container or its signature
    SIGNED_TEXT = "signed text"  # parsing the text inside a verified blob
    SIGNING = "signing"  # signing plain text with the local key
    NAME = "name"  # the policy name as a securityfs directory
    SIZE = "size"  # the file is larger than the kernel takes


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """Why the kernel would refuse the file: errno, reason, and where (line, token) if known."""

    stage: Stage
    errno: int
    reason: str
    line: int | None = None
    token: str | None = None
    signed: bool = False
    policy_name: str | None = None  # NAME problems: the file parsed, its name cannot be a directory
    policy_version: str | None = None
    signer: str | None = None  # problems of a verified blob's text: who signed it
    trust_checked: bool = False
    signature_checked: bool = False
    is_policy: bool = True  # text problems: the first line is a policy header (its bytes may be shown)


@dataclass(frozen=True, slots=True)
class CheckedPolicy:
    """A policy the kernel would accept (as far as userspace can tell; see ``trust_checked``)."""

    name: str
    version: Version
    text: bytes
    blob: bytes | None  # the signed PKCS#7 (None: plain text, not signed)
    signer: str | None = None
    trust_checked: bool = False
    signature_checked: bool = False

    @property
    def signed(self) -> bool:
        return self.blob is not None


def size_problem(size: int, *, exact: bool = True) -> PolicyProblem | None:
    """The one size rule (``iped validate`` and the daemon's scan): over :data:`MAX_POLICY_BYTES`
    the kernel never takes the file. ``exact`` False: ``size`` is only what was read so far."""
    if size <= MAX_POLICY_BYTES:
        return None
    said = f"{size} bytes" if exact else f"more than {MAX_POLICY_BYTES} bytes"
    return PolicyProblem(Stage.SIZE, errno.EMSGSIZE, f"{said}; the kernel takes a policy (its signed PKCS#7 blob) "
                         f"of at most {MAX_POLICY_BYTES} bytes", is_policy=False)


_SPACE = b"\t\n\x0b\x0c\r \xa0"  # what the kernel's parser strips at a line's end


def starts_with_header(text: bytes) -> bool:
    """Is the first line with content (comments and blank lines skipped) a valid policy header?
    The test for "this file is a policy", so that errors may quote its bytes."""
    for lineno, raw in enumerate(text.split(b"\0", 1)[0].replace(b"\r", b"\n").split(b"\n"), 1):
        line = raw.split(b"#", 1)[0].rstrip(_SPACE)
        if line:
            try:
                parse_header(line, lineno)
            except PolicyError:
                return False
            return True
    return False


def _parse(text: bytes, stage: Stage, signed: bool) -> tuple[str, Version] | PolicyProblem:
    """Parse ``text`` and check its name as a securityfs directory."""
    from iped.emulator.securityfs import dir_name_error

    try:
        policy = parse_policy(text)
    except PolicyError as e:
        tok = e.token.decode("utf-8", "backslashreplace") if e.token else None
        return PolicyProblem(stage, e.errno, e.reason, e.line, tok, signed, is_policy=starts_with_header(text))
    name = name_str(policy.name)  # as the kernel's read-back gives it: the planner compares the two
    bad = dir_name_error(policy.name)
    if bad is not None:
        return PolicyProblem(Stage.NAME, bad[0], f"policy name: {bad[1]}", signed=signed, policy_name=name,
                             policy_version=str(policy.version))
    return name, policy.version


def _verify(blob: bytes, material: SigningMaterial) -> CheckedPolicy | PolicyProblem:
    from iped.pkcs7 import check_signature, verify_policy

    try:
        v = check_signature(blob) if material.anchors is None else verify_policy(blob, material.anchors)
    except Exception as e:  # SignatureError carries the kernel's errno; anything else is a bad blob too
        return PolicyProblem(Stage.SIGNATURE, getattr(e, "errno", None) or errno.EBADMSG,
                             str(getattr(e, "reason", e)), signed=True, trust_checked=material.anchors is not None)
    parsed = _parse(v.text, Stage.SIGNED_TEXT, signed=True)
    if isinstance(parsed, PolicyProblem):
        return replace(parsed, signer=v.signer_subject, trust_checked=v.trust_checked,
                       signature_checked=v.signature_checked)
    return CheckedPolicy(parsed[0], parsed[1], v.text, blob, v.signer_subject, v.trust_checked,
                         v.signature_checked)


def check_policy(raw: bytes, material: SigningMaterial, *, sign_text: bool = False) -> CheckedPolicy | PolicyProblem:
    """Would the kernel accept ``raw``? With ``sign_text``, plain text is signed with the local key
    (ENOKEY without one) and comes back with its blob."""
    too_large = size_problem(len(raw))
    if too_large is not None:
        return too_large
    # iped.pkcs7 only for bytes that may be a blob (DER or PEM): the kernel's plain-text read-back
    # of a held policy (the daemon's start) then never loads it
    if raw[:1] == b"\x30" or raw[:64].lstrip().startswith(b"-----BEGIN"):
        from iped.pkcs7 import is_pkcs7

        if is_pkcs7(raw):
            return _verify(raw, material)
    parsed = _parse(raw, Stage.TEXT, signed=False)
    if isinstance(parsed, PolicyProblem) or not sign_text:
        return parsed if isinstance(parsed, PolicyProblem) else CheckedPolicy(parsed[0], parsed[1], raw, None)
    if material.key_pem is None or material.cert_pem is None:
        return PolicyProblem(Stage.SIGNING, errno.ENOKEY,
                             "plain-text policy needs [policies] signing_key and signing_cert in iped.toml "
                             "(or sign it elsewhere and drop the .p7s instead)")
    from iped.pkcs7 import sign_policy

    try:
        blob = sign_policy(raw, material.key_pem, material.cert_pem)
    except Exception as e:  # a broken key/cert must reject the plan, not kill the loop
        return PolicyProblem(Stage.SIGNING, getattr(e, "errno", None) or errno.EKEYREJECTED, str(e))
    return _verify(blob, material)
