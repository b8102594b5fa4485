"""iped.pkcs7 against the real openssl binary: signing recipe, and the kernel's errno per case.

Keys and certificates come from the tests' one certificate builder (tests/helpers/certs.py) in
temporary directories, and the odd containers (detached, signed attributes, ``-nocerts``, PEM)
from ``openssl smime``, so every container is a blob a real tool produces.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iped.pkcs7 import (
    ASN1_MAX_LEN,
    SIGN_HASHES,
    SignatureError,
    check_signature,
    is_pkcs7,
    sign_policy,
    unverified_content,
    verify_policy,
)
from tests.helpers.certs import Signer, make_leaf, make_signer, openssl
from tests.helpers.policies import policy_text

POLICY = policy_text("signed", "1.2.3", "op=EXECUTE boot_verified=TRUE action=DENY")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signer]:
    d = tmp_path_factory.mktemp("keys")
    ca = make_signer(d, "test-ca")
    return {
        "rsa": make_signer(d, "rsa-signer"),
        "ec": make_signer(d, "ec-signer", "ec"),
        "other": make_signer(d, "untrusted-signer"),
        "ca": ca,
        "leaf": make_leaf(d, "leaf-signer", ca),
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("work")
    (d / "policy.pol").write_bytes(POLICY)
    (d / "empty").write_bytes(b"")
    return d


def smime_sign(work: Path, signer: Signer, *flags: str, infile: str = "policy.pol", md: str = "sha256") -> bytes:
    """``openssl smime -sign -binary -outform der`` with extra flags (the admin guide adds -nodetach -noattr)."""
    out = work / "out.p7s"
    openssl("smime", "-sign", "-binary", "-outform", "der", "-md", md, "-in", work / infile,
            "-signer", signer.crt, "-inkey", signer.key, "-out", out, *flags)  # fmt: skip
    return out.read_bytes()


def expect_errno(blob: bytes, anchors: list[bytes], want: int) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        verify_policy(blob, anchors)
    assert info.value.errno == want, str(info.value)
    return info.value


# -- signing --------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_name", SIGN_HASHES)
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_sign_verify_round_trip(keys: dict[str, Signer], kind: str, hash_name: str) -> None:
    s = keys[kind]
    blob = sign_policy(POLICY, s.key_pem, s.cert_pem, hash_name)
    v = verify_policy(blob, [s.cert_pem])
    assert v.text == POLICY
    assert v.digest_algorithm == hash_name
    assert v.signer_subject == f"CN={kind}-signer"
    assert v.pkcs7 == blob
    assert v.trust_checked and v.signature_checked


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_openssl_verifies_and_returns_exact_policy(keys: dict[str, Signer], work: Path, kind: str) -> None:
    blob = sign_policy(POLICY, keys[kind].key_pem, keys[kind].cert_pem)
    (work / "ours.p7s").write_bytes(blob)
    out = openssl("smime", "-verify", "-binary", "-inform", "der", "-noverify", "-in", work / "ours.p7s")
    assert out == POLICY


@pytest.mark.parametrize("hash_name", SIGN_HASHES)
def test_rsa_output_is_byte_identical_to_openssl_recipe(keys: dict[str, Signer], work: Path, hash_name: str) -> None:
    ours = sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem, hash_name)
    theirs = smime_sign(work, keys["rsa"], "-nodetach", "-noattr", md=hash_name)
    assert ours == theirs


def test_sign_rejects_mismatched_key_and_unknown_hash(keys: dict[str, Signer]) -> None:
    with pytest.raises(ValueError, match="does not belong"):
        sign_policy(POLICY, keys["rsa"].key_pem, keys["other"].cert_pem)
    with pytest.raises(ValueError, match="unsupported hash"):
        sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem, "md5")


def test_der_anchor_accepted(keys: dict[str, Signer], work: Path) -> None:
    der = openssl("x509", "-in", keys["rsa"].crt, "-outform", "der")
    blob = sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem)
    assert verify_policy(blob, [der]).text == POLICY


# -- the kernel's errno for each container variant ---------------------------------------------


def test_unsigned_text_is_ebadmsg(keys: dict[str, Signer]) -> None:
    expect_errno(POLICY, [keys["rsa"].cert_pem], errno.EBADMSG)


def test_pem_wrapped_is_ebadmsg_with_hint(keys: dict[str, Signer], work: Path) -> None:
    pem = smime_sign(work, keys["rsa"], "-nodetach", "-noattr") and openssl(
        "pkcs7", "-inform", "der", "-in", work / "out.p7s", "-outform", "pem"
    )
    assert pem.startswith(b"-----BEGIN PKCS7-----")
    assert is_pkcs7(pem)
    err = expect_errno(pem, [keys["rsa"].cert_pem], errno.EBADMSG)
    assert "DER" in err.reason


@pytest.mark.parametrize("cut", [1, 10, 300])
def test_truncated_is_ebadmsg(keys: dict[str, Signer], cut: int) -> None:
    blob = sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem)
    expect_errno(blob[:-cut], [keys["rsa"].cert_pem], errno.EBADMSG)


def test_trailing_garbage_is_ignored_like_the_asn1_decoder(keys: dict[str, Signer]) -> None:
    # asn1_ber_decoder() returns at ASN1_OP_COMPLETE without checking that the input was used up.
    blob = sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem) + b"\0garbage"
    assert verify_policy(blob, [keys["rsa"].cert_pem]).text == POLICY


def test_larger_than_asn1_decoder_limit_is_emsgsize(keys: dict[str, Signer]) -> None:
    big = POLICY + b"# " + b"x" * ASN1_MAX_LEN + b"\n"
    blob = sign_policy(big, keys["rsa"].key_pem, keys["rsa"].cert_pem)
    expect_errno(blob, [keys["rsa"].cert_pem], errno.EMSGSIZE)


def test_tampered_content_is_ekeyrejected(keys: dict[str, Signer]) -> None:
    blob = sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem)
    tampered = blob.replace(b"action=DENY", b"action=ALOW")
    assert tampered != blob and len(tampered) == len(blob)
    expect_errno(tampered, [keys["rsa"].cert_pem], errno.EKEYREJECTED)
    # Even with an untrusted signer: the signature check comes before the trust check.
    expect_errno(tampered, [keys["other"].cert_pem], errno.EKEYREJECTED)


def test_detached_signature_is_ekeyrejected(keys: dict[str, Signer], work: Path) -> None:
    # pkcs7_digest() hashes the absent content as empty, so the signature fails before ENODATA.
    blob = smime_sign(work, keys["rsa"], "-noattr")
    assert unverified_content(blob) is None
    expect_errno(blob, [keys["rsa"].cert_pem], errno.EKEYREJECTED)


def test_detached_signature_over_empty_content_is_enodata(keys: dict[str, Signer], work: Path) -> None:
    blob = smime_sign(work, keys["rsa"], "-noattr", infile="empty")
    expect_errno(blob, [keys["rsa"].cert_pem], errno.ENODATA)


def test_openssl_default_attributes_are_ekeyrejected(keys: dict[str, Signer], work: Path) -> None:
    # Without -noattr openssl adds SMIMECapabilities, which pkcs7_parser.c allows only for Authenticode.
    blob = smime_sign(work, keys["rsa"], "-nodetach")
    err = expect_errno(blob, [keys["rsa"].cert_pem], errno.EKEYREJECTED)
    assert "S/MIME" in err.reason


def test_valid_signed_attributes_are_accepted(keys: dict[str, Signer], work: Path) -> None:
    # The kernel verifies over the DER SET of the attributes after checking messageDigest.
    blob = smime_sign(work, keys["rsa"], "-nodetach", "-nosmimecap")
    assert verify_policy(blob, [keys["rsa"].cert_pem]).text == POLICY


def test_signed_attributes_with_wrong_message_digest_are_ekeyrejected(keys: dict[str, Signer], work: Path) -> None:
    blob = smime_sign(work, keys["rsa"], "-nodetach", "-nosmimecap")
    tampered = blob.replace(b"action=DENY", b"action=ALOW")
    err = expect_errno(tampered, [keys["rsa"].cert_pem], errno.EKEYREJECTED)
    assert "messageDigest" in err.reason


def _raw_rsa(signer: Signer, em: bytes) -> bytes:
    """m^d mod n: an RSA 'signature' whose public-key result is exactly ``em``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_pem_private_key(signer.key_pem, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.private_numbers()
    return pow(int.from_bytes(em, "big"), numbers.d, numbers.public_numbers.n).to_bytes(256, "big")


def _with_signature(blob: bytes, signature: bytes) -> bytes:
    """``blob`` (RSA-2048, no signed attributes: the signature is its last field) re-signed."""
    assert blob[-260:-256] == b"\x04\x82\x01\x00", "the blob does not end with a 256-byte signature"
    return blob[:-256] + signature


SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
SHA1_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")


def _em(block_type: int, prefix: bytes, digest: bytes) -> bytes:
    return b"\x00" + bytes([block_type]) + b"\xff" * (256 - 3 - len(prefix) - len(digest)) + b"\x00" + prefix + digest


@pytest.mark.parametrize(
    ("kind", "want"),
    [("not-an-encoding", errno.EINVAL), ("block-type-2", errno.EBADMSG), ("sha1-prefix", errno.EBADMSG),
     ("other-digest", errno.EKEYREJECTED)],
)
def test_rsa_signature_errno_follows_the_kernels_pkcs1_check(keys: dict[str, Signer], work: Path, kind: str,
                                                             want: int) -> None:
    """pkcs7_verify_one() passes rsassa_pkcs1_verify()'s errno on (lab: k-corrupt-sig EINVAL,
    k-rsa-em-type2 and k-rsa-em-sha1-prefix EBADMSG, k-tampered EKEYREJECTED); found only
    through the keyring (no certificate embedded), any failure is EKEYREJECTED (k-no-certs-*)."""
    import hashlib

    rsa = keys["rsa"]
    digest = hashlib.sha256(POLICY).digest()
    if kind == "not-an-encoding":
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

        pub = x509.load_pem_x509_certificate(rsa.cert_pem).public_key()
        assert isinstance(pub, RSAPublicKey)
        signature = (pub.public_numbers().n - 1).to_bytes(256, "big")  # (n-1)^e = n-1: no leading zero byte
    else:
        em = {
            "block-type-2": _em(2, SHA256_PREFIX, digest),
            "sha1-prefix": _em(1, SHA1_PREFIX, digest),
            "other-digest": _em(1, SHA256_PREFIX, hashlib.sha256(POLICY + b"#").digest()),
        }[kind]
        signature = _raw_rsa(rsa, em)
    embedded = _with_signature(sign_policy(POLICY, rsa.key_pem, rsa.cert_pem), signature)
    expect_errno(embedded, [rsa.cert_pem], want)
    keyring_only = _with_signature(smime_sign(work, rsa, "-nodetach", "-noattr", "-nocerts"), signature)
    expect_errno(keyring_only, [rsa.cert_pem], errno.EKEYREJECTED)
    # The well-formed encoding of the right digest verifies: the helpers build what a signer would.
    good = _with_signature(sign_policy(POLICY, rsa.key_pem, rsa.cert_pem), _raw_rsa(rsa, _em(1, SHA256_PREFIX, digest)))
    assert verify_policy(good, [rsa.cert_pem]).text == POLICY


def test_untrusted_signer_is_enokey(keys: dict[str, Signer]) -> None:
    blob = sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem)
    expect_errno(blob, [keys["other"].cert_pem], errno.ENOKEY)
    expect_errno(blob, [], errno.ENOKEY)


