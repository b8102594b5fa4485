"""The one certificate builder makes the profiles the kernel's keyrings look at, and its
signatures verify through iped.pkcs7 against the certificate it made."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from iped.pkcs7 import verify_policy
from tests.helpers.certs import certificate, common_name, new_key, sign, signer, write_pair
from tests.helpers.policies import policy_text


def test_a_self_signed_signer_is_ca_false() -> None:
    key = new_key("ec")
    cert = certificate(key, common_name("leaf"))
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_a_leaf_issued_by_a_ca_names_it_by_key_id(tmp_path: Path) -> None:
    ca_key = new_key("rsa")
    ca = certificate(ca_key, common_name("ca", organization="iped test"), ca=True, key_ids=True)
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    leaf_key = new_key("ec")
    leaf = certificate(leaf_key, common_name("leaf"), code_signing=True, key_ids=True, issuer=(ca, ca_key))
    assert leaf.issuer == ca.subject
    akid = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert akid.key_identifier == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    crt, key = write_pair(tmp_path, "leaf", leaf, leaf_key)
    assert crt.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert key.stat().st_mode & 0o777 == 0o600


def test_sign_verifies_against_its_signer() -> None:
    text = policy_text()
    assert verify_policy(sign(text), [signer()[0]]).text == text
