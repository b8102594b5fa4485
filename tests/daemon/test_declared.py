"""Scanning the drop-in dir: temporaries ignored, parse/sign/verify errors located, duplicates refused."""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

from iped.daemon.declared import is_ignored, policy_files
from iped.daemon.log import NullReporter
from iped.daemon.planlog import PlanLog
from iped.daemon.reconcile import Reconciler
from iped.pkcs7 import sign_policy
from iped.settings import PolicySettings, Settings
from tests.daemon.conftest import policy_text


def reconciler(tmp_path: Path, keys: tuple[Path, Path], with_key: bool = True) -> Reconciler:
    d = tmp_path / "p"
    d.mkdir(exist_ok=True)
    pol = PolicySettings(dir=d, active=None, signing_key=keys[0] if with_key else None,
                         signing_cert=keys[1] if with_key else None,
                         trust_anchors=() if with_key else (keys[1],))
    return Reconciler(Settings(policies=pol), None, PlanLog(tmp_path / "s"), NullReporter())  # type: ignore[arg-type]


def test_ignored_names() -> None:
    for n in (".x.pol", "a.pol~", "a.pol.dpkg-new", "a.pol.dpkg-old", "a.p7s.rpmnew", "a.pol.rpmsave",
              ".ansible_tmp123a.p7s", "a.pol.swp"):
        assert is_ignored(n), n
    for n in ("a.pol", "b.p7s", "under_score-1.pol"):
        assert not is_ignored(n), n


def test_policy_files_only_known_suffixes(tmp_path: Path) -> None:
    for n in ("b.pol", "a.p7s", "c.txt", ".d.pol", "README"):
        (tmp_path / n).write_text("x")
    assert [p.name for p in policy_files(tmp_path)] == ["a.p7s", "b.pol"]


