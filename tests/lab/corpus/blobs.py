"""Policy blobs made from a case description: signed with the committed TEST keys, then
named transformations (``pem``, ``truncated:10``, ...); and the executor's housekeeping policies."""

from __future__ import annotations

import base64
import functools
import hashlib
from typing import Any

from tests.lab.corpus.cases import BlobSpec, CorpusError

#: Version minor reserved for the executor's housekeeping policies.
RESERVED_MINOR = 65535


#: ``sign`` / ``also:`` names -> the lab signer (see tests/lab/keys/README.md).
_SIGNER_NAMES = {"rsa": "RSA_SIGNER", "ec": "EC_SIGNER", "untrusted": "UNTRUSTED_SIGNER", "leaf": "LEAF_SIGNER"}


@functools.cache
def _signer(name: str) -> tuple[Any, Any]:
    """(certificate, private key) of a lab signer; loaded once (RSA key checks are slow)."""
    from tests.lab import keys

    if name not in _SIGNER_NAMES:
        raise CorpusError(f"unknown signer {name!r}; known: {', '.join(_SIGNER_NAMES)}")
    signer = getattr(keys, _SIGNER_NAMES[name])
    return signer.certificate(), signer.private_key()


def _ca_cert_der() -> bytes:
    from tests.lab import keys

    return keys.CA_SIGNER.cert_der()


