"""``iped validate``: exit codes, one line per invalid file, JSON schema, signed blobs and trust."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from iped.cli import main
from iped.pkcs7 import sign_policy
from tests.helpers.certs import Signer, make_signer, openssl
from tests.helpers.policies import policy_text

GOOD = policy_text("good", "1.0.2")
BAD_PROPERTY = (
    b"policy_name=bad policy_version=1.0.0\nDEFAULT action=ALLOW\n\nop=EXECUTE boot_verified=maybe action=ALLOW\n"
)
JSON_KEYS = {
    "path",
    "valid",
    "errno",
    "errno_number",
    "line",
    "token",
    "message",
    "policy_name",
    "policy_version",
    "signed",
    "signer",
    "trust_checked",
}


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signer]:
    d = tmp_path_factory.mktemp("keys")
    return {"own": make_signer(d, "own-signer"), "foreign": make_signer(d, "foreign-signer", "ec")}


def write(tmp_path: Path, name: str, data: bytes) -> str:
    (tmp_path / name).write_bytes(data)
    return str(tmp_path / name)


def iped(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iped", *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_valid_plain_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "good.pol", GOOD)
    assert main(["validate", path]) == 0
    out = capsys.readouterr()
    assert out.out == f"{path}: OK policy_name=good policy_version=1.0.2\n"
    assert out.err == ""


def test_invalid_policy_line_errno_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "x.pol", BAD_PROPERTY)
    assert main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"{path}:4: EBADMSG: unknown property")
    assert "(token 'boot_verified=maybe') — invalid policy: syntax error" in err


@pytest.mark.parametrize(
    ("text", "errno_name", "line"),
    [
        (policy_text("v", "1.70000.0"), "ERANGE", 1),
        (policy_text("v", "1.x.0"), "EINVAL", 1),
        (policy_text("v", "1.0.0", default="DEFAULT op=EXECUTE action=ALLOW"), "EBADMSG", None),
        (b"", "EBADMSG", None),
    ],
    ids=["range", "inval", "missing-defaults", "empty"],
)
def test_errno_and_line_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: bytes, errno_name: str, line: int | None
) -> None:
    path = write(tmp_path, "p.pol", text)
    assert main(["validate", "--json", path]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert (obj["errno"], obj["line"], obj["valid"]) == (errno_name, line, False)


def test_json_schema_for_mixed_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.pol", GOOD)
    bad = write(tmp_path, "bad.pol", BAD_PROPERTY)
    missing = str(tmp_path / "missing.pol")
    assert main(["validate", "--json", good, bad, missing]) == 1
    lines = capsys.readouterr().out.splitlines()
    objs = [json.loads(x) for x in lines]
    assert len(objs) == 3
    for obj in objs:
        assert obj.keys() >= JSON_KEYS
    g, b, m = objs
    assert g == g | {
        "path": good,
        "valid": True,
        "errno": None,
        "errno_number": None,
        "line": None,
        "token": None,
        "policy_name": "good",
        "policy_version": "1.0.2",
        "signed": False,
        "signer": None,
    }
    assert (
        b
        | {
            "path": bad,
            "valid": False,
            "errno": "EBADMSG",
            "errno_number": 74,
            "line": 4,
            "token": "boot_verified=maybe",
            "policy_name": None,
        }
        == b
    )
    assert (m["errno"], m["errno_number"], m["valid"]) == ("ENOENT", 2, False)


def test_missing_file_is_invalid_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "nope.pol")
    assert main(["validate", path]) == 1
    assert capsys.readouterr().err == f"{path}: ENOENT: No such file or directory\n"


@pytest.mark.parametrize(
    ("name", "errno_name"),
    [(b".", "EACCES"), (b"..", "EACCES"), (b"a/b", "EACCES"), (b"n" * 256, "ENAMETOOLONG")],
    ids=["dot", "dotdot", "slash", "too-long"],
)
def test_names_securityfs_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: bytes, errno_name: str
) -> None:
    path = write(tmp_path, "n.pol", b"policy_name=" + name + b" policy_version=0.0.1\nDEFAULT action=DENY\n")
    assert main(["validate", path]) == 1
    assert capsys.readouterr().err.startswith(f"{path}: {errno_name}: policy name")


def test_name_of_255_bytes_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "n.pol", b"policy_name=" + b"n" * 255 + b" policy_version=0.0.1\nDEFAULT action=DENY\n")
    assert main(["validate", path]) == 0


def test_signed_without_trust_says_trust_not_checked(
    tmp_path: Path, signers: dict[str, Signer], capsys: pytest.CaptureFixture[str]
) -> None:
    s = signers["own"]
    path = write(tmp_path, "good.bin", sign_policy(GOOD, s.key_pem, s.cert_pem))  # no telling extension
    assert main(["validate", path]) == 0
    out = capsys.readouterr().out
    assert out == f"{path}: OK policy_name=good policy_version=1.0.2 signed_by='CN=own-signer' (trust not checked)\n"
    assert main(["validate", "--json", path]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert (obj["signed"], obj["signer"], obj["trust_checked"]) == (True, "CN=own-signer", False)


def test_trust_accepts_own_signer_rejects_foreign(
    tmp_path: Path, signers: dict[str, Signer], capsys: pytest.CaptureFixture[str]
) -> None:
    own, foreign = signers["own"], signers["foreign"]
    path = write(tmp_path, "good.p7s", sign_policy(GOOD, own.key_pem, own.cert_pem))
    assert main(["validate", "--trust", str(own.crt), path]) == 0
    assert capsys.readouterr().out == f"{path}: OK policy_name=good policy_version=1.0.2 signed_by='CN=own-signer'\n"
    assert main(["validate", "--trust", str(foreign.crt), "--json", path]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert (obj["valid"], obj["errno"], obj["errno_number"], obj["signed"]) == (False, "ENOKEY", 126, True)


def test_signed_invalid_inner_text_reports_its_line(
    tmp_path: Path, signers: dict[str, Signer], capsys: pytest.CaptureFixture[str]
) -> None:
    s = signers["own"]
    path = write(tmp_path, "bad.p7s", sign_policy(BAD_PROPERTY, s.key_pem, s.cert_pem))
    assert main(["validate", "--trust", str(s.crt), path]) == 1
    assert capsys.readouterr().err.startswith(f"{path}:4: EBADMSG: unknown property")


def test_tampered_and_pem_blobs(tmp_path: Path, signers: dict[str, Signer], capsys: pytest.CaptureFixture[str]) -> None:
    s = signers["own"]
    blob = sign_policy(GOOD, s.key_pem, s.cert_pem)
    tampered = write(tmp_path, "t.p7s", blob.replace(b"ALLOW", b"ALLOX"))
    der = write(tmp_path, "d.p7s", blob)
    pem = write(tmp_path, "p.p7s", openssl("pkcs7", "-inform", "der", "-in", der, "-outform", "pem"))
    assert main(["validate", "--json", tampered, pem]) == 1
    t, p = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    assert (t["errno"], p["errno"]) == ("EKEYREJECTED", "EBADMSG")
    assert "DER" in p["message"]


def test_bad_trust_file_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "good.pol", GOOD)
    junk = write(tmp_path, "junk.crt", b"not a certificate")
    assert main(["validate", "--trust", junk, path]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"iped: error: {junk}: not a PEM or DER X.509 certificate") and err.count("\n") == 1


def test_ansible_style_validate(tmp_path: Path) -> None:
    """Ansible runs ``validate: iped validate %s`` on a temp file: exit code is the verdict."""
    good = write(tmp_path, "tmpXYZ", GOOD)
    bad = write(tmp_path, "tmpABC", BAD_PROPERTY)
    ok = iped("validate", good)
    assert (ok.returncode, ok.stderr) == (0, "")
    failed = iped("validate", bad)
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"{bad}:4: EBADMSG") and failed.stderr.count("\n") == 1
    usage = iped("validate")
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1


def test_stdin(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "iped", "validate", "-"], input=GOOD, capture_output=True, check=False,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout == b"-: OK policy_name=good policy_version=1.0.2\n"


def big_policy(size: int) -> bytes:
    """Valid policy text of exactly ``size`` bytes (comment lines after the header)."""
    head = GOOD
    comment = b"#" + b"x" * 126 + b"\n"
    body = comment * ((size - len(head)) // len(comment))
    return head + body + b"#" * (size - len(head) - len(body) - 1) + b"\n"


def test_validate_and_the_daemon_apply_one_size_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: a 157,952-byte policy passed ``iped validate`` (config management's ``validate:``)
    and the daemon then refused it (EMSGSIZE: the kernel takes at most 65535 bytes)."""
    from iped.daemon.declared import DeclError
    from iped.daemon.dropin import read_policy_file
    from iped.policyfile import MAX_POLICY_BYTES

    big = write(tmp_path, "big.pol", big_policy(157_952))
    assert main(["validate", big]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{big}: EMSGSIZE: 157952 bytes;") and str(MAX_POLICY_BYTES) in err
    daemon = read_policy_file(Path(big))
    assert isinstance(daemon, DeclError) and daemon.errno == errno.EMSGSIZE
    assert "157952 bytes;" in daemon.reason
    edge = write(tmp_path, "edge.pol", big_policy(MAX_POLICY_BYTES))  # the largest the kernel takes
    assert main(["validate", edge]) == 0
    assert main(["validate", write(tmp_path, "over.pol", big_policy(MAX_POLICY_BYTES + 1))]) == 1
    capsys.readouterr()


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_validate_refuses_a_huge_file_by_its_size_without_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: a 1 GiB sparse file was read whole (7.8 s, 2.1 GB RSS) and then reported as
    "no header line (text ends at a NUL byte)"; its size is the problem, and is told first."""
    huge = tmp_path / "huge.pol"
    with open(huge, "wb") as f:
        f.write(GOOD)
        f.truncate(1 << 30)
    assert main(["validate", write(tmp_path, "small.pol", GOOD)]) == 0  # every module imported before counting
    before = _bytes_read()
    assert main(["validate", str(huge)]) == 1
    assert _bytes_read() - before < 1 << 20  # rchar: bytes this process read, all files included
    err = capsys.readouterr().err
    assert err.startswith(f"{huge}: EMSGSIZE: {1 << 30} bytes;") and err.count("\n") == 1


def test_validate_stdin_over_the_limit(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "iped", "validate", "-"], input=big_policy(200_000),
                          capture_output=True, check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"-: EMSGSIZE: more than 65535 bytes;"), proc.stderr
