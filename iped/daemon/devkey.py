"""Development signing key: an EC P-256 key (mode 0600) and a self-signed certificate.

:func:`self_signed_cert` is iped's one builder of self-signed signer certificates (the lab's test
signers use it too, with the codeSigning usage).

Used by ``iped daemon --dev`` to sign the example ``*.pol`` policies; the emulator trusts the
certificate. TEST/DEVELOPMENT ONLY: a real kernel does not trust it unless it is enrolled (UEFI db
or MOK -> .platform keyring), which a production machine must never do with a key that lives on it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Any


def self_signed_cert(key: Any, name: Any, not_before: datetime.datetime, not_after: datetime.datetime, *,
                     code_signing: bool = False) -> Any:
    """A self-signed end-entity certificate for ``key`` (a cryptography private key) that can
    sign policies: CA:FALSE, digitalSignature, a subject key identifier, and with
    ``code_signing`` the codeSigning extended key usage (the lab's enrolled signers carry it).
    Returns a ``cryptography.x509.Certificate``; ``name`` is an ``x509.Name``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
    )
    if code_signing:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return builder.sign(key, hashes.SHA256())


def ensure_dev_key(directory: Path, common_name: str = "iped development signer (TEST ONLY)") -> tuple[Path, Path]:
    """Return (key, cert) in ``directory``, creating them once. The key file is 0600 from birth."""
    key_path, cert_path = directory / "dev-signer.key", directory / "dev-signer.crt"
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = self_signed_cert(key, name, now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def discard_dev_key(key_path: Path, cert_path: Path) -> None:
    """Remove a development key pair made by :func:`ensure_dev_key`, and its directory once empty.

    ``iped daemon --dev`` calls it when it stops: a fresh key is made for every run, so one
    left behind is only a private key lying in /tmp (a SIGKILL still leaves it)."""
    for path in (key_path, cert_path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(OSError):  # not empty: something else lives there, leave it
        key_path.parent.rmdir()
