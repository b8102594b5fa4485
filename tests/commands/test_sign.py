"""``iped sign``: validates first, refuses loose keys, writes atomically, openssl agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iped.cli import main
from iped.pkcs7 import verify_policy
from tests.helpers.certs import Signer, make_signer, openssl
from tests.helpers.policies import policy_text

GOOD = policy_text("tosign", "2.0.0", "op=KMODULE action=DENY")


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(tmp_path_factory.mktemp("keys"), "sign-cli")


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    p = tmp_path / "tosign.pol"
    p.write_bytes(GOOD)
    return p


def sign_args(s: Signer, *rest: str) -> list[str]:
    return ["sign", "--key", str(s.key), "--cert", str(s.crt), *rest]


def test_sign_default_output(policy: Path, signer: Signer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(sign_args(signer, str(policy))) == 0
    out = policy.with_name(policy.name + ".p7s")
    blob = out.read_bytes()
    assert verify_policy(blob, [signer.cert_pem]).text == GOOD
    assert openssl("smime", "-verify", "-binary", "-inform", "der", "-noverify", "-in", out) == GOOD
    assert capsys.readouterr().out == ""
    # Atomic replacement leaves no temporary file behind.
    assert sorted(p.name for p in policy.parent.iterdir()) == ["tosign.pol", "tosign.pol.p7s"]
    # The signed blob validates against its signer.
    assert main(["validate", "--trust", str(signer.crt), str(out)]) == 0


def test_sign_to_stdout_and_hash(policy: Path, signer: Signer) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "iped", *sign_args(signer, "-o", "-", "--hash", "sha384", str(policy))],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    v = verify_policy(proc.stdout, [signer.cert_pem])
    assert (v.text, v.digest_algorithm) == (GOOD, "sha384")


def test_sign_refuses_group_readable_key(tmp_path: Path, policy: Path, signer: Signer) -> None:
    loose = tmp_path / "loose.key"
    loose.write_bytes(signer.key_pem)
    loose.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "iped", "sign", "--key", str(loose), "--cert", str(signer.crt), str(policy)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"iped: error: {loose}: private key is accessible by group or others (mode 0644)")
    assert f"chmod 600 {loose}" in proc.stderr
    assert not policy.with_name(policy.name + ".p7s").exists()


def test_sign_refuses_invalid_policy(tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pol"
    bad.write_bytes(b"policy_name=bad policy_version=1.0.0\nop=EXECUTE action=ALLOW\n")
    assert main(sign_args(signer, str(bad))) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}: EBADMSG: no global 'DEFAULT action='") and err.count("\n") == 1
    assert not (tmp_path / "bad.pol.p7s").exists()


def test_sign_refuses_already_signed_and_foreign_cert(
    tmp_path: Path, policy: Path, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.p7s"
    assert main(sign_args(signer, "-o", str(out), str(policy))) == 0
    capsys.readouterr()
    assert main(sign_args(signer, str(out))) == 1
    assert "already a signed PKCS#7" in capsys.readouterr().err
    other = make_signer(tmp_path / "other", "other")
    assert main(["sign", "--key", str(signer.key), "--cert", str(other.crt), str(policy)]) == 1
    assert "does not belong to the certificate" in capsys.readouterr().err


def test_sign_missing_policy_and_bad_hash(tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(sign_args(signer, str(tmp_path / "nope.pol"))) == 1
    assert "ENOENT" in capsys.readouterr().err
    assert main(sign_args(signer, "--hash", "md5", str(tmp_path / "nope.pol"))) == 2