def _sign_bytes(key: Any, data: bytes, hash_name: str) -> tuple[bytes, str]:
    """(signature, asn1crypto signature algorithm name): PKCS#1 v1.5 or ECDSA over ``data``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    algorithm: hashes.HashAlgorithm = {"md5": hashes.MD5(), "sha1": hashes.SHA1(), "sha256": hashes.SHA256(),
                                       "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}[hash_name]
    # Prehashed: OpenSSL's policy may refuse to hash with MD5/SHA-1 for a signature itself.
    h = hashes.Hash(algorithm)
    h.update(data)
    prehashed = Prehashed(algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(h.finalize(), ec.ECDSA(prehashed)), f"{hash_name}_ecdsa"
    return key.sign(h.finalize(), padding.PKCS1v15(), prehashed), "rsassa_pkcs1v15"


def _signed_attrs(text: bytes, hash_name: str, transform: tuple[str, ...]) -> Any:
    """The authenticated attributes the hand-built transformations ask for, or None.

    ``attrs``: contentType + messageDigest only (no S/MIME capabilities, no signing time);
    ``smime_caps``: plus an smimeCapabilities attribute; ``wrong_digest``: messageDigest of
    the right size but of other content; ``short_digest``: messageDigest 16 bytes long.
    """
    from asn1crypto import cms

    wanted = {"attrs", "smime_caps", "wrong_digest", "short_digest"} & set(transform)
    if not wanted:
        return None
    digest = hashlib.new(hash_name, text).digest()
    if "wrong_digest" in wanted:
        digest = hashlib.new(hash_name, text + b"#").digest()
    if "short_digest" in wanted:
        digest = digest[:16]
    attrs: list[dict[str, Any]] = [
        {"type": "content_type", "values": ["data"]},
        {"type": "message_digest", "values": [digest]},
    ]
    if "smime_caps" in wanted:
        attrs.append({"type": "smime_capabilities", "values": [[{"capability_id": "2.16.840.1.101.3.4.1.42"}]]})
    return cms.CMSAttributes(attrs)


def _hand_built(text: bytes, spec: BlobSpec) -> bytes:
    """SignedData assembled with asn1crypto, for the shapes cryptography's builder refuses:
    SHA-1/MD5 digests, extra SignerInfos (``also:SIGNER[:HASH]``), chosen signed attributes,
    a corrupted signature (``corrupt_sig:I``: last byte of SignerInfo I flipped), a raw RSA
    signature over a hand-made encoded message (``rsa_em:KIND``, see :func:`_raw_rsa_signature`), the issuing
    CA embedded (``with_ca``), an impostor certificate (``impostor``), and empty detached content.
    """
    from asn1crypto import algos, cms
    from asn1crypto import x509 as ax509
    from cryptography.hazmat.primitives import serialization

    plan = [(spec.sign, spec.hash)]
    for t in spec.transform:
        if t.startswith("also:"):
            name, _, hash_name = t[5:].partition(":")
            plan.append((name, hash_name or spec.hash))
    certs: list[Any] = []
    infos: list[Any] = []
    digest_algs: list[Any] = []
    for name, hash_name in plan:
        cert, key = _signer(name)
        acert = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        if "impostor" in spec.transform and not infos:
            acert, key = _impostor()
        if acert not in certs:
            certs.append(acert)
        digest_alg = algos.DigestAlgorithm({"algorithm": hash_name})
        if digest_alg not in digest_algs:
            digest_algs.append(digest_alg)
        attrs = _signed_attrs(text, hash_name, spec.transform)
        info: dict[str, Any] = {
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber(
                {"issuer": acert.issuer, "serial_number": acert.serial_number})}),
            "digest_algorithm": digest_alg,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
            "signature": b"",
        }
        if attrs is not None:
            info["signed_attrs"] = attrs
        signer_info = cms.SignerInfo(info)
        # The signature covers the attributes re-tagged as a universal SET (RFC 5652 5.4).
        covered = text if attrs is None else b"\x31" + signer_info["signed_attrs"].dump()[1:]
        signature, sig_alg = _sign_bytes(key, covered, hash_name)
        signer_info["signature_algorithm"] = algos.SignedDigestAlgorithm({"algorithm": sig_alg})
        signer_info["signature"] = signature
        infos.append(signer_info)
    for t in spec.transform:
        if t.startswith("rsa_em:"):
            if _signed_attrs(text, spec.hash, spec.transform) is not None:
                raise CorpusError(f"{t}: only without signed attributes")
            _, key = _signer(spec.sign)
            infos[0]["signature"] = _raw_rsa_signature(key, t[7:], hashlib.new(spec.hash, text).digest())
        if t.startswith("corrupt_sig:"):
            victim = infos[int(t[12:])]
            sig = bytes(victim["signature"].native)
            victim["signature"] = sig[:-1] + bytes([sig[-1] ^ 0x01])
    if "with_ca" in spec.transform:
        certs.append(ax509.Certificate.load(_ca_cert_der()))
    content: dict[str, Any] = {"content_type": "data"}
    if "detached" not in spec.transform:
        content["content"] = text
    signed = cms.SignedData({
        "version": "v1", "digest_algorithms": digest_algs,
        "encap_content_info": content,
        "certificates": [] if "no_certs" in spec.transform else certs,
        "signer_infos": infos,
    })
    blob: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return blob


def _raw_rsa_signature(key: Any, kind: str, digest: bytes) -> bytes:
    """A raw RSA signature (m^d mod n) of a hand-made encoded message, to pin how the kernel
    checks EMSA-PKCS1-v1_5: ``type2`` is block type 2 instead of 1 (padding invalid),
    ``sha1_prefix`` valid padding but a SHA-1 DigestInfo prefix around the SHA-256 digest."""
    from asn1crypto import algos

    size = (key.key_size + 7) // 8
    hash_name = "sha1" if kind == "sha1_prefix" else "sha256"
    info = algos.DigestInfo({"digest_algorithm": {"algorithm": hash_name}, "digest": digest}).dump()
    block_type = {"type2": b"\x02", "sha1_prefix": b"\x01"}.get(kind)
    if block_type is None:
        raise CorpusError(f"rsa_em:{kind}: unknown encoded-message kind (type2, sha1_prefix)")
    em = b"\x00" + block_type + b"\xff" * (size - 3 - len(info)) + b"\x00" + info
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    signature: bytes = pow(int.from_bytes(em, "big"), numbers.d, n).to_bytes(size, "big")
    return signature


@functools.cache
def _impostor() -> tuple[Any, Any]:
    """A certificate claiming to be rsa-signer (same issuer, subject, serial and SKID) but
    holding the untrusted signer's key and self-signed by it: the kernel finds the trusted
    rsa-signer key by the claimed identity, and that key then fails to verify the signature."""
    from asn1crypto import x509 as ax509
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    real, _ = _signer("rsa")
    _, key = _signer("untrusted")
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject).issuer_name(real.issuer).public_key(key.public_key())
        .serial_number(real.serial_number)
        .not_valid_before(real.not_valid_before_utc).not_valid_after(real.not_valid_after_utc)
    )
    for ext in real.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    forged = builder.sign(key, hashes.SHA256())
    return ax509.Certificate.load(forged.public_bytes(serialization.Encoding.DER)), key


#: Transformations that need :func:`_hand_built` (cryptography's builder cannot make them).
_HAND_BUILT = ("attrs", "smime_caps", "wrong_digest", "short_digest", "with_ca", "impostor")
_HAND_BUILT_PREFIXES = ("also:", "corrupt_sig:", "rsa_em:")


def _sign(text: bytes, spec: BlobSpec) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    if (
        spec.hash in ("sha1", "md5")
        or any(t in _HAND_BUILT or t.startswith(_HAND_BUILT_PREFIXES) for t in spec.transform)
    ):
        return _hand_built(text, spec)

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


def _is_sign_option(t: str) -> bool:
    return t in _SIGN_OPTIONS or t in _HAND_BUILT or t.startswith(_HAND_BUILT_PREFIXES)


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
        if _is_sign_option(t) or t.startswith("pad:"):
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
