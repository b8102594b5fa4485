"""What the fleet modules rely on: validate --format/--require-signed, check-config, plan --json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iped.cli import main
from iped.pkcs7 import sign_policy
from tests.helpers.daemon import DaemonProc, Site, iped
from tests.helpers.policies import policy_text

TEXT = policy_text("fleet", "1.0.0")


@pytest.fixture
def signed(site: Site) -> bytes:
    return sign_policy(TEXT, site.key.read_bytes(), site.cert.read_bytes())


def test_validate_sniffs_content_whatever_the_name(tmp_path: Path, signed: bytes,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Ansible's validate: passes a temp file with neither .pol nor .p7s
    (tmp_path / "tmpa1b2c3").write_bytes(signed)
    (tmp_path / "tmpd4e5f6").write_bytes(TEXT)
    assert main(["validate", str(tmp_path / "tmpa1b2c3"), str(tmp_path / "tmpd4e5f6")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "signed_by=" in out[0] and "signed_by=" not in out[1]


def test_require_signed_refuses_unsigned_text_as_new_policy_does(tmp_path: Path, signed: bytes,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").write_bytes(TEXT)
    (tmp_path / "blob").write_bytes(signed)
    assert main(["validate", str(tmp_path / "plain")]) == 0  # plain text is fine for *.pol the daemon signs
    capsys.readouterr()
    assert main(["validate", "--require-signed", str(tmp_path / "plain")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{tmp_path / 'plain'}: EBADMSG: not a signed PKCS#7 blob (--require-signed)")
    assert main(["validate", "--require-signed", "--json", str(tmp_path / "blob")]) == 0
    assert json.loads(capsys.readouterr().out)["signed"] is True


@pytest.mark.parametrize(("fmt", "which", "ok"), [
    ("text", "plain", True), ("text", "blob", False), ("pkcs7", "blob", True), ("pkcs7", "plain", False),
    ("auto", "plain", True), ("auto", "blob", True),
])
def test_format(tmp_path: Path, signed: bytes, fmt: str, which: str, ok: bool, *,
                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").write_bytes(TEXT)
    (tmp_path / "blob").write_bytes(signed)
    assert main(["validate", "--format", fmt, "--json", str(tmp_path / which)]) == (0 if ok else 1)
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is ok and (ok or result["errno"] == "EBADMSG")


def test_check_config_accepts_what_the_daemon_runs_with(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(site.config)]) == 0
    assert capsys.readouterr().out == f"{site.config}: OK\n"


def test_check_config_reports_every_problem_at_its_line(tmp_path: Path, site: Site,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[policies]\nenforce = \"yes\"\nsigning_key = \"missing.key\"\n"
                   f"signing_cert = \"{site.cert}\"\n[daemon]\nhistroy = 3\n")
    assert main(["check-config", "--config", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{bad}:2: policies.enforce: Input should be a valid boolean (a boolean is written true or false, unquoted)",
        f"{bad}:6: daemon.histroy: unknown key; did you mean 'history'? (see docs/daemon.md for the keys iped.toml "
        "accepts)",
    ]
    bad.write_text(f"[policies]\nsigning_key = \"missing.key\"\nsigning_cert = \"{site.cert}\"\n"
                   "trust_anchors = [\"notacert.pem\"]\n")
    (tmp_path / "notacert.pem").write_text("hello\n")
    assert main(["check-config", "--config", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{bad}:4: policies.trust_anchors: {tmp_path / 'notacert.pem'}: ")
    assert err[1].startswith(f"{bad}:2: policies.signing_key: {tmp_path / 'missing.key'}: ENOENT: ")


def test_check_config_relative_to(tmp_path: Path, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    # Ansible validates a temp copy elsewhere: relative paths must resolve against the real directory
    copy = tmp_path / "elsewhere" / "tmpXYZ"
    copy.parent.mkdir()
    copy.write_text(site.config.read_text().replace(str(site.key), "key.pem"))
    (site.root / "key.pem").write_bytes(site.key.read_bytes())
    (site.root / "key.pem").chmod(0o600)  # the daemon's rule for a signing key, which check-config applies
    assert main(["check-config", "--config", str(copy)]) == 1
    assert "policies.signing_key" in capsys.readouterr().err
    assert main(["check-config", "--relative-to", str(site.root), "--config", str(copy)]) == 0


def plan(site: Site, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = iped("plan", "--json", "--config", str(site.config), *extra)
    return proc.returncode, json.loads(proc.stdout)


def versions(state: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["version"] for p in state["policies"]}


def test_plan_json_is_a_versioned_before_after_document(quiet_daemon: DaemonProc) -> None:
    site = quiet_daemon.site
    rc, doc = plan(site)
    assert (rc, doc["schema_version"], doc["outcome"], doc["daemon"]) == (9, 2, "unchanged", True)
    assert doc["before"] == doc["after"] and doc["after"]["active"] == "base"
    assert {"enforce", "success_audit"} <= doc["after"].keys()
    [base] = doc["after"]["policies"]
    assert base["active"] and len(base["text_digest"]) == 64 and len(base["blob_digest"]) == 64

    site.put("base.pol", policy_text("base", "1.0.1"))
    site.put("extra.pol", policy_text("extra", "1.0.0"))
    rc, doc = plan(site)
    assert (rc, doc["outcome"]) == (0, "would-apply")
    assert versions(doc["before"]) == {"base": "1.0.0"}
    assert versions(doc["after"]) == {"base": "1.0.1", "extra": "1.0.0"}
    assert [s["kind"] for s in doc["steps"]] == ["update", "load"]

    site.put("base.pol", policy_text("base", "0.9.0"))
    rc, doc = plan(site)
    assert (rc, doc["outcome"], doc["steps"]) == (1, "rejected", [])
    assert doc["after"] == doc["before"]
    assert any("anti-rollback" in r and "ESTALE" in r for r in doc["reasons"])


def test_plan_from_the_daemon_reads_the_edited_config(quiet_daemon: DaemonProc) -> None:
    """Before the fix the daemon planned with the iped.toml it had loaded at its last reconcile."""
    site = quiet_daemon.site
    site.put("other.pol", policy_text("other", "2.0.0"))
    site.active = "other"
    site.write_config()
    rc, doc = plan(site)
    assert (rc, doc["daemon"], doc["after"]["active"]) == (0, True, "other")
