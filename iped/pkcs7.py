"""PKCS#7 policy signing, and verification in the kernel's order (verify_pkcs7_signature()).

Counterparts: certs/system_keyring.c ``verify_pkcs7_signature``, and in crypto/asymmetric_keys/
``pkcs7_parser.c`` (:func:`parse_message`), ``pkcs7_verify.c`` (:func:`verify_message`) and
``pkcs7_trust.c`` (:func:`validate_trust`); lib/asn1_decoder.c for the container limits.
IPE calls ``verify_pkcs7_signature(NULL, 0, blob, len, keyring, VERIFYING_UNSPECIFIED_SIGNATURE,
set_pkcs7_data, ...)``, so the steps and their errnos are, in order:

1. parse: more than 65535 bytes -> EMSGSIZE (asn1_ber_decoder's limit); not BER/DER of the
   expected shape -> EBADMSG; outer content type not signedData, SignedData or SignerInfo
   version not 1/3, inner content type neither data nor Authenticode -> EINVAL; digest or
   public-key algorithm the kernel does not know -> ENOPKG; a repeated signed attribute or
   S/MIME capabilities outside Authenticode -> EKEYREJECTED (so ``openssl smime -sign`` without
   ``-noattr`` *and* without ``-nosmimecap`` is refused); signed attributes lacking
   contentType or messageDigest -> EBADMSG. Bytes after the outer SEQUENCE are ignored: the
   decoder stops at ASN1_OP_COMPLETE without checking that the input was used up.
2. internal consistency (pkcs7_verify): inner content type not data -> EKEYREJECTED; digest of
   the content (empty when detached); signed attributes, when present, must carry a
   messageDigest of the right size (else EBADMSG) and value (else EKEYREJECTED), and then the
   signature covers the DER SET of the attributes; the signer certificate is looked up among
   the embedded certificates by issuer+serial; when found, a signingTime outside its validity
   -> EKEYREJECTED, a signature that does not verify -> the crypto layer's errno (RSA: no
   leading zero byte, e.g. corrupted or another key's -> EINVAL; bad padding or another hash's
   DigestInfo -> EBADMSG; another digest -> EKEYREJECTED; ECDSA: EKEYREJECTED), and the
   embedded chain is walked.
3. trust (pkcs7_validate_trust): a certificate of the chain whose key is in the keyring, or the
   chain's top being signed by a keyring key, or (last resort, e.g. ``-nocerts``) a keyring key
   matching the SignerInfo's issuer+serial/SKID directly; the keyring key must verify the
   signature (else EKEYREJECTED); nothing matched -> ENOKEY; only unsupported crypto -> ENOPKG.
4. content (pkcs7_get_content_data): no embedded content -> ENODATA. A detached signature
   normally fails earlier with EKEYREJECTED, because step 2 digests empty content.

The lab pins these errnos against real kernels (tests/corpus/20-containers.toml: chains
through an enrolled CA, several SignerInfos, MD5, chosen signed attributes, corrupted
signatures); each step is one small function so that a disagreement is a one-line change
here. Anything unexpected fails closed (EBADMSG while parsing, EKEYREJECTED while
verifying), never as "trusted".
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from iped.errnos import ErrnoMeaning

if TYPE_CHECKING:
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

#: asn1_ber_decoder(): "This won't handle datalen > 65535".
ASN1_MAX_LEN = 65535

_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_DATA = "1.2.840.113549.1.7.1"
_OID_MS_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
_OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
_OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
_OID_SMIME_CAPS = "1.2.840.113549.1.9.15"
_OID_MS_OPUS_INFO = "1.3.6.1.4.1.311.2.1.12"
_OID_MS_STATEMENT_TYPE = "1.3.6.1.4.1.311.2.1.11"

#: pkcs7_sig_note_digest_algo(): digest OIDs the kernel names (others -> ENOPKG).
_DIGEST_ALGOS: dict[str, str] = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.2.8": "sha3-256",
    "2.16.840.1.101.3.4.2.9": "sha3-384",
    "2.16.840.1.101.3.4.2.10": "sha3-512",
}

#: pkcs7_sig_note_pkey_algo(): signature OIDs the kernel accepts (others -> ENOPKG).
_PKEY_ALGOS: dict[str, str] = {
    "1.2.840.113549.1.1.1": "rsa",  # rsaEncryption, what openssl and cryptography write
    "1.2.840.10045.4.1": "ecdsa",  # ecdsa-with-SHA1
    "1.2.840.10045.4.3.1": "ecdsa",  # ecdsa-with-SHA224
    "1.2.840.10045.4.3.2": "ecdsa",
    "1.2.840.10045.4.3.3": "ecdsa",
    "1.2.840.10045.4.3.4": "ecdsa",
}

#: Hash names ``iped sign --hash`` offers (what cryptography's PKCS7 builder can sign with).
SIGN_HASHES = ("sha224", "sha256", "sha384", "sha512")


@dataclass
class SignatureError(ErrnoMeaning, Exception):
    """Why the kernel would refuse a signed policy: its errno plus iped's reason.

    Not frozen: the interpreter assigns ``__traceback__`` on raised exceptions.
    """

    errno: int
    reason: str

    def __str__(self) -> str:
        return f"{self.errno_name}: {self.reason} [{self.meaning}]"


@dataclass(frozen=True, slots=True)
class VerifiedPolicy:
    """A signed policy that passed verification.

    ``trust_checked`` is False for :func:`check_signature` (no anchors were given);
    ``signature_checked`` is False when no embedded certificate could check the signature math.
    """

    text: bytes
    signer_subject: str
    signer_serial: int
    digest_algorithm: str
    pkcs7: bytes
    trust_checked: bool = True
    signature_checked: bool = True


# --------------------------------------------------------------------------------------------
# Parsed message (struct pkcs7_message / pkcs7_signed_info / x509_certificate)


@dataclass(frozen=True, slots=True)
class _Cert:
    """The parts of an X.509 certificate the kernel's matching uses."""

    cert: cx509.Certificate
    issuer_serial: tuple[bytes, int]  # x509->id
    subject: bytes
    skid: bytes | None  # x509->skid
    akid_issuer_serial: tuple[bytes, int] | None  # sig->auth_ids[0]
    akid_keyid: bytes | None  # sig->auth_ids[1]
    pkey: str | None  # "rsa", "ecdsa" or None (unsupported_key)
    self_signed: bool

    @property
    def label(self) -> str:
        return self.cert.subject.rfc4514_string()


