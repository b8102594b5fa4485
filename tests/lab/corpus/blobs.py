"""Policy blobs made from a case description: signed with the committed TEST keys, then
named transformations (``pem``, ``truncated:10``, ...); and the executor's housekeeping policies."""

from __future__ import annotations

import base64
import functools
from typing import Any

from tests.lab.corpus.cases import BlobSpec, CorpusError

#: Version minor reserved for the executor's housekeeping policies.
RESERVED_MINOR = 65535


@functools.cache
def _signer(name: str) -> tuple[Any, Any]:
    """(certificate, private key) of a lab signer; loaded once (RSA key checks are slow)."""
    from tests.lab import keys

    signer = {"rsa": keys.RSA_SIGNER, "ec": keys.EC_SIGNER, "untrusted": keys.UNTRUSTED_SIGNER}[name]
    return signer.certificate(), signer.private_key()


def _sign_sha1(text: bytes, spec: BlobSpec) -> bytes:
    """SHA-1 SignedData built by hand: cryptography's builder refuses SHA-1 digests."""
    from asn1crypto import algos, cms
    from asn1crypto import x509 as ax509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    cert, key = _signer(spec.sign)
    acert = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature, sig_alg = key.sign(text, ec.ECDSA(hashes.SHA1())), "sha1_ecdsa"
    else:
        signature, sig_alg = key.sign(text, padding.PKCS1v15(), hashes.SHA1()), "rsassa_pkcs1v15"
    digest_alg = algos.DigestAlgorithm({"algorithm": "sha1"})
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
            {"issuer": acert.issuer, "serial_number": acert.serial_number})}),
        "digest_algorithm": digest_alg,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": sig_alg}),
        "signature": signature,
    })
    signed = cms.SignedData({
        "version": "v1", "digest_algorithms": [digest_alg],
        "encap_content_info": {"content_type": "data", "content": text},
        "certificates": [] if "no_certs" in spec.transform else [acert],
        "signer_infos": [signer_info],
    })
    blob: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return blob


def _sign(text: bytes, spec: BlobSpec) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    if spec.hash == "sha1":
        return _sign_sha1(text, spec)

    options = [pkcs7.PKCS7Options.Binary]
    if "signed_attrs" not in spec.transform:
        options.append(pkcs7.PKCS7Options.NoAttributes)
    if "no_certs" in spec.transform:
        options.append(pkcs7.PKCS7Options.NoCerts)
    if "detached" in spec.transform:
        options.append(pkcs7.PKCS7Options.DetachedSignature)
    algs: dict[str, Any] = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    cert, key = _signer(spec.sign)
    builder = pkcs7.PKCS7SignatureBuilder().set_data(text).add_signer(cert, key, algs[spec.hash])
    return builder.sign(serialization.Encoding.DER, options)


#: Transformations applied while signing (the rest are applied to the finished blob).
_SIGN_OPTIONS = ("signed_attrs", "no_certs", "detached")


def build_blob(spec: BlobSpec, text: bytes) -> bytes:
    """The bytes to write for ``spec`` with the (already expanded) policy ``text``.

    Transformations: ``pad:N`` (before signing: pad the text with a trailing comment line to
    N bytes), ``signed_attrs``/``no_certs``/``detached`` (signing options), ``pem`` (PEM
    armour), ``tampered`` (flip the last byte of the embedded text), ``truncated:N`` (drop
    the last N bytes), ``trailing:HEX`` (append bytes), ``double`` (the blob twice).
    """
    for t in spec.transform:
        if t.startswith("pad:"):
            target = int(t[4:])
            pad = target - len(text) - 2
            if pad < 0:
                raise CorpusError(f"pad:{target} is shorter than the text ({len(text)} bytes)")
            text = text + b"\n#" + b"x" * pad
    blob = text if spec.sign == "none" else _sign(text, spec)
    for t in spec.transform:
        if t in _SIGN_OPTIONS or t.startswith("pad:"):
            continue
        if t == "pem":
            body = base64.encodebytes(blob).replace(b"\n", b"")
            lines = [body[i:i + 64] for i in range(0, len(body), 64)]
            blob = b"-----BEGIN PKCS7-----\n" + b"\n".join(lines) + b"\n-----END PKCS7-----\n"
        elif t == "tampered":
            at = blob.rfind(text[-8:]) if len(text) >= 8 else -1
            if at < 0:
                raise CorpusError("tampered: the text is not embedded in the blob")
            pos = at + 7
            blob = blob[:pos] + bytes([blob[pos] ^ 0x01]) + blob[pos + 1:]
        elif t.startswith("truncated:"):
            blob = blob[: len(blob) - int(t[10:])]
        elif t.startswith("trailing:"):
            blob = blob + bytes.fromhex(t[9:])
        elif t == "double":
            blob = blob + blob
        else:
            raise CorpusError(f"unknown blob transformation {t!r}")
    return blob


def housekeeping_text(kind: str, epoch: int) -> bytes:
    """Allow-all policies the executor activates around epoch cases (see :mod:`tests.lab.corpus`)."""
    if kind == "base":
        version = f"{epoch - 1}.{RESERVED_MINOR}.{RESERVED_MINOR}"
    elif kind == "after":
        version = f"{epoch}.{RESERVED_MINOR}.{RESERVED_MINOR}"
    else:
        version = f"{epoch}.0.0"
    return f"policy_name=corpus-{kind}-{epoch} policy_version={version}\nDEFAULT action=ALLOW\n".encode()


def housekeeping_blob(kind: str, epoch: int) -> bytes:
    """The RSA-signed blob of :func:`housekeeping_text` (deterministic: PKCS#1 v1.5)."""
    return _sign(housekeeping_text(kind, epoch), BlobSpec(kind, ""))