def test_no_embedded_cert_found_in_anchors_by_issuer_and_serial(keys: dict[str, Signer], work: Path) -> None:
    blob = smime_sign(work, keys["rsa"], "-nodetach", "-noattr", "-nocerts")
    v = verify_policy(blob, [keys["other"].cert_pem, keys["rsa"].cert_pem])
    assert v.text == POLICY and v.signer_subject == "CN=rsa-signer"
    expect_errno(blob, [keys["other"].cert_pem], errno.ENOKEY)


def test_no_embedded_cert_tampered_is_ekeyrejected_by_the_trusted_key(keys: dict[str, Signer], work: Path) -> None:
    blob = smime_sign(work, keys["rsa"], "-nodetach", "-noattr", "-nocerts").replace(b"DENY", b"DENI")
    expect_errno(blob, [keys["rsa"].cert_pem], errno.EKEYREJECTED)


def test_unsupported_digest_is_enopkg(keys: dict[str, Signer], work: Path) -> None:
    blob = smime_sign(work, keys["rsa"], "-nodetach", "-noattr", md="md5")
    expect_errno(blob, [keys["rsa"].cert_pem], errno.ENOPKG)


def test_signer_issued_by_trusted_ca(keys: dict[str, Signer]) -> None:
    blob = sign_policy(POLICY, keys["leaf"].key_pem, keys["leaf"].cert_pem)
    v = verify_policy(blob, [keys["ca"].cert_pem])
    assert v.text == POLICY and v.signer_subject == "CN=leaf-signer"
    expect_errno(blob, [keys["rsa"].cert_pem], errno.ENOKEY)


