"""Fuzzing what the daemon reads from the drop-in dir: signed PKCS#7 containers (iped.pkcs7) and
whole policy files through the shared validator (iped.policyfile.check_policy), the daemon's
file loader included. 0 crashes: only the documented error types, or a verdict.

Small example counts in the normal run; ``IPED_FUZZ_LONG=1`` runs 100 times as many.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iped.daemon.declared import DeclaredPolicy, DeclError
from iped.daemon.devkey import ensure_dev_key
from iped.daemon.scan import load_policy_file
from iped.pkcs7 import SignatureError, check_signature, parse_message, sign_policy, verify_policy
from iped.policyfile import CheckedPolicy, PolicyProblem, SigningMaterial, check_policy
from tests.helpers.policies import policy_text

SCALE = 100 if os.environ.get("IPED_FUZZ_LONG") == "1" else 1
FUZZ = settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT = policy_text("fuzz", "1.2.3", "op=EXECUTE boot_verified=TRUE action=DENY")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    key, cert = ensure_dev_key(tmp_path_factory.mktemp("fuzzkeys"))
    return key.read_bytes(), cert.read_bytes()


@pytest.fixture(scope="module")
def blob(keys: tuple[bytes, bytes]) -> bytes:
    return sign_policy(TEXT, *keys)


@st.composite
def mutations(draw: st.DrawFn, seed: bytes) -> bytes:
    """A few byte-level edits of ``seed``: flips, cuts, inserts, and DER length bytes set to
    extremes (the edits that reach deep into an ASN.1 decoder)."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(0, len(data) - 1)))
        match draw(st.sampled_from(["flip", "cut", "insert", "length", "truncate"])):
            case "flip" if data:
                data[at] ^= 1 << draw(st.integers(0, 7))
            case "cut":
                del data[at : at + draw(st.integers(1, 16))]
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
            case "length" if data:
                data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0x89, 0xFF]))
            case _:
                del data[at:]
    return bytes(data)


def only_signature_errors(run: object) -> None:
    """``run()`` returns or raises SignatureError with an errno; an exception the verifier did not
    expect (its fail-closed wrapper says "unexpectedly") is a crash too."""
    try:
        run()  # type: ignore[operator]
    except SignatureError as e:
        assert isinstance(e.errno, int) and e.errno > 0
        assert "unexpectedly" not in e.reason, e.reason


def test_seed_blob_verifies(blob: bytes, keys: tuple[bytes, bytes]) -> None:
    assert verify_policy(blob, [keys[1]]).text == TEXT


@FUZZ
@given(data=st.data())
def test_pkcs7_mutants(blob: bytes, keys: tuple[bytes, bytes], data: st.DataObject) -> None:
    mutant = data.draw(mutations(blob))
    only_signature_errors(lambda: parse_message(mutant))
    only_signature_errors(lambda: check_signature(mutant))
    only_signature_errors(lambda: verify_policy(mutant, [keys[1]]))


@FUZZ
@given(st.binary(max_size=300).map(lambda b: b"\x30" + b))
def test_pkcs7_arbitrary_sequences(data: bytes) -> None:
    only_signature_errors(lambda: parse_message(data))
    only_signature_errors(lambda: check_signature(data))


def verdict(raw: bytes, material: SigningMaterial, sign_text: bool) -> CheckedPolicy | PolicyProblem:
    got = check_policy(raw, material, sign_text=sign_text)
    assert isinstance(got, CheckedPolicy | PolicyProblem)
    if isinstance(got, PolicyProblem):
        assert got.errno > 0 and got.reason
    return got


@FUZZ
@given(data=st.data())
def test_check_policy_on_mutated_files(blob: bytes, keys: tuple[bytes, bytes], data: st.DataObject) -> None:
    raw = data.draw(st.one_of(mutations(blob), mutations(TEXT), st.binary(max_size=200)))
    verdict(raw, SigningMaterial(None), sign_text=False)
    signing = SigningMaterial((keys[1],), *keys)
    got = verdict(raw, signing, sign_text=True)
    if isinstance(got, CheckedPolicy):
        assert got.blob is not None and got.signer is not None


@FUZZ
@given(data=st.data())
def test_daemon_loader_on_mutated_files(tmp_path_factory: pytest.TempPathFactory, keys: tuple[bytes, bytes],
                                        blob: bytes, data: st.DataObject) -> None:
    raw = data.draw(st.one_of(mutations(blob), mutations(TEXT)))
    path: Path = tmp_path_factory.mktemp("load") / "f.pol"
    path.write_bytes(raw)
    got = load_policy_file(path, SigningMaterial((keys[1],), *keys))
    assert isinstance(got, DeclaredPolicy | DeclError)
    if isinstance(got, DeclError):
        str(got)  # renders
        assert got.as_dict()["errno_name"]
