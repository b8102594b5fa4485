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

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from iped.emulator.types import KernelConfig

KeyringName = Literal["builtin", "secondary", "platform"]


def cert_to_der(cert: bytes) -> bytes:
    """Normalise a PEM or DER X.509 certificate to DER; raises ValueError if it is neither."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    if cert.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(cert).public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(cert).public_bytes(Encoding.DER)


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

    Raises OSError: EBADMSG malformed PKCS#7; ENOPKG unsupported algorithm; EKEYREJECTED bad
    signature; EINVAL/EBADMSG an embedded signer's RSA signature that is no valid encoding;
    ENOKEY no trusted signer in any tried keyring; ENODATA no embedded content.
    """
    from iped.pkcs7 import SignatureError, verify_policy

    try:
        return verify_policy(blob, keyrings.primary_anchors(config)).text
    except SignatureError as e:
        if e.errno not in (errno.ENOKEY, errno.EKEYREJECTED) or not config.policy_sig_platform_keyring:
            raise OSError(e.errno, str(e)) from None
    try:
        return verify_policy(blob, list(keyrings.platform)).text
    except SignatureError as e:
        raise OSError(e.errno, str(e)) from None