@dataclass(frozen=True, slots=True)
class _SignerInfo:
    hash_name: str
    pkey: str
    signature: bytes
    issuer_serial: tuple[bytes, int] | None  # SignerInfo v1: issuerAndSerialNumber
    skid: bytes | None  # SignerInfo v3: subjectKeyIdentifier
    authattrs: bytes | None  # DER of the attributes as a SET (0x31 ...), what gets signed
    msgdigest: bytes | None
    signing_time: datetime | None


@dataclass(frozen=True, slots=True)
class _Message:
    data: bytes | None
    data_type: str
    certs: tuple[_Cert, ...]
    signers: tuple[_SignerInfo, ...]


@dataclass
class _Outcome:
    """Per-SignerInfo verification state (the kernel keeps it in the structs)."""

    signer: _Cert | None = None
    chain: list[_Cert] = field(default_factory=list)  # signer, its issuer, ...; top last
    unsupported: bool = False
    digest: bytes = b""


def _fail(err: int, reason: str) -> SignatureError:
    return SignatureError(err, reason)


def _name_text(der: bytes) -> str:
    from asn1crypto import x509 as ax509

    try:
        return str(ax509.Name.load(der).human_friendly)
    except Exception:
        return der.hex()


def _load_cert(der: bytes) -> _Cert:
    """x509_cert_parse(): a certificate the kernel can use, or EBADMSG.

    A self-issued certificate whose own signature does not verify fails the whole parse
    (x509_check_for_self_signed) with EKEYREJECTED.
    """
    from asn1crypto import x509 as ax509
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        acert = ax509.Certificate.load(der)
        tbs = acert["tbs_certificate"]
        issuer = tbs["issuer"].dump()
        subject = tbs["subject"].dump()
        serial = int(tbs["serial_number"].native)
        ccert = cx509.load_der_x509_certificate(der)
        skid: bytes | None = None
        akid_keyid: bytes | None = None
        akid_is: tuple[bytes, int] | None = None
        for ext in tbs["extensions"]:
            name = ext["extn_id"].native
            if name == "key_identifier":
                skid = bytes(ext["extn_value"].parsed.native)
            elif name == "authority_key_identifier":
                akid = ext["extn_value"].parsed
                if akid["key_identifier"].native is not None:
                    akid_keyid = bytes(akid["key_identifier"].native)
                if (
                    akid["authority_cert_issuer"].native is not None
                    and akid["authority_cert_serial_number"].native is not None
                ):
                    dirname = next(
                        (g.chosen.dump() for g in akid["authority_cert_issuer"] if g.name == "directory_name"),
                        None,
                    )
                    if dirname is not None:
                        akid_is = (dirname, int(akid["authority_cert_serial_number"].native))
        pub = ccert.public_key()
    except Exception as e:
        raise _fail(errno.EBADMSG, f"embedded certificate does not parse: {e}") from None
    pkey = (
        "rsa" if isinstance(pub, rsa.RSAPublicKey) else "ecdsa" if isinstance(pub, ec.EllipticCurvePublicKey) else None
    )
    self_signed = issuer == subject
    if self_signed and akid_keyid is not None and akid_keyid != skid:
        self_signed = False
    if self_signed and akid_is is not None and akid_is != (issuer, serial):
        self_signed = False
    partial = _Cert(ccert, (issuer, serial), subject, skid, akid_is, akid_keyid, pkey, False)
    if self_signed and pkey is not None and not _cert_signed_by(partial, pub):
        raise _fail(errno.EKEYREJECTED, f"self-signed certificate {partial.label!r} has a bad signature")
    return _Cert(ccert, (issuer, serial), subject, skid, akid_is, akid_keyid, pkey, self_signed)


