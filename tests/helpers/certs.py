"""X.509 certificates and PKCS#7 signatures for tests: one certificate builder, the profiles the
kernel's keyrings look at (CA or signer, code signing, key identifiers) chosen by its arguments.

The lab's committed keys (tests/lab/keys.py), the emulator's signer and the tests' own CAs and
leaves (:func:`make_signer`, :func:`make_leaf`) are all made here, so a certificate profile the
kernel accepts is written once. The odd PKCS#7 containers stay ``openssl smime``'s (tests/test_pkcs7.py).
"""

from __future__ import annotations

import datetime
import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers.paths import LAB_KEYS

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def new_key(kind: str = "ec") -> PrivateKey:
    """A fresh RSA-2048 (``rsa``) or ECDSA P-256 (``ec``) private key."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def common_name(cn: str, *, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if organization is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def certificate(key: PrivateKey, subject: x509.Name, *, ca: bool = False, code_signing: bool = False,
                key_ids: bool = False, issuer: tuple[x509.Certificate, PrivateKey] | None = None,
                not_before: datetime.datetime | None = None, not_after: datetime.datetime | None = None,
                ) -> x509.Certificate:
    """``key``'s certificate for ``subject``, self-signed unless ``issuer`` (its certificate and key).

    ``ca``: CA:TRUE pathlen 0 with keyCertSign (critical), else CA:FALSE; ``code_signing``: a
    digitalSignature key usage and the codeSigning extended usage (a policy signer's profile);
    ``key_ids``: a subject key identifier, and an authority one naming ``issuer`` (how the kernel
    finds the issuing CA in its keyring). Valid from a day ago for ten years unless told.
    """
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(days=1))
        .not_valid_after(not_after or now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(_key_usage(cert_sign=True), critical=True)
    elif code_signing:
        builder = builder.add_extension(_key_usage(cert_sign=False), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    if key_ids:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        if issuer is not None:
            skid = issuer[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(skid),
                                            critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_pair(directory: Path, name: str, cert: x509.Certificate, key: PrivateKey) -> tuple[Path, Path]:
    """``<name>.crt`` and ``<name>.key`` (mode 0600) in ``directory``: (crt, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    crt, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    crt.write_bytes(cert_pem(cert))
    key_path.write_bytes(key_pem(key))
    key_path.chmod(0o600)
    return crt, key_path


@functools.cache
def signer(name: str = "rsa-signer") -> tuple[bytes, bytes]:
    """(cert PEM, key PEM): the committed lab test keys, or a fresh self-signed EC pair."""
    crt, key = LAB_KEYS / f"{name}.crt", LAB_KEYS / f"{name}.key"
    if crt.exists() and key.exists():
        return crt.read_bytes(), key.read_bytes()
    k = new_key("ec")
    return cert_pem(certificate(k, common_name(f"iped test {name}"))), key_pem(k)


def sign(text: bytes, name: str = "rsa-signer") -> bytes:
    """An attached, attribute-less DER PKCS#7 (what ``openssl smime -sign -noattr -nodetach`` makes)."""
    crt, key = signer(name)
    cert = x509.load_pem_x509_certificate(crt)
    pkey = serialization.load_pem_private_key(key, None)
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(text)
        .add_signer(cert, pkey, hashes.SHA256())  # type: ignore[arg-type]
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.NoAttributes, pkcs7.PKCS7Options.Binary])
    )


@dataclass(frozen=True)
class Signer:
    """A key pair on disk: ``key``/``crt`` paths and their PEM bytes."""

    key: Path
    crt: Path

    @property
    def key_pem(self) -> bytes:
        return self.key.read_bytes()

    @property
    def cert_pem(self) -> bytes:
        return self.crt.read_bytes()


def make_signer(directory: Path, name: str, kind: str = "rsa") -> Signer:
    """A self-signed certificate (RSA-2048 or ECDSA P-256) as ``openssl req -x509`` makes one:
    CA:TRUE with a subject key identifier, so it may sign policies and issue leaves; key mode 0600."""
    key = new_key(kind)
    crt, key_path = write_pair(directory, name, certificate(key, common_name(name), ca=True, key_ids=True), key)
    return Signer(key_path, crt)


def make_leaf(directory: Path, name: str, ca: Signer) -> Signer:
    """A certificate issued by ``ca`` with SKID/AKID, as a CA-run signing setup has."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, None)
    assert isinstance(ca_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    key = new_key("rsa")
    cert = certificate(key, common_name(name), key_ids=True, issuer=(ca_cert, ca_key))
    crt, key_path = write_pair(directory, name, cert, key)
    return Signer(key_path, crt)


def openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    """Run the real openssl binary; its stdout, or the test fails with its stderr."""
    proc = subprocess.run(["openssl", *map(str, args)], input=stdin, capture_output=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout
