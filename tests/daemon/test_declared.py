"""Scanning the drop-in dir: temporaries ignored, parse/sign/verify errors located, duplicates refused."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from iped.backend import Backend, EmulatorBackend, make_emulator_backend
from iped.daemon.dropin import is_ignored, policy_files
from iped.daemon.log import NullReporter
from iped.daemon.planlog import PlanLog
from iped.daemon.reconcile import Reconciler
from iped.pkcs7 import sign_policy
from iped.settings import PolicySettings, Settings
from tests.helpers.policies import policy_text, unparsable


def reconciler(tmp_path: Path, keys: tuple[Path, Path], with_key: bool = True,
               backend: Backend | None = None) -> Reconciler:  # fmt: skip
    """A reconciler on ``tmp_path/p``; ``backend``: a fresh emulator's unless given."""
    d = tmp_path / "p"
    d.mkdir(parents=True, exist_ok=True)
    pol = PolicySettings(dir=d, active=None, signing_key=keys[0] if with_key else None,
                         signing_cert=keys[1] if with_key else None,
                         trust_anchors=() if with_key else (keys[1],))
    backend = backend if backend is not None else make_emulator_backend([], "test")
    return Reconciler(Settings(policies=pol), backend, PlanLog(tmp_path / "s"), NullReporter())


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
    (d / "b.pol").write_bytes(policy_text("b", "1.0"))
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
    (etc / "b.pol").write_bytes(unparsable("b"))
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
    rec = Reconciler(Settings(policies=pol), make_emulator_backend([], "test"), PlanLog(tmp_path / "s"), NullReporter())
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


def _kernel_holding(keys: tuple[Path, Path], *blobs: bytes) -> EmulatorBackend:
    """An emulator trusting the dev certificate that has taken ``blobs`` (new_policy, verified)."""
    backend = make_emulator_backend([keys[1].read_bytes()], "test")
    for blob in blobs:
        backend.write("new_policy", blob)
    return backend


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The blobs iped's verifier is asked about from now on (the real verifier still runs)."""
    import iped.pkcs7

    seen: list[bytes] = []
    real = iped.pkcs7.verify_policy

    def counting(blob: bytes, *args: Any, **kwargs: Any) -> Any:
        seen.append(blob)
        return real(blob, *args, **kwargs)

    monkeypatch.setattr(iped.pkcs7, "verify_policy", counting)
    return seen


