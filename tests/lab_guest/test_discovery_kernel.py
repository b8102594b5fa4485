"""Property discovery on real verity files, and the emulator's verdict on them vs the kernel's.

Runs inside the lab VM after the corpus, which leaves its fixtures in place: an ext4 image with
fs-verity files on a loop device (``plain``, ``signed`` with a built-in signature, ``none``) and
two dm-verity mappings of the same volume (``plain``, and ``signed`` opened with a root-hash
signature). The host cannot build these (no verity-capable filesystem, no device-mapper), so
this is where ``file_info_from_path`` meets real ioctls and device-mapper tables.

The differential half activates policies that deny by positive properties only (never a
``=FALSE`` deny: the test's own Python lives on the 9p root and must keep running) and compares
what execve() really does with what the emulator decides for the discovered ``FileInfo``.
"""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from iped.discovery import file_info_from_path
from iped.emulator import Emulator, FileInfo
from tests.lab import GUEST_BUSYBOX, GUEST_INITRAMFS, GUEST_TMP, keys

IPE = Path("/sys/kernel/security/ipe")
CORPUS = Path(GUEST_TMP) / "iped-corpus"
TARGETS: dict[str, Path] = {
    "initramfs": Path(GUEST_BUSYBOX),
    "fsv-plain": CORPUS / "fsv" / "plain",
    "fsv-signed": CORPUS / "fsv" / "signed",
    "fsv-none": CORPUS / "fsv" / "none",
    "dmv-plain": CORPUS / "dmv-plain" / "busybox",
    "dmv-signed": CORPUS / "dmv-signed" / "busybox",
}

pytestmark = pytest.mark.skipif(not IPE.is_dir() or os.geteuid() != 0, reason="needs root on an IPE kernel")

_policies = itertools.count(1)


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _boot_superblocks() -> frozenset[int]:
    return frozenset({os.stat(GUEST_INITRAMFS).st_dev})


def _info(name: str) -> FileInfo:
    path = TARGETS[name]
    assert path.exists(), f"corpus fixture {path} is missing: did the corpus run first in this boot?"
    return file_info_from_path(str(path), boot_superblocks=_boot_superblocks())


def _measured(name: str) -> tuple[str, bytes]:
    alg, _, digest = _sh("fsverity", "measure", str(TARGETS[name])).split()[0].partition(":")
    return alg, bytes.fromhex(digest)


def _dm_roothash(mapping: str) -> tuple[str, bytes, bool]:
    """(algorithm, root hash, signed) from the live device-mapper table, independently of discovery."""
    fields = _sh("dmsetup", "table", mapping).split()
    assert fields[2] == "verity", fields
    # start len verity version data hash dblk hblk nblocks hstart alg digest salt [#opt opts...]
    return fields[10], bytes.fromhex(fields[11]), "root_hash_sig_key_desc" in fields