def _hash_for(name: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    table: dict[str, Any] = {
        "sha1": hashes.SHA1,
        "sha224": hashes.SHA224,
        "sha256": hashes.SHA256,
        "sha384": hashes.SHA384,
        "sha512": hashes.SHA512,
        "sha3-256": hashes.SHA3_256,
        "sha3-384": hashes.SHA3_384,
        "sha3-512": hashes.SHA3_512,
    }
    return table[name]()


def _digest_info_prefix(hash_name: str) -> bytes:
    """The DER DigestInfo header before the digest (the kernel's ``hash_prefix`` tables)."""
    from asn1crypto import algos

    size = hashlib.new(hash_name.replace("-", "_")).digest_size
    der: bytes = algos.DigestInfo({"digest_algorithm": {"algorithm": hash_name.replace("-", "_")},
                                   "digest": bytes(size)}).dump()
    return der[:-size]


def _rsa_pkcs1_errno(pub: Any, signature: bytes, digest: bytes, hash_name: str) -> int:
    """rsassa_pkcs1_verify() (crypto/rsassa-pkcs1.c; pkcs1pad_verify() before 6.13): 0 or its errno.

    The lab's kernels (6.12 and 7.2 alike) tell the failures apart, and pkcs7_verify_one()
    passes the errno on: a signature whose RSA result lacks the leading zero byte (a corrupted
    signature, or one made by another key) is EINVAL; a broken padding or a DigestInfo prefix
    of another hash is EBADMSG; a well-formed encoding of another digest is EKEYREJECTED.
    """
    numbers = pub.public_numbers()
    size = (pub.key_size + 7) // 8
    value = int.from_bytes(signature, "big")
    if len(signature) != size or value >= numbers.n:
        return errno.EINVAL
    em = pow(value, numbers.e, numbers.n).to_bytes(size, "big")
    if em[0] != 0x00:
        return errno.EINVAL
    body = em[1:]
    if body[0] != 0x01:
        return errno.EBADMSG
    pos = 1
    while pos < len(body) and body[pos] == 0xFF:
        pos += 1
    if pos < 9 or pos == len(body) or body[pos] != 0x00:
        return errno.EBADMSG
    pos += 1
    prefix = _digest_info_prefix(hash_name)
    if body[pos : pos + len(prefix)] != prefix:
        return errno.EBADMSG
    if body[pos + len(prefix) :] != digest:
        return errno.EKEYREJECTED
    return 0


def _signature_errno(pub: PublicKeyTypes, signature: bytes, digest: bytes, hash_name: str) -> int:
    """public_key_verify_signature() over an already computed digest: 0 or the kernel's errno.

    ECDSA failures are EKEYREJECTED (as the lab's kernels report a corrupted or mismatched
    ECDSA signature); RSA ones follow :func:`_rsa_pkcs1_errno`; other keys EKEYREJECTED.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    if isinstance(pub, rsa.RSAPublicKey):
        return _rsa_pkcs1_errno(pub, signature, digest, hash_name)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        try:
            pub.verify(signature, digest, ec.ECDSA(Prehashed(_hash_for(hash_name))))
        except (InvalidSignature, ValueError):
            return errno.EKEYREJECTED
        return 0
    return errno.EKEYREJECTED


def _verify_prehashed(pub: PublicKeyTypes, signature: bytes, digest: bytes, hash_name: str) -> bool:
    """Does ``pub`` verify ``signature`` over ``digest``? (pkcs1 or x962)."""
    return _signature_errno(pub, signature, digest, hash_name) == 0


def _cert_signed_by(cert: _Cert, pub: PublicKeyTypes) -> bool:
    """Does ``pub`` verify ``cert``'s own signature (x509 sig checked in the chain walk)?"""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    c = cert.cert
    try:
        alg = c.signature_hash_algorithm
        if alg is None:
            return False
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(c.signature, c.tbs_certificate_bytes, padding.PKCS1v15(), alg)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(c.signature, c.tbs_certificate_bytes, ec.ECDSA(alg))
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


# --------------------------------------------------------------------------------------------
# Step 1: pkcs7_parse_message()


def _check_pem(blob: bytes) -> None:
    if blob.lstrip().startswith(b"-----BEGIN"):
        raise _fail(
            errno.EBADMSG,
            "PEM-armoured PKCS#7; the kernel only takes DER (convert: openssl pkcs7 -outform der)",
        )


def _parse_attrs(si: Any, data_type: str) -> tuple[bytes | None, bytes | None, datetime | None]:
    """pkcs7_sig_note_authenticated_attr() and pkcs7_sig_note_set_of_authattrs()."""
    attrs = si["signed_attrs"]
    if not attrs.contents and len(attrs) == 0:
        return None, None, None
    seen: set[str] = set()
    msgdigest: bytes | None = None
    signing_time: datetime | None = None
    for attr in attrs:
        oid = attr["type"].dotted
        values = attr["values"]
        if oid in seen or len(values) != 1:
            raise _fail(errno.EKEYREJECTED, f"repeated or multi-valued signed attribute {oid}")
        seen.add(oid)
        if oid == _OID_CONTENT_TYPE:
            if values[0].dotted != data_type:
                raise _fail(errno.EBADMSG, "signed contentType attribute differs from the content type")
        elif oid == _OID_SIGNING_TIME:
            signing_time = values[0].native
        elif oid == _OID_MESSAGE_DIGEST:
            msgdigest = bytes(values[0].native)
        elif oid == _OID_SMIME_CAPS and data_type != _OID_MS_INDIRECT_DATA:
            raise _fail(
                errno.EKEYREJECTED,
                "signed S/MIME capabilities are only allowed with Authenticode (sign with -noattr or -nosmimecap)",
            )
        elif oid in (_OID_MS_OPUS_INFO, _OID_MS_STATEMENT_TYPE) and data_type != _OID_MS_INDIRECT_DATA:
            raise _fail(errno.EKEYREJECTED, "Authenticode signed attributes outside Authenticode")
    if _OID_CONTENT_TYPE not in seen or _OID_MESSAGE_DIGEST not in seen:
        raise _fail(errno.EBADMSG, "signed attributes lack contentType or messageDigest")
    # The signature covers the attributes re-tagged from [0] IMPLICIT to a universal SET.
    dumped = attrs.dump()
    return b"\x31" + dumped[1:], msgdigest, signing_time


def _parse_signer(si: Any, sd_version: int, data_type: str) -> _SignerInfo:
    """One SignerInfo, with pkcs7_note_signerinfo_version()'s and the algorithm notes' errnos."""
    version = si["version"].native
    if version == "v1":
        if sd_version != 1:
            raise _fail(errno.EBADMSG, "SignedData and SignerInfo versions do not match")
    elif version == "v3":
        if sd_version == 1:
            raise _fail(errno.EBADMSG, "SignedData and SignerInfo versions do not match")
    else:
        raise _fail(errno.EINVAL, f"unsupported SignerInfo version {version}")
    digest_oid = si["digest_algorithm"]["algorithm"].dotted
    hash_name = _DIGEST_ALGOS.get(digest_oid)
    if hash_name is None:
        raise _fail(errno.ENOPKG, f"unsupported digest algorithm {digest_oid}")
    authattrs, msgdigest, signing_time = _parse_attrs(si, data_type)
    sig_oid = si["signature_algorithm"]["algorithm"].dotted
    pkey = _PKEY_ALGOS.get(sig_oid)
    if pkey is None:
        raise _fail(errno.ENOPKG, f"unsupported signature algorithm {sig_oid}")
    sid = si["sid"]
    if version == "v3":
        if sid.name != "subject_key_identifier":
            raise _fail(errno.EBADMSG, "SignerInfo v3 must name its signer by subjectKeyIdentifier")
        issuer_serial, skid = None, bytes(sid.chosen.native)
    else:
        if sid.name != "issuer_and_serial_number":
            raise _fail(errno.EBADMSG, "SignerInfo v1 must name its signer by issuer and serial")
        issuer_serial = (sid.chosen["issuer"].dump(), int(sid.chosen["serial_number"].native))
        skid = None
    return _SignerInfo(
        hash_name, pkey, bytes(si["signature"].native), issuer_serial, skid, authattrs, msgdigest, signing_time
    )


def parse_message(blob: bytes) -> _Message:
    """pkcs7_parse_message(): the container, or the errno of the first failing check.

    Raises SignatureError: EMSGSIZE over 65535 bytes; EBADMSG malformed (also PEM, truncated,
    plain text); EINVAL not signedData, bad SignedData version, inner type neither data nor
    Authenticode, no or inconsistent signers; ENOPKG unknown digest/signature algorithm;
    EKEYREJECTED repeated signed attribute or S/MIME capabilities.
    """
    if len(blob) > ASN1_MAX_LEN:
        raise _fail(errno.EMSGSIZE, f"{len(blob)} bytes; the kernel's ASN.1 decoder takes at most {ASN1_MAX_LEN}")
    _check_pem(blob)
    if blob[:1] != b"\x30":
        why = "unsigned policy text?" if blob.startswith(b"policy_name=") else "not a SEQUENCE"
        raise _fail(errno.EBADMSG, f"not a DER PKCS#7 container ({why})")
    from asn1crypto import cms

    try:
        ci = cms.ContentInfo.load(blob, strict=False)
        content_type = ci["content_type"].dotted
    except Exception as e:
        raise _fail(errno.EBADMSG, f"not a DER/BER PKCS#7 ContentInfo: {e}") from None
    if content_type != _OID_SIGNED_DATA:
        raise _fail(errno.EINVAL, f"content type {content_type} is not signedData")
    try:
        return _parse_signed_data(ci["content"])
    except SignatureError:
        raise
    except Exception as e:
        raise _fail(errno.EBADMSG, f"malformed SignedData: {e}") from None


def _parse_signed_data(sd: Any) -> _Message:
    if sd is None or sd.contents is None:
        raise _fail(errno.EBADMSG, "signedData without content")
    sd.native  # force the lazy parser over everything: a malformed part fails here  # noqa: B018
    sd_version = {"v1": 1, "v3": 3}.get(sd["version"].native)
    if sd_version is None:
        raise _fail(errno.EINVAL, f"unsupported SignedData version {sd['version'].native}")
    eci = sd["encap_content_info"]
    data_type = eci["content_type"].dotted
    if data_type not in (_OID_DATA, _OID_MS_INDIRECT_DATA):
        raise _fail(errno.EINVAL, f"unsupported inner content type {data_type}")
    inner = eci["content"]
    data = None if inner.native is None else bytes(inner.native)
    certs: list[_Cert] = []
    for choice in sd["certificates"] if sd["certificates"].native is not None else ():
        if choice.name != "certificate":
            raise _fail(errno.EBADMSG, "embedded certificate is not an X.509 SEQUENCE")
        certs.append(_load_cert(choice.chosen.dump()))
    signers = [_parse_signer(si, sd_version, data_type) for si in sd["signer_infos"]]
    if not signers:
        raise _fail(errno.EINVAL, "no SignerInfo")
    if len({s.authattrs is None for s in signers}) != 1:
        raise _fail(errno.EINVAL, "signed attributes present on some signers only")
    return _Message(data, data_type, tuple(certs), tuple(signers))


# --------------------------------------------------------------------------------------------
# Step 2: pkcs7_verify()


def _digest(msg: _Message, si: _SignerInfo) -> bytes:
    """pkcs7_digest(): digest of the content, or of the signed attributes after checking them."""
    data = msg.data if msg.data is not None else b""
    try:
        digest = hashlib.new(si.hash_name.replace("-", "_"), data).digest()
    except ValueError:
        raise _fail(errno.ENOPKG, f"digest {si.hash_name} unavailable") from None
    if si.authattrs is None:
        return digest
    if si.msgdigest is None:
        raise _fail(errno.EKEYREJECTED, "signed attributes without messageDigest")
    if len(si.msgdigest) != len(digest):
        raise _fail(errno.EBADMSG, "messageDigest has the wrong size for its algorithm")
    if si.msgdigest != digest:
        raise _fail(errno.EKEYREJECTED, "messageDigest does not match the content (tampered or detached)")
    return hashlib.new(si.hash_name.replace("-", "_"), si.authattrs).digest()


def _find_key(msg: _Message, si: _SignerInfo) -> _Cert | None:
    """pkcs7_find_key(): the embedded certificate named by issuer+serial, of the same key type."""
    for cert in msg.certs:
        if si.issuer_serial is not None and cert.issuer_serial == si.issuer_serial and cert.pkey == si.pkey:
            return cert
    return None


def _find_issuer(msg: _Message, cert: _Cert) -> _Cert | None:
    """The authority lookup of pkcs7_verify_sig_chain() (AKID issuer+serial, else AKID keyid)."""
    if cert.akid_issuer_serial is not None:
        for p in msg.certs:
            if p.issuer_serial == cert.akid_issuer_serial:
                if cert.akid_keyid is not None and p.skid != cert.akid_keyid:
                    raise _fail(errno.EKEYREJECTED, "certificate chain: AKID keyid does not match the issuer's SKID")
                return p
        return None
    if cert.akid_keyid is not None:
        return next((p for p in msg.certs if p.skid is not None and p.skid == cert.akid_keyid), None)
    return None


def _verify_chain(msg: _Message, out: _Outcome) -> None:
    """pkcs7_verify_sig_chain(): follow embedded issuers, verifying each certificate."""
    assert out.signer is not None
    x = out.signer
    out.chain = [x]
    while True:
        if x.pkey is None:
            return
        if x.self_signed:
            return
        p = _find_issuer(msg, x)
        if p is None or p in out.chain:
            return
        if p.pkey is None or not _cert_signed_by(x, p.cert.public_key()):
            raise _fail(errno.EKEYREJECTED, f"certificate {x.label!r} is not signed by {p.label!r}")
        out.chain.append(p)
        x = p


def _verify_one(msg: _Message, si: _SignerInfo) -> _Outcome:
    """pkcs7_verify_one(): digest, find the embedded signer, check time and signature, walk chain."""
    out = _Outcome(digest=_digest(msg, si))
    out.signer = _find_key(msg, si)
    if out.signer is None:
        return out
    cert = out.signer.cert
    if si.signing_time is not None and not (cert.not_valid_before_utc <= si.signing_time <= cert.not_valid_after_utc):
        raise _fail(errno.EKEYREJECTED, "signed outside the signer certificate's validity")
    # Unlike the trust step below, pkcs7_verify_one() passes the crypto layer's errno through.
    err = _signature_errno(cert.public_key(), si.signature, out.digest, si.hash_name)
    if err == errno.EKEYREJECTED:
        raise _fail(err, f"signature does not verify with {out.signer.label!r} (tampered?)")
    if err:
        raise _fail(err, f"signature is not a valid {out.signer.pkey or 'signature'} encoding for "
                         f"{out.signer.label!r} (corrupted, or made by another key)")
    _verify_chain(msg, out)
    return out


def verify_message(msg: _Message) -> list[_Outcome]:
    """pkcs7_verify(msg, VERIFYING_UNSPECIFIED_SIGNATURE): internal consistency only.

    Raises SignatureError: EKEYREJECTED inner type not data, bad signature or messageDigest,
    signing time outside validity; EINVAL/EBADMSG an RSA signature that is no valid encoding
    (:func:`_rsa_pkcs1_errno`); EBADMSG malformed messageDigest; ENOPKG nothing verifiable.
    """
    if msg.data_type != _OID_DATA:
        raise _fail(errno.EKEYREJECTED, "inner content is not pkcs7-data")
    outcomes: list[_Outcome] = []
    for si in msg.signers:
        try:
            outcomes.append(_verify_one(msg, si))
        except SignatureError as e:
            if e.errno != errno.ENOPKG:
                raise
            outcomes.append(_Outcome(unsupported=True))
    if all(o.unsupported for o in outcomes):
        raise _fail(errno.ENOPKG, "no signature uses crypto the kernel supports")
    return outcomes


# --------------------------------------------------------------------------------------------
# Step 3: pkcs7_validate_trust()


def _lookup(keyring: Sequence[_Cert], id0: tuple[bytes, int] | None, id1: bytes | None) -> _Cert | None:
    """find_asymmetric_key(): by issuer+serial (then the SKID must agree too), else by SKID.

    Raises SignatureError EKEYREJECTED when the first id matches but the second does not.
    """
    if id0 is not None:
        for k in keyring:
            if k.issuer_serial == id0:
                if id1 is not None and k.skid != id1:
                    raise _fail(errno.EKEYREJECTED, "trusted key matches by issuer+serial but not by SKID")
                return k
        return None
    if id1 is not None:
        return next((k for k in keyring if k.skid == id1), None)
    return None


def _trust_one(si: _SignerInfo, out: _Outcome, keyring: Sequence[_Cert]) -> _Cert:
    """pkcs7_validate_trust_one(): the trusted certificate that vouches for this signer."""
    if out.unsupported:
        raise _fail(errno.ENOPKG, "signature uses crypto the kernel does not support")
    for i, x in enumerate(out.chain):
        try:
            key = _lookup(keyring, x.issuer_serial, x.skid)
        except SignatureError:
            key = None
        if key is not None:
            ok = (
                _verify_prehashed(key.cert.public_key(), si.signature, out.digest, si.hash_name)
                if i == 0
                else _cert_signed_by(out.chain[i - 1], key.cert.public_key())
            )
            if not ok:
                raise _fail(errno.EKEYREJECTED, f"trusted key {key.label!r} does not verify the signature")
            return out.chain[0]
        if x.self_signed:
            raise _fail(errno.ENOKEY, f"signer chain ends at {x.label!r}, which is not trusted")
    if out.chain:
        last = out.chain[-1]
        if last.akid_issuer_serial is not None or last.akid_keyid is not None:
            key = _lookup(keyring, last.akid_issuer_serial, last.akid_keyid)
            if key is not None:
                if not _cert_signed_by(last, key.cert.public_key()):
                    raise _fail(errno.EKEYREJECTED, f"trusted key {key.label!r} does not verify {last.label!r}")
                return out.chain[0]
    key = _lookup(keyring, si.issuer_serial, None) if si.issuer_serial is not None else _lookup(keyring, None, si.skid)
    if key is not None:
        if not _verify_prehashed(key.cert.public_key(), si.signature, out.digest, si.hash_name):
            raise _fail(errno.EKEYREJECTED, f"trusted key {key.label!r} does not verify the signature")
        return key
    raise _fail(errno.ENOKEY, f"signer {_signer_label(si, out)} is not among the trusted certificates")


def validate_trust(msg: _Message, outcomes: Sequence[_Outcome], keyring: Sequence[_Cert]) -> tuple[_SignerInfo, _Cert]:
    """pkcs7_validate_trust(): a SignerInfo whose chain reaches the keyring.

    Raises SignatureError: EKEYREJECTED a keyring key fails to verify; ENOPKG only unsupported
    crypto; ENOKEY no chain meets the keyring.
    """
    result: tuple[_SignerInfo, _Cert] | None = None
    cached = _fail(errno.ENOKEY, "no signer is trusted")
    for si, out in zip(msg.signers, outcomes, strict=True):
        try:
            vouched = _trust_one(si, out, keyring)
        except SignatureError as e:
            if e.errno == errno.ENOKEY:
                if cached.errno == errno.ENOKEY:
                    cached = e
                continue
            if e.errno == errno.ENOPKG:
                if cached.errno == errno.ENOKEY:
                    cached = e
                continue
            raise
        if result is None:
            result = (si, vouched)
    if result is None:
        raise cached
    return result


# --------------------------------------------------------------------------------------------
# Step 4 and the public entry points


def _content(msg: _Message) -> bytes:
    """pkcs7_get_content_data(): ENODATA when the content is detached."""
    if msg.data is None:
        raise _fail(errno.ENODATA, "detached signature: the PKCS#7 carries no policy text")
    return msg.data


def _signer_label(si: _SignerInfo, out: _Outcome | None) -> str:
    if out is not None and out.signer is not None:
        return repr(out.signer.label)
    if si.issuer_serial is not None:
        return f"issuer={_name_text(si.issuer_serial[0])!r} serial={si.issuer_serial[1]}"
    return f"skid={(si.skid or b'').hex()}"


def load_anchor(data: bytes) -> _Cert:
    """An X.509 trust anchor (PEM or DER), as a keyring entry.

    Raises ValueError when ``data`` holds no certificate.
    """
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        der = (
            cx509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
            if data.lstrip().startswith(b"-----BEGIN")
            else data
        )
        return _load_cert(der)
    except (ValueError, SignatureError) as e:
        raise ValueError(f"not a PEM or DER X.509 certificate ({e})") from None


def _fail_closed(blob: bytes, run: Any) -> VerifiedPolicy:
    try:
        result: VerifiedPolicy = run()
    except SignatureError:
        raise
    except Exception as e:
        raise _fail(errno.EKEYREJECTED, f"verification failed unexpectedly: {type(e).__name__}: {e}") from None
    return result


def verify_policy(blob: bytes, anchors: Sequence[bytes]) -> VerifiedPolicy:
    """verify_pkcs7_signature() against ``anchors`` (PEM or DER certificates: the keyring).

    Raises SignatureError with the kernel's errno: EMSGSIZE, EBADMSG, EINVAL, ENOPKG (parse);
    EKEYREJECTED (signature, messageDigest, or a trusted key that does not verify); EINVAL or
    EBADMSG (an embedded signer's RSA signature that is not a valid PKCS#1 v1.5 encoding);
    ENOKEY (signer not trusted); ENODATA (no embedded content). ValueError for a bad anchor.
    """
    keyring = [load_anchor(a) for a in anchors]

    def run() -> VerifiedPolicy:
        msg = parse_message(blob)
        outcomes = verify_message(msg)
        si, vouched = validate_trust(msg, outcomes, keyring)
        text = _content(msg)
        return VerifiedPolicy(
            text,
            vouched.label,
            vouched.issuer_serial[1],
            si.hash_name,
            blob,
            trust_checked=True,
            signature_checked=True,
        )

    return _fail_closed(blob, run)


def check_signature(blob: bytes) -> VerifiedPolicy:
    """Steps 1, 2 and 4 without trust: is the blob one the kernel could accept from *some* key?

    The signature is checked against the embedded signer certificate; without one
    (``-nocerts``) only the structure is checked and ``signature_checked`` is False.
    Raises SignatureError as :func:`verify_policy`, except ENOKEY.
    """

    def run() -> VerifiedPolicy:
        msg = parse_message(blob)
        outcomes = verify_message(msg)
        text = _content(msg)
        si, out = next(((s, o) for s, o in zip(msg.signers, outcomes, strict=True) if not o.unsupported))
        if out.signer is not None:
            return VerifiedPolicy(text, out.signer.label, out.signer.issuer_serial[1], si.hash_name, blob, False, True)
        serial = si.issuer_serial[1] if si.issuer_serial is not None else 0
        return VerifiedPolicy(text, _signer_label(si, None), serial, si.hash_name, blob, False, False)

    return _fail_closed(blob, run)


def is_pkcs7(blob: bytes) -> bool:
    """Content sniffing: a DER ContentInfo of type signedData, or PEM ``BEGIN PKCS7``/``CMS``.

    PEM is recognised only so that callers can say "convert to DER"; the kernel refuses it.
    """
    head = blob[:64].lstrip()
    if head.startswith((b"-----BEGIN PKCS7-----", b"-----BEGIN CMS-----")):
        return True
    if len(blob) < 15 or blob[0] != 0x30:
        return False
    # SEQUENCE header (short, long or indefinite form), then OBJECT IDENTIFIER 1.2.840.113549.1.7.2
    signed_data_oid = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02"
    first = blob[1]
    skip = 2 if first < 0x80 or first == 0x80 else 2 + (first & 0x7F)
    return blob[skip : skip + len(signed_data_oid)] == signed_data_oid


def unverified_content(blob: bytes) -> bytes | None:
    """The inner policy text without any signature or trust check (for display only)."""
    from asn1crypto import cms

    try:
        ci = cms.ContentInfo.load(blob, strict=False)
        if ci["content_type"].dotted != _OID_SIGNED_DATA:
            return None
        native = ci["content"]["encap_content_info"]["content"].native
    except Exception:
        return None
    return None if native is None else bytes(native)


def sign_policy(text: bytes, key_pem: bytes, cert_pem: bytes, hash_name: str = "sha256") -> bytes:
    """Attached DER PKCS#7 without signed attributes: the admin guide's
    ``openssl smime -sign -nodetach -noattr -binary -outform der`` (byte-identical for RSA).

    Raises ValueError: unsupported hash, unsupported or encrypted key, key not matching cert.
    """
    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import pkcs7

    if hash_name not in SIGN_HASHES:
        raise ValueError(f"unsupported hash {hash_name!r} (choose from {', '.join(SIGN_HASHES)})")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted; iped needs an unencrypted PEM key") from None
    cert = cx509.load_pem_x509_certificate(cert_pem)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported key type {type(key).__name__}: the kernel verifies RSA and ECDSA")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValueError("the private key does not belong to the certificate")
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(text)
        .add_signer(cert, key, _hash_for(hash_name))
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.NoAttributes, pkcs7.PKCS7Options.Binary])
    )