def test_a_blob_the_kernel_holds_is_not_verified_again(tmp_path: Path, dev_keys: tuple[Path, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The production start: a .p7s whose bytes the kernel already holds (policies/NAME/pkcs7
    reads back the same blob) is declared from the kernel's read-back, the crypto stack never
    asked; name, version and text are the kernel's, parsed here."""
    from iped.daemon.reconcile import KERNEL_VERIFIED

    blob = sign_policy(policy_text("a", "1.2.3"), dev_keys[0].read_bytes(), dev_keys[1].read_bytes())
    rec = reconciler(tmp_path, dev_keys, with_key=False, backend=_kernel_holding(dev_keys, blob))
    (rec.settings.policies.dir / "a.p7s").write_bytes(blob)
    seen = _count_verifications(monkeypatch)
    got = rec.scan()
    assert got.errors == () and seen == []
    (a,) = got.policies
    assert (a.name, str(a.version), a.text, a.blob, a.signer) == ("a", "1.2.3", policy_text("a", "1.2.3"), blob,
                                                                  KERNEL_VERIFIED)  # fmt: skip
    _, _, plan = rec.compute()
    assert plan.steps == ()  # nothing to write: the kernel holds exactly what is declared


def test_a_blob_the_kernel_does_not_hold_is_verified_first(tmp_path: Path, dev_keys: tuple[Path, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Anything but the kernel's own bytes is verified here, every time: a blob with one signature
    byte flipped (the kernel holds the good one) is refused, as is a good blob by a signer outside
    the anchors; and when the kernel's read-back cannot be had, the held blob is verified too."""
    text = policy_text("a", "1.2.3")
    good = sign_policy(text, dev_keys[0].read_bytes(), dev_keys[1].read_bytes())
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    rec = reconciler(tmp_path, dev_keys, with_key=False, backend=_kernel_holding(dev_keys, good))
    path = rec.settings.policies.dir / "a.p7s"
    path.write_bytes(tampered)
    seen = _count_verifications(monkeypatch)
    got = rec.scan()
    assert got.policies == () and seen == [tampered]
    assert got.errors[0].errno in (errno.EBADMSG, errno.EKEYREJECTED), got.errors

    # the kernel holds nothing: a good blob is verified (and taken), not trusted
    seen.clear()
    rec = reconciler(tmp_path / "empty", dev_keys, with_key=False)
    (rec.settings.policies.dir / "a.p7s").write_bytes(good)
    assert rec.scan().policies[0].signer != "" and seen == [good]

    # the read-back of the pkcs7 node fails: verified here, as if the kernel held nothing
    class Unreadable(EmulatorBackend):
        def read(self, path: str) -> bytes:
            if path.endswith("/pkcs7"):
                raise PermissionError(errno.EACCES, "Permission denied")
            return super().read(path)

    kernel = _kernel_holding(dev_keys, good)
    seen.clear()
    rec = reconciler(tmp_path / "unreadable", dev_keys, with_key=False,
                     backend=Unreadable(kernel.emulator, "test"))  # fmt: skip
    (rec.settings.policies.dir / "a.p7s").write_bytes(good)
    got = rec.scan()
    assert seen == [good] and [p.name for p in got.policies] == ["a"]


SCAN_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from iped.backend import KERNEL_CAPABILITIES, make_emulator_backend
from iped.daemon.log import NullReporter
from iped.daemon.planlog import PlanLog
from iped.daemon.reconcile import Reconciler
from iped.settings import PolicySettings, Settings

pol = PolicySettings(dir=Path(sys.argv[1]), active=None, trust_anchors=(Path(sys.argv[2]),))
rec = Reconciler(Settings(policies=pol), make_emulator_backend([], "test"), PlanLog(Path(sys.argv[3])), NullReporter())
got = rec.scan()
print(json.dumps({
    "policies": [p.name for p in got.policies],
    "errors": [[Path(e.file).name, e.errno] for e in got.errors],
    "crypto": sorted(m for m in sys.modules if m.split(".")[0] in ("cryptography", "asn1crypto")),
}))
"""


def test_verifying_leaves_the_crypto_stack_out_of_the_daemon(tmp_path: Path, dev_keys: tuple[Path, Path]) -> None:
    """A scan that must verify (the kernel holds nothing) verifies in a short-lived child: in a
    fresh daemon-like process the good blob is taken, the tampered one refused, and neither
    cryptography nor asn1crypto is left loaded (they were resident for the daemon's life)."""
    import json
    import subprocess
    import sys

    good = sign_policy(policy_text("a", "1.0.0"), dev_keys[0].read_bytes(), dev_keys[1].read_bytes())
    bad = sign_policy(policy_text("b", "1.0.0"), dev_keys[0].read_bytes(), dev_keys[1].read_bytes())
    d = tmp_path / "p"
    d.mkdir()
    (d / "a.p7s").write_bytes(good)
    (d / "b.p7s").write_bytes(bad[:-1] + bytes([bad[-1] ^ 1]))
    argv = [sys.executable, "-c", SCAN_IN_A_FRESH_PROCESS, str(d), str(dev_keys[1]), str(tmp_path / "s")]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["policies"] == ["a"]
    assert [name for name, _ in got["errors"]] == ["b.p7s"]
    assert got["errors"][0][1] in (errno.EBADMSG, errno.EKEYREJECTED)
    assert got["crypto"] == []


def test_verification_happens_in_process_when_no_child_can_be_made(
    tmp_path: Path, dev_keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """fork refused (EAGAIN at a task limit, EPERM under a syscall filter): the blob is verified in
    the daemon itself, never taken unverified -- the tampered one refused, the good one taken."""
    from iped import forked

    def no_fork() -> int:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    # (as in a daemon that has not loaded the crypto stack: the child path is the one asked for)
    monkeypatch.setattr(forked, "crypto_loaded", lambda: False)
    good = sign_policy(policy_text("a", "1.0.0"), dev_keys[0].read_bytes(), dev_keys[1].read_bytes())
    bad = sign_policy(policy_text("b", "1.0.0"), dev_keys[0].read_bytes(), dev_keys[1].read_bytes())
    rec = reconciler(tmp_path, dev_keys, with_key=False)
    (rec.settings.policies.dir / "a.p7s").write_bytes(good)
    (rec.settings.policies.dir / "b.p7s").write_bytes(bad[:-1] + bytes([bad[-1] ^ 1]))
    got = rec.scan()
    assert [p.name for p in got.policies] == ["a"]
    assert [Path(e.file).name for e in got.errors] == ["b.p7s"]
    assert got.errors[0].errno in (errno.EBADMSG, errno.EKEYREJECTED)


SIGNING_SCAN_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from iped.backend import KERNEL_CAPABILITIES, make_emulator_backend
from iped.daemon.log import NullReporter
from iped.daemon.planlog import PlanLog
from iped.daemon.reconcile import Reconciler
from iped.settings import PolicySettings, Settings

class Kernelish:  # the emulator posing as a kernel backend: capabilities decide where the check runs
    kind = "kernel"
    capabilities = KERNEL_CAPABILITIES
    def __init__(self, inner): self.inner = inner
    def __getattr__(self, name): return getattr(self.inner, name)

pol = PolicySettings(dir=Path(sys.argv[1]), active=None, signing_key=Path(sys.argv[2]), signing_cert=Path(sys.argv[3]))
backend = make_emulator_backend([], "test")
if sys.argv[5] == "kernel":
    backend = Kernelish(backend)
rec = Reconciler(Settings(policies=pol), backend, PlanLog(Path(sys.argv[4])), NullReporter())
got = rec.scan()
print(json.dumps({
    "policies": [p.name for p in got.policies],
    "crypto": "cryptography" in sys.modules,
}))
"""


@pytest.mark.parametrize(("kind", "resident"), [("emulator", True), ("kernel", False)])
def test_an_emulator_daemon_that_signs_checks_in_process(tmp_path: Path, dev_keys: tuple[Path, Path], kind: str,
                                                         resident: bool) -> None:  # fmt: skip
    """An emulator daemon with a signing key signs in process (the stack is its floor, and a
    reload then needs no child); on a kernel backend the same scan signs in a child."""
    import json
    import subprocess
    import sys

    d = tmp_path / "policies.d"
    d.mkdir()
    (d / "a.pol").write_bytes(policy_text("a", "1.0.0"))
    argv = [sys.executable, "-c", SIGNING_SCAN_IN_A_FRESH_PROCESS, str(d), str(dev_keys[0]), str(dev_keys[1]),
            str(tmp_path / "s"), kind]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got == {"policies": ["a"], "crypto": resident}
