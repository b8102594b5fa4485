"""Signed policies through the emulator (keyring.py): the signature errnos the kernel's
verify_pkcs7_signature() + IPE's keyring fallback produce."""

from __future__ import annotations

import errno
from pathlib import Path

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


def test_cert_to_der_is_cryptographys_der_without_it() -> None:
    """The keyring reads anchors with the standard library (cryptography stays out of a daemon
    on the emulator): the DER of a PEM is cryptography's, DER is taken as it is, junk refused."""
    from iped.emulator.keyring import cert_to_der

    pem = signer()[0]
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert cert_to_der(pem) == der
    assert cert_to_der(b"\n  " + pem + b"\ntrailing text\n") == der
    assert cert_to_der(der) == der
    junks = (b"", b"0", der[:-1], der + b"\0", b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
             b"-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n", b"\x30\x03\x02\x01\x00")  # fmt: skip
    for junk in junks:
        with pytest.raises(ValueError):
            cert_to_der(junk)


def test_an_anchor_the_verification_cannot_parse_trusts_nothing() -> None:
    """cert_to_der checks an anchor's outer shape only; one with that shape that is no
    certificate is skipped by the verification: ENOKEY, never trust."""
    emu = make_emulator()
    emu.trust(b"\x30\x08\x30\x00\x30\x00\x03\x02\x00\x00")  # the shape, empty
    assert _errno_of(emu, sign(policy_text(), "untrusted-signer-generated")) == errno.ENOKEY
    load(emu, "still", "1.0.0")  # the good anchor beside it still verifies


EMULATOR_IN_A_FRESH_PROCESS = """
import errno, json, sys
from pathlib import Path
from iped.emulator import Emulator

emu = Emulator()
emu.trust(Path(sys.argv[1]).read_bytes())
good, bad = Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]).read_bytes()
emu.write("new_policy", good)
try:
    emu.write("new_policy", bad)
    refused = None
except OSError as e:
    refused = e.errno
print(json.dumps({
    "policies": emu.listdir("policies"),
    "refused": refused,
    "crypto": sorted(m for m in sys.modules if m.split(".")[0] in ("cryptography", "asn1crypto")),
}))
"""


def test_the_emulator_verifies_in_a_child_when_the_crypto_stack_is_not_loaded(tmp_path: Path) -> None:
    """In a process without the crypto stack (a daemon on the emulator), new_policy verifies in
    a short-lived child: the good blob taken, a tampered one refused, neither cryptography nor
    asn1crypto left loaded."""
    import json
    import subprocess
    import sys

    good = sign(policy_text("good", "1.0.0"))
    bad = sign(policy_text("bad", "1.0.0"))
    (tmp_path / "anchor.pem").write_bytes(signer()[0])
    (tmp_path / "good.p7s").write_bytes(good)
    (tmp_path / "bad.p7s").write_bytes(bad[:-1] + bytes([bad[-1] ^ 1]))
    argv = [sys.executable, "-c", EMULATOR_IN_A_FRESH_PROCESS, *(str(tmp_path / n) for n in ("anchor.pem", "good.p7s",
                                                                                               "bad.p7s"))]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["policies"] == ["good"]
    assert got["refused"] in (errno.EBADMSG, errno.EKEYREJECTED, errno.EINVAL)  # (EINVAL: an RSA signer)
    assert got["crypto"] == []


def test_a_child_that_dies_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """No answer from the verifying child: EKEYREJECTED, nothing loaded."""
    from iped import forked

    def dies(call: object) -> bytes:
        raise forked.ChildFailedError("its process ended with status 9")

    emu = make_emulator()
    monkeypatch.setattr(forked, "crypto_loaded", lambda: False)
    monkeypatch.setattr(forked, "call_in_child", dies)
    assert _errno_of(emu, sign(policy_text())) == errno.EKEYREJECTED
    assert emu.listdir("policies") == []
