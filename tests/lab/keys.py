"""The lab's committed TEST-ONLY signing keys, and PKCS#7 signing of IPE policies.

The private keys in ``tests/lab/keys`` are public by construction (they are in git): they
exist so that lab runs are reproducible and their certificates can be enrolled once in the
lab's OVMF ``db``.  Nothing outside the lab may ever trust them; every certificate says so in
its subject (``O=iped lab TEST KEY - NOT FOR PRODUCTION``).

* ``rsa-signer`` and ``ec-signer`` are enrolled in UEFI ``db`` (-> kernel ``.platform``
  keyring), so policies they sign load through ``new_policy``;
* ``untrusted-signer`` is deliberately enrolled nowhere (its policies must be rejected);
* ``fsverity-signer`` signs fs-verity built-in signatures (guest tests add it to the
  ``.fs-verity`` keyring themselves);
* ``lab-ca`` is a CA enrolled in ``db`` that signs nothing but ``ca-leaf-signer``'s
  certificate; the leaf itself is enrolled nowhere, so the kernel trusts its policies only
  by walking the chain up to the CA.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.helpers.certs import certificate, common_name, new_key
from tests.lab import cache_dir

#: Committed key material (part of the checkout; see tests/lab/keys/README.md).
KEYS_DIR = Path(__file__).resolve().parents[2] / "tests" / "lab" / "keys"
TEST_ORG = "iped lab TEST KEY - NOT FOR PRODUCTION"


@dataclass(frozen=True)
class Signer:
    """One test key pair: PEM certificate + PEM private key in :data:`KEYS_DIR`."""

    name: str
    common_name: str
    #: Enrolled in the lab firmware's UEFI db (hence in the guest kernel's .platform keyring).
    enrolled: bool
    #: Name of the CA signer that issued this certificate (None: self-signed).
    issuer: str | None = None
    #: A CA certificate (CA:TRUE, keyCertSign) rather than an end-entity policy signer.
    ca: bool = False

    @property
    def cert(self) -> Path:
        return KEYS_DIR / f"{self.name}.crt"

    @property
    def key(self) -> Path:
        """The committed key file. Git does not keep its mode: see :meth:`private_key_0600`."""
        return KEYS_DIR / f"{self.name}.key"

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())

    def cert_der(self) -> bytes:
        return self.certificate().public_bytes(serialization.Encoding.DER)

    def private_key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise TypeError(f"{self.key}: unexpected key type {type(key).__name__}")
        return key

    def private_key_0600(self) -> Path:
        """A copy of the private key with mode 0600 in the lab cache, for tools that insist.

        Host only: the cache is read-only inside the guest.
        """
        dest_dir = cache_dir() / "keys"
        dest_dir.mkdir(mode=0o700, exist_ok=True)
        dest = dest_dir / self.key.name
        if not dest.exists() or dest.read_bytes() != self.key.read_bytes():
            fd, tmp = tempfile.mkstemp(dir=dest_dir, suffix=".tmp")  # created 0600
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.key.read_bytes())
            Path(tmp).replace(dest)
        os.chmod(dest, 0o600)
        return dest


RSA_SIGNER = Signer("rsa-signer", "iped lab RSA policy signer", enrolled=True)
EC_SIGNER = Signer("ec-signer", "iped lab EC policy signer", enrolled=True)
UNTRUSTED_SIGNER = Signer("untrusted-signer", "iped lab untrusted signer (never enrolled)", enrolled=False)
FSVERITY_SIGNER = Signer("fsverity-signer", "iped lab fs-verity signer", enrolled=False)
CA_SIGNER = Signer("lab-ca", "iped lab policy CA", enrolled=True, ca=True)
#: Issued by :data:`CA_SIGNER`; only the CA is enrolled (the chain-walk corpus cases).
LEAF_SIGNER = Signer("ca-leaf-signer", "iped lab CA-issued policy signer", enrolled=False, issuer="lab-ca")
ALL_SIGNERS: tuple[Signer, ...] = (
    RSA_SIGNER, EC_SIGNER, UNTRUSTED_SIGNER, FSVERITY_SIGNER, CA_SIGNER, LEAF_SIGNER,
)
#: What :mod:`tests.lab.firmware` enrolls in db.
ENROLLED: tuple[Signer, ...] = tuple(s for s in ALL_SIGNERS if s.enrolled)


def sign_policy(text: bytes, signer: Signer) -> bytes:
    """``text`` wrapped in an attached PKCS#7 SignedData (DER), as ``new_policy`` wants it.

    :func:`iped.pkcs7.sign_policy` (SHA-256, no authenticated attributes, binary: the container
    of ``openssl smime -sign -noattr -nodetach -binary -outform der``) with the signer's files.
    """
    from iped import pkcs7

    return pkcs7.sign_policy(text, signer.key.read_bytes(), signer.cert.read_bytes())


def generate(directory: Path) -> None:
    """Create the test key pairs missing from ``directory`` (existing pairs are kept).

    Run once to create the committed files (``python -m tests.lab gen-keys DIR``); after that
    the files are the source of truth, since the lab firmware caches the enrolled certs and
    the truth embeds signatures. A CA is created before the leaves it issues (ALL_SIGNERS
    order); to regenerate a pair, delete its two files first.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for signer in ALL_SIGNERS:
        if (directory / f"{signer.name}.crt").exists() and (directory / f"{signer.name}.key").exists():
            continue
        key = new_key("ec" if signer is EC_SIGNER else "rsa")
        name = common_name(signer.common_name, organization=TEST_ORG)
        not_before = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
        not_after = not_before.replace(year=2125)
        if signer.ca:
            # self-signed CA: CA:TRUE (pathlen 0), keyCertSign, a subject key identifier
            cert = certificate(key, name, ca=True, key_ids=True, not_before=not_before, not_after=not_after)
        elif signer.issuer is not None:
            issuer = next(s for s in ALL_SIGNERS if s.name == signer.issuer)
            issuer_cert = x509.load_pem_x509_certificate((directory / f"{issuer.name}.crt").read_bytes())
            issuer_key = serialization.load_pem_private_key((directory / f"{issuer.name}.key").read_bytes(), None)
            assert isinstance(issuer_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
            # a policy signer issued by the CA; its authority key identifier is how the kernel finds the CA
            cert = certificate(key, name, code_signing=True, key_ids=True, issuer=(issuer_cert, issuer_key),
                               not_before=not_before, not_after=not_after)
        else:
            # a self-signed policy signer: the profile of iped's own dev key (iped.daemon.devkey)
            cert = certificate(key, name, code_signing=True, key_ids=True, not_before=not_before, not_after=not_after)
        (directory / f"{signer.name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = directory / f"{signer.name}.key"
        key_path.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        key_path.chmod(0o600)