def test_fsverity_discovery() -> None:
    plain, signed, none = _info("fsv-plain"), _info("fsv-signed"), _info("fsv-none")
    assert plain.fsverity_digest == _measured("fsv-plain") and not plain.fsverity_signature
    assert signed.fsverity_digest == _measured("fsv-signed") and signed.fsverity_signature
    assert none.fsverity_digest is None and not none.fsverity_signature
    for info, name in ((plain, "fsv-plain"), (none, "fsv-none")):
        st = os.stat(TARGETS[name])
        assert info.ino == st.st_ino
        assert info.dev == Path(os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")).name
        assert info.dmverity_roothash is None and not info.boot_verified


def test_dmverity_discovery() -> None:
    for name, mapping in (("dmv-plain", "iped-corpus-plain"), ("dmv-signed", "iped-corpus-signed")):
        alg, roothash, signed = _dm_roothash(mapping)
        info = _info(name)
        assert info.dmverity_roothash == (alg, roothash), name
        assert info.dmverity_signature is signed, name
        assert info.dev.startswith("dm-"), info.dev
    assert _info("dmv-signed").dmverity_signature, "the signed mapping must carry root_hash_sig_key_desc"


def test_initramfs_is_the_boot_superblock() -> None:
    info = _info("initramfs")
    assert info.boot_verified and info.dev == "rootfs"
    assert not _info("fsv-plain").boot_verified


def _active_version() -> tuple[int, int, int]:
    for d in (IPE / "policies").iterdir():
        if (d / "active").read_text() == "1":
            major, minor, rev = ((d / "version").read_text()).split(".")
            return int(major), int(minor), int(rev)
    return (0, 0, 0)


def version_above_active() -> str:
    """A version the kernel will activate: above the active policy's (it refuses older ones,
    and earlier tests of the same boot activated their own)."""
    major, minor, _ = _active_version()
    return f"{major + 1}.0.0" if minor == 65535 else f"{major}.{minor + 1}.0"


def _kernel_runs(path: Path) -> bool:
    """execve() the file: True if the kernel let it run, False if IPE refused it (EACCES).

    The fixtures are busybox under other names (``plain`` is no applet, so it exits 127): what
    matters is that execve() succeeded, not what the program did.
    """
    try:
        subprocess.run([str(path), "true"], check=False, capture_output=True)
    except PermissionError:
        return False
    return True


Activate = Callable[[str], tuple[str, bytes]]


@pytest.fixture
def activate() -> Activate:
    """Load and activate a policy above whatever this boot has active; returns (name, blob)."""

    def _activate(rules: str) -> tuple[str, bytes]:
        name = f"iped_discovery_{next(_policies)}"
        text = f"policy_name={name} policy_version={version_above_active()}\nDEFAULT action=ALLOW\n{rules}".encode()
        blob = keys.sign_policy(text, keys.RSA_SIGNER)
        (IPE / "new_policy").write_bytes(blob)
        (IPE / "policies" / name / "active").write_bytes(b"1")
        return name, blob

    return _activate


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param("op=EXECUTE fsverity_signature=TRUE action=DENY\n"
                     "op=EXECUTE dmverity_signature=TRUE action=DENY\n"
                     "op=EXECUTE fsverity_digest={fsv-plain} action=DENY\n", id="signatures-and-digest"),
        pytest.param("op=EXECUTE boot_verified=TRUE action=DENY\n"
                     "op=EXECUTE dmverity_roothash={dmv-plain} action=DENY\n", id="boot-and-roothash"),
        # Both dm-verity mappings share one root hash, and both fs-verity files one digest
        # (busybox copies): the signed mapping must be allowed by the earlier roothash rule.
        pytest.param("op=EXECUTE dmverity_roothash={dmv-plain} action=ALLOW\n"
                     "op=EXECUTE dmverity_signature=TRUE action=DENY\n"
                     "op=EXECUTE fsverity_digest={fsv-plain} action=DENY\n", id="first-match-wins"),
    ],
)
def test_emulator_agrees_with_kernel_on_real_files(rules: str, activate: Activate) -> None:
    infos = {name: _info(name) for name in TARGETS}
    for name, info in infos.items():
        measured = info.fsverity_digest or info.dmverity_roothash
        if measured is not None:
            rules = rules.replace(f"{{{name}}}", f"{measured[0]}:{measured[1].hex()}")
    assert "{" not in rules, f"a fixture was not discovered: {rules}"
    name, blob = activate(rules)

    emu = Emulator(abi=".".join(platform.release().split(".")[:2]))
    emu.trust(keys.RSA_SIGNER.cert.read_bytes(), keyring="platform")
    emu.write("new_policy", blob)
    emu.write(f"policies/{name}/active", b"1")

    verdicts = {}
    for target, info in infos.items():
        try:
            emu.bprm_check(info)
            emulated = True
        except PermissionError:
            emulated = False
        verdicts[target] = (_kernel_runs(TARGETS[target]), emulated)
    assert all(k == e for k, e in verdicts.values()), f"(kernel, emulator) per file: {verdicts}"
    assert any(not k for k, _ in verdicts.values()), f"the policy denied nothing: {verdicts}"
