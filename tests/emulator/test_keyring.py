"""Signed policies through the emulator (keyring.py): the signature errnos the kernel's
verify_pkcs7_signature() + IPE's keyring fallback produce."""

from __future__ import annotations

import errno

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iped.emulator import Emulator
from iped.emulator.types import KernelConfig
from tests.helpers.certs import sign, signer
from tests.helpers.emulator import load, make_emulator
from tests.helpers.policies import policy_text


def _errno_of(emu: Emulator, blob: bytes) -> int:
    with pytest.raises(OSError) as ei:
        emu.write("new_policy", blob)
    assert ei.value.errno is not None
    return ei.value.errno


def test_signed_policy_loads_and_exposes_blob_and_text() -> None:
    emu = make_emulator()
    text = policy_text("signed", "1.2.3")
    blob = sign(text)
    assert emu.write("new_policy", blob) == len(blob)
    assert emu.read("policies/signed/pkcs7") == blob
    assert emu.read("policies/signed/policy") == text
    assert emu.read("policies/signed/active") == b"0"


def test_untrusted_signer_is_enokey() -> None:
    emu = make_emulator()
    assert _errno_of(emu, sign(policy_text(), "untrusted-signer-generated")) == errno.ENOKEY


def test_no_anchor_at_all_is_enokey() -> None:
    emu = Emulator()
    assert _errno_of(emu, sign(policy_text())) == errno.ENOKEY


def test_plain_text_to_new_policy_is_ebadmsg() -> None:
    emu = make_emulator()
    assert _errno_of(emu, policy_text()) == errno.EBADMSG


def test_tampered_content_is_ekeyrejected() -> None:
    text = policy_text("tamper", "0.0.1")
    blob = bytearray(sign(text))
    at = bytes(blob).find(b"tamper")
    blob[at] ^= 0x20  # "Tamper": the signature no longer covers the content
    emu = make_emulator()
    assert _errno_of(emu, bytes(blob)) == errno.EKEYREJECTED


def test_platform_keyring_is_tried_after_secondary() -> None:
    emu = Emulator()
    emu.trust(signer()[0], keyring="platform")
    load(emu, "plat")
    assert emu.read("policies/plat/name") == b"plat"


def test_platform_keyring_off_means_enokey() -> None:
    emu = Emulator(config=KernelConfig(policy_sig_platform_keyring=False))
    emu.trust(signer()[0], keyring="platform")
    assert _errno_of(emu, sign(policy_text())) == errno.ENOKEY


def test_secondary_keyring_off_uses_builtin_only() -> None:
    emu = Emulator(config=KernelConfig(policy_sig_secondary_keyring=False, policy_sig_platform_keyring=False))
    emu.trust(signer()[0], keyring="secondary")
    assert _errno_of(emu, sign(policy_text())) == errno.ENOKEY
    emu.trust(signer()[0], keyring="builtin")
    load(emu, "builtin")


def test_der_certificate_is_accepted_as_anchor() -> None:
    der = x509.load_pem_x509_certificate(signer()[0]).public_bytes(serialization.Encoding.DER)
    emu = Emulator()
    emu.trust(der)
    load(emu, "der")


def test_parse_errors_come_after_the_signature() -> None:
    emu = make_emulator()
    bad = policy_text("x", "99999.0.0")
    assert _errno_of(emu, sign(bad)) == errno.ERANGE
    assert _errno_of(emu, sign(bad, "untrusted-signer-generated")) == errno.ENOKEY


def test_failed_signature_is_audited_with_errno_on_616() -> None:
    emu = make_emulator("6.16")
    _errno_of(emu, sign(policy_text(), "untrusted-signer-generated"))
    assert emu.drain_audit() == [
        (
            1422,
            "policy_name=? policy_version=? policy_digest=? auid=4294967295 ses=4294967295 lsm=ipe res=0 errno=-126",
        )
    ]
    old = make_emulator("6.12")
    _errno_of(old, sign(policy_text(), "untrusted-signer-generated"))
    assert old.drain_audit() == []