def test_scan_collects_located_errors(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    rec = reconciler(tmp_path, dev_keys)
    d = rec.settings.policies.dir
    (d / "a.pol").write_bytes(policy_text("a", "1.0.0"))
    (d / "b.pol").write_bytes(b"policy_name=b policy_version=1.0\nDEFAULT action=ALLOW\n")
    (d / "c.pol").write_bytes(policy_text("a", "2.0.0"))
    (d / "d.p7s").write_bytes(b"\x30\x03\x02\x01\x01")
    got = rec.scan()
    assert [p.name for p in got.policies] == ["a"]
    by_file = {Path(e.file).name: e for e in got.errors}
    assert by_file["b.pol"].errno == errno.EBADMSG and by_file["b.pol"].line == 1
    assert by_file["c.pol"].errno == errno.EEXIST
    assert by_file["d.p7s"].errno in (errno.EBADMSG, errno.EINVAL)


def test_plain_policy_without_key_is_explained(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    rec = reconciler(tmp_path, dev_keys, with_key=False)
    d = rec.settings.policies.dir
    (d / "a.pol").write_bytes(policy_text("a", "1.0.0"))
    (d / "b.p7s").write_bytes(sign_policy(policy_text("b", "1.0.0"), dev_keys[0].read_bytes(),
                                          dev_keys[1].read_bytes()))
    got = rec.scan()
    assert [p.name for p in got.policies] == ["b"]
    assert got.errors[0].errno == errno.ENOKEY and "signing_key" in got.errors[0].reason


def test_unchanged_files_are_not_resigned(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    # ECDSA signatures are randomised: an equal blob proves the cached result was reused
    rec = reconciler(tmp_path, dev_keys)
    path = rec.settings.policies.dir / "a.pol"
    path.write_bytes(policy_text("a", "1.0.0"))
    first = rec.scan().policies[0].blob
    assert rec.scan().policies[0].blob == first
    path.write_bytes(policy_text("a", "1.0.1"))
    changed = rec.scan().policies[0]
    assert changed.blob != first and str(changed.version) == "1.0.1"
    path.write_bytes(policy_text("a", "1.0.0"))  # back to the old bytes: re-signed, not a stale entry
    assert rec.scan().policies[0].blob != first


def test_policy_named_dotdot_is_rejected_at_scan(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    # the parser accepts the name, securityfs_create_dir() does not: the scan must say so (as
    # `iped validate` does), not let the plan fail at its first write
    rec = reconciler(tmp_path, dev_keys)
    (rec.settings.policies.dir / "dots.pol").write_bytes(policy_text("..", "1.0.0"))
    got = rec.scan()
    assert got.policies == ()
    assert [(Path(e.file).name, e.errno) for e in got.errors] == [("dots.pol", errno.EACCES)]


def test_broken_active_policy_is_one_error(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    rec = reconciler(tmp_path, dev_keys)
    rec.settings = dataclasses.replace(rec.settings, policies=dataclasses.replace(rec.settings.policies,
                                                                                  active="base"))
    (rec.settings.policies.dir / "base.pol").write_bytes(b"policy_name=base policy_version=1.0\n")
    got = rec.scan()
    assert [(Path(e.file).name, e.errno) for e in got.errors] == [("base.pol", errno.EBADMSG)]


def test_format_is_told_by_content_not_suffix(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    rec = reconciler(tmp_path, dev_keys)
    d = rec.settings.policies.dir
    (d / "a.p7s").write_bytes(policy_text("a", "1.0.0"))  # text under a .p7s name: signed locally
    (d / "b.pol").write_bytes(sign_policy(policy_text("b", "1.0.0"), dev_keys[0].read_bytes(),
                                          dev_keys[1].read_bytes()))  # a signed blob named .pol
    got = rec.scan()
    assert got.errors == ()
    assert sorted(p.name for p in got.policies) == ["a", "b"]


def test_filesystem_errors_carry_no_ipe_meaning(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    # ENOENT's IPE meaning ("no such policy (deleted meanwhile)") is for securityfs; a missing
    # directory or key file is a plain filesystem error and says so
    rec = reconciler(tmp_path, dev_keys)
    rec.settings.policies.dir.rmdir()
    (err,) = [e for e in rec.scan().errors if e.file == str(rec.settings.policies.dir)]
    assert "deleted meanwhile" not in str(err) and "No such file or directory" in str(err)
    rec.settings = dataclasses.replace(rec.settings, policies=dataclasses.replace(
        rec.settings.policies, signing_key=tmp_path / "missing.key"))
    (err,) = rec.scan().errors
    assert err.file == str(tmp_path / "missing.key") and err.errno == errno.ENOENT
    assert "deleted meanwhile" not in str(err) and "No such file or directory" in str(err)


def test_declaration_errors_carry_no_kernel_meaning(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    rec = reconciler(tmp_path, dev_keys)
    rec.settings = dataclasses.replace(rec.settings, policies=dataclasses.replace(rec.settings.policies,
                                                                                  active="nothere"))
    (err,) = rec.scan().errors
    assert err.errno == errno.ENOENT and "no file in the directory declares" in str(err)
    assert "deleted meanwhile" not in str(err)


def test_rolled_forward_overlay_precedence(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    """A rolled-forward policy replaces the drop-in file's only while that declares a lower version;
    it never brings back a policy the drop-in dir stopped declaring, and waits while that file is broken."""
    rec = reconciler(tmp_path, dev_keys)
    etc, rolled = rec.settings.policies.dir, rec.plan_log.rolled_forward
    rolled.mkdir(parents=True)
    (etc / "a.pol").write_bytes(policy_text("a", "1.1.0"))
    (rolled / "a.pol").write_bytes(policy_text("a", "1.1.1"))
    (rolled / "gone.pol").write_bytes(policy_text("gone", "2.0.0"))  # the drop-in dir no longer declares it
    (etc / "b.pol").write_bytes(b"policy_name=b policy_version=1.0.0\nop=EXECUTE action=ALOW\n")
    (rolled / "b.pol").write_bytes(policy_text("b", "1.0.1"))  # its drop-in file is broken: kept, not in effect
    decl = rec.scan()
    a = decl.get("a")
    assert a is not None and (str(a.version), a.source) == ("1.1.1", rolled / "a.pol")
    assert decl.get("gone") is None and decl.get("b") is None
    assert rec.superseded == (rolled / "gone.pol",)
    (etc / "a.pol").write_bytes(policy_text("a", "1.1.1"))  # the drop-in dir catches up: its file rules
    decl = rec.scan()
    a = decl.get("a")
    assert a is not None and a.source == etc / "a.pol"
    assert set(rec.superseded) == {rolled / "a.pol", rolled / "gone.pol"}


def test_no_trust_anchors_and_no_signing_key_trusts_no_signer(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    """An empty anchor set is an empty keyring, not "trust not checked": a .p7s from any signer
    is ENOKEY, and nothing is declared from it (never ``None``'s embedded-certificate check)."""
    d = tmp_path / "p"
    d.mkdir()
    (d / "b.p7s").write_bytes(sign_policy(policy_text("b", "1.0.0"), dev_keys[0].read_bytes(),
                                          dev_keys[1].read_bytes()))
    pol = PolicySettings(dir=d, active="b", signing_key=None, signing_cert=None, trust_anchors=())
    rec = Reconciler(Settings(policies=pol), None, PlanLog(tmp_path / "s"), NullReporter())  # type: ignore[arg-type]
    got = rec.scan()
    assert got.policies == ()
    assert [(Path(e.file).name, e.errno) for e in got.errors] == [("b.p7s", errno.ENOKEY)]


def test_missing_signing_key_is_not_worded_as_the_kernels_enokey(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    """Issue 20: the kernel said nothing; its ENOKEY meaning ("signer not trusted: no key in the
    secondary or platform keyring ...") belongs only to what the kernel said."""
    rec = reconciler(tmp_path, dev_keys, with_key=False)
    (rec.settings.policies.dir / "a.pol").write_bytes(policy_text("a", "1.0.0"))
    (err,) = rec.scan().errors
    assert err.errno == errno.ENOKEY and "signing_key" in str(err)
    assert "keyring" not in str(err) and "signer not trusted" not in str(err)


def test_two_files_declaring_one_name_say_so_naming_both(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    """Issue 20: ``iped sign boot_verified.pol`` in policies.d writes boot_verified.pol.p7s beside
    it; the plan was rejected with EEXIST "(a policy with this name is already loaded)"."""
    rec = reconciler(tmp_path, dev_keys)
    d = rec.settings.policies.dir
    text = policy_text("boot_verified", "1.0.0")
    (d / "boot_verified.pol").write_bytes(text)
    (d / "boot_verified.pol.p7s").write_bytes(sign_policy(text, dev_keys[0].read_bytes(), dev_keys[1].read_bytes()))
    (err,) = rec.scan().errors
    message = str(err)
    assert err.errno == errno.EEXIST and "already loaded" not in message
    assert str(d / "boot_verified.pol") in message and str(d / "boot_verified.pol.p7s") in message
    assert "two files declare policy_name=boot_verified" in message


def test_empty_drop_in_dir_is_not_a_missing_directory(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    """Issue 20: an empty drop-in dir gave "ENOENT (No such file or directory): active = ... but no
    file ..." although the directory exists."""
    rec = reconciler(tmp_path, dev_keys)
    rec.settings = dataclasses.replace(rec.settings, policies=dataclasses.replace(rec.settings.policies,
                                                                                  active="allow_all"))
    (err,) = rec.scan().errors
    assert err.errno == errno.ENOENT and "no file in the directory declares policy_name=allow_all" in str(err)
    assert "No such file or directory" not in str(err)
    assert "it holds no policy file" in str(err)