def test_check_signature_without_anchors(keys: dict[str, Signer], work: Path) -> None:
    v = check_signature(sign_policy(POLICY, keys["ec"].key_pem, keys["ec"].cert_pem))
    assert (v.text, v.trust_checked, v.signature_checked) == (POLICY, False, True)
    nocerts = check_signature(smime_sign(work, keys["rsa"], "-nodetach", "-noattr", "-nocerts"))
    assert (nocerts.text, nocerts.signature_checked) == (POLICY, False)
    with pytest.raises(SignatureError) as info:
        check_signature(sign_policy(POLICY, keys["ec"].key_pem, keys["ec"].cert_pem).replace(b"DENY", b"DENI"))
    assert info.value.errno == errno.EKEYREJECTED


def test_sniffing(keys: dict[str, Signer]) -> None:
    blob = sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem)
    assert is_pkcs7(blob)
    assert not is_pkcs7(POLICY)
    assert not is_pkcs7(keys["rsa"].cert_pem)
    assert not is_pkcs7(openssl("x509", "-in", keys["rsa"].crt, "-outform", "der"))
    assert unverified_content(blob) == POLICY
    assert unverified_content(POLICY) is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_blob_never_verifies_other_text(keys: dict[str, Signer], data: st.DataObject) -> None:
    """Fail closed: a corrupted blob raises SignatureError or still yields exactly the signed text."""
    blob = bytearray(sign_policy(POLICY, keys["rsa"].key_pem, keys["rsa"].cert_pem))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    try:
        v = verify_policy(bytes(blob), [keys["rsa"].cert_pem])
    except SignatureError as e:
        assert e.errno in (errno.EBADMSG, errno.EINVAL, errno.ENOPKG, errno.EKEYREJECTED, errno.ENOKEY, errno.ENODATA)
    else:
        assert v.text == POLICY
