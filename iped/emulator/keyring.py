"""Which certificates the emulated kernel trusts for policy signatures (policy.c + certs/system_keyring.c).

ipe_new_policy() verifies the PKCS#7 blob against the secondary trusted keyring (which links the
builtin keys) when CONFIG_IPE_POLICY_SIG_SECONDARY_KEYRING=y, else the builtin keyring alone; if
that fails with -ENOKEY or -EKEYREJECTED and CONFIG_IPE_POLICY_SIG_PLATFORM_KEYRING=y it tries
the platform keyring (UEFI db / MOK) once more and that result is final.

The PKCS#7 checks themselves (malformed -> EBADMSG, bad signature -> EKEYREJECTED, or EINVAL
for an embedded signer's corrupted RSA signature, untrusted signer -> ENOKEY, no embedded
content -> ENODATA, ...) live in :mod:`iped.pkcs7`, shared with the rest of iped; this module
only chooses the anchors in the kernel's order. Only ENOKEY and EKEYREJECTED reach the platform
keyring: EINVAL, like every other errno, is final after the first pass.
"""

from __future__ import annotations

import binascii
import errno
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from iped.emulator.types import KernelConfig

KeyringName = Literal["builtin", "secondary", "platform"]


#: the PEM labels cryptography's load_pem_x509_certificate takes
_PEM_CERT = re.compile(rb"-----BEGIN (X509 )?CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END \1?CERTIFICATE-----")


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at ``pos``; ValueError when it overruns."""
    if pos + 2 > len(der):
        raise ValueError("truncated")
    tag, first = der[pos], der[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        n = first & 0x7F
        if n == 0 or n > 4:  # (0x80: indefinite length, not DER)
            raise ValueError("not a DER length")
        start, length = pos + 2 + n, int.from_bytes(der[pos + 2 : pos + 2 + n], "big")
    if start + length > len(der):
        raise ValueError("truncated")
    return tag, start, start + length


def cert_to_der(cert: bytes) -> bytes:
    """Normalise a PEM or DER X.509 certificate to DER; raises ValueError if it is neither.

    Standard library only (a daemon trusting its anchors must not keep cryptography resident):
    PEM is base64 decoded, and DER must have a certificate's outer shape -- one SEQUENCE of
    tbsCertificate (SEQUENCE), signatureAlgorithm (SEQUENCE) and signature (BIT STRING) -- that
    is the whole input. The certificate itself is parsed where it is used, by the verification,
    which skips an anchor it cannot parse (trusts less, never more).
    """
    if cert.lstrip().startswith(b"-----BEGIN"):
        m = _PEM_CERT.search(cert)
        if m is None:
            raise ValueError("no PEM CERTIFICATE block")
        try:
            cert = binascii.a2b_base64(b"".join(m.group(2).split()), strict_mode=True)
        except binascii.Error as e:
            raise ValueError(f"PEM: {e}") from None
    tag, start, end = _tlv(cert, 0)
    if tag != 0x30 or end != len(cert):
        raise ValueError("not a DER certificate")
    pos = start
    for want in (0x30, 0x30, 0x03):
        tag, _, pos = _tlv(cert, pos)
        if tag != want:
            raise ValueError("not a DER certificate")
    if pos != end:
        raise ValueError("not a DER certificate")
    return cert


@dataclass
class Keyrings:
    """The trust anchors of ``.builtin_trusted_keys``, ``.secondary_trusted_keys`` and ``.platform``."""

    builtin: list[bytes] = field(default_factory=list)
    secondary: list[bytes] = field(default_factory=list)
    platform: list[bytes] = field(default_factory=list)

    def add(self, cert: bytes, keyring: KeyringName) -> None:
        der = cert_to_der(cert)
        ring: list[bytes] = getattr(self, keyring)
        if der not in ring:
            ring.append(der)

    def primary_anchors(self, config: KernelConfig) -> list[bytes]:
        """VERIFY_USE_SECONDARY_KEYRING (builtin + secondary) or the builtin keyring (NULL)."""
        if config.policy_sig_secondary_keyring:
            return self.builtin + self.secondary
        return list(self.builtin)


def verify_pkcs7_signature(blob: bytes, keyrings: Keyrings, config: KernelConfig) -> bytes:
    """Verify ``blob`` as ipe_new_policy() does and return the embedded policy text.

    In a short-lived child when this process has not loaded the crypto stack (a daemon on the
    emulator then keeps it out, as on a kernel); a child that ends without an answer fails
    closed (EKEYREJECTED, as an unexpected failure in iped.pkcs7 does).

    Raises OSError: EBADMSG malformed PKCS#7; ENOPKG unsupported algorithm; EKEYREJECTED bad
    signature; EINVAL/EBADMSG an embedded signer's RSA signature that is no valid encoding;
    ENOKEY no trusted signer in any tried keyring; ENODATA no embedded content.
    """
    from iped.forked import ChildFailedError, call_in_child, crypto_loaded

    if crypto_loaded():
        return _verify(blob, keyrings, config)
    try:
        return call_in_child(lambda: _verify(blob, keyrings, config))
    except ChildFailedError as e:
        raise OSError(errno.EKEYREJECTED, f"verification failed unexpectedly ({e})") from None


def _anchors(certs: list[bytes]) -> list[bytes]:
    """The certificates the verification can parse (cert_to_der checked only their shape)."""
    from iped.pkcs7 import load_anchor

    out = []
    for der in certs:
        try:
            load_anchor(der)
        except ValueError:
            continue
        out.append(der)
    return out


def _verify(blob: bytes, keyrings: Keyrings, config: KernelConfig) -> bytes:
    from iped.pkcs7 import SignatureError, verify_policy

    try:
        return verify_policy(blob, _anchors(keyrings.primary_anchors(config))).text
    except SignatureError as e:
        if e.errno not in (errno.ENOKEY, errno.EKEYREJECTED) or not config.policy_sig_platform_keyring:
            raise OSError(e.errno, str(e)) from None
    try:
        return verify_policy(blob, _anchors(list(keyrings.platform))).text
    except SignatureError as e:
        raise OSError(e.errno, str(e)) from None
