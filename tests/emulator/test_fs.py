"""securityfs semantics of the emulator: tree, modes, readdir order, read/write errnos, booleans."""

from __future__ import annotations

import errno
import stat

import pytest

from iped.emulator import Emulator
from iped.emulator.kstrtox import kstrtobool
from iped.emulator.types import KernelConfig
from tests.helpers.certs import sign
from tests.helpers.emulator import load, make_emulator
from tests.helpers.policies import policy_text

BOOT = policy_text("boot")
PER_POLICY = ["pkcs7", "policy", "name", "version", "active", "update", "delete"]


def _errno(fn: object, *args: object) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)  # type: ignore[operator]
    assert ei.value.errno is not None
    return ei.value.errno


def test_root_listing_is_reverse_creation_order() -> None:
    emu = Emulator()
    assert emu.listdir("") == ["new_policy", "policies", "enforce", "success_audit"]
    assert emu.listdir("policies") == []


def test_policy_dir_listing_and_modes() -> None:
    emu = make_emulator()
    load(emu, "a")
    load(emu, "b")
    assert emu.listdir("policies") == ["b", "a"]
    assert emu.listdir("policies/a") == list(reversed(PER_POLICY))
    modes = {n: stat.S_IMODE(emu.stat(f"policies/a/{n}").st_mode) for n in PER_POLICY}
    assert modes == {
        "pkcs7": 0o444, "policy": 0o444, "name": 0o444, "version": 0o444,
        "active": 0o600, "update": 0o200, "delete": 0o200,
    }  # fmt: skip
    assert all(stat.S_ISREG(emu.stat(f"policies/a/{n}").st_mode) for n in PER_POLICY)
    for d in ("", "policies", "policies/a"):
        assert emu.stat(d).st_mode == stat.S_IFDIR | 0o755


def test_top_level_modes() -> None:
    emu = Emulator()
    assert emu.stat("success_audit").st_mode == stat.S_IFREG | 0o600
    assert emu.stat("enforce").st_mode == stat.S_IFREG | 0o600
    assert emu.stat("new_policy").st_mode == stat.S_IFREG | 0o200


def test_reads_have_no_newline() -> None:
    emu = make_emulator()
    load(emu, "n", "65535.0.7")
    assert emu.read("enforce") == b"1"
    assert emu.read("success_audit") == b"0"
    assert emu.read("policies/n/name") == b"n"
    assert emu.read("policies/n/version") == b"65535.0.7"
    assert emu.read("policies/n/active") == b"0"


def test_read_of_write_only_and_write_of_read_only_are_einval() -> None:
    emu = make_emulator()
    blob = load(emu, "w")
    assert _errno(emu.read, "new_policy") == errno.EINVAL
    assert _errno(emu.read, "policies/w/update") == errno.EINVAL
    assert _errno(emu.read, "policies/w/delete") == errno.EINVAL
    for ro in ("pkcs7", "policy", "name", "version"):
        assert _errno(emu.write, f"policies/w/{ro}", blob) == errno.EINVAL


def test_directories_and_missing_paths() -> None:
    emu = Emulator()
    assert _errno(emu.read, "policies") == errno.EISDIR
    assert _errno(emu.write, "policies", b"1") == errno.EISDIR
    assert _errno(emu.read, "policies/nope/name") == errno.ENOENT
    assert _errno(emu.listdir, "enforce") == errno.ENOTDIR
    assert _errno(emu.read, "enforce/x") == errno.ENOTDIR


def test_boot_policy_tree() -> None:
    emu = Emulator(config=KernelConfig(boot_policy=BOOT))
    assert emu.listdir("") == ["new_policy", "policies", "enforce", "success_audit"]
    assert emu.listdir("policies") == ["boot"]
    assert emu.read("policies/boot/active") == b"1"
    assert emu.read("policies/boot/policy") == BOOT
    assert _errno(emu.read, "policies/boot/pkcs7") == errno.ENOENT
    assert emu.drain_audit() == []  # the boot policy is never audited


def test_broken_boot_policy_leaves_nothing_active() -> None:
    emu = Emulator(config=KernelConfig(boot_policy=b"policy_name=x policy_version=0.0\nDEFAULT action=DENY\n"))
    assert emu.boot_error is not None and emu.boot_error.errno == errno.EBADMSG
    assert emu.listdir("policies") == []


def test_boot_policy_with_unusable_name_removes_the_tree() -> None:
    emu = Emulator(config=KernelConfig(boot_policy=policy_text("..", "0.0.0")))
    assert emu.securityfs_error is not None and emu.securityfs_error.errno == errno.EACCES
    assert _errno(emu.listdir, "") == errno.ENOENT


@pytest.mark.parametrize(
    ("name", "err"),
    [(".", errno.EACCES), ("..", errno.EACCES), ("a/b", errno.EACCES), ("x" * 256, errno.ENAMETOOLONG)],
)
def test_unusable_policy_names(name: str, err: int) -> None:
    emu = make_emulator()
    assert (
        _errno(emu.write, "new_policy", sign(f"policy_name={name} policy_version=0.0.0\nDEFAULT action=ALLOW".encode()))
        == err
    )
    assert emu.listdir("policies") == []


def test_longest_name_is_fine() -> None:
    emu = make_emulator()
    load(emu, "x" * 255)
    assert emu.listdir("policies") == ["x" * 255]


TRUE_SPELLINGS = [b"1", b"y", b"Y", b"t", b"T", b"on", b"oN", b"On", b"ON", b"1\n", b"yes", b"true", b"onwards"]
FALSE_SPELLINGS = [b"0", b"n", b"N", b"f", b"F", b"of", b"OF", b"oF", b"off", b"0\n", b"no", b"false"]
INVALID = [b"", b"2", b"o", b"o\n", b"x", b" 1", b"\n1", b"\x001", b"-1", b"O", b"+1"]


@pytest.mark.parametrize("s", TRUE_SPELLINGS)
def test_kstrtobool_true(s: bytes) -> None:
    assert kstrtobool(s[:3], enable_disable=False) is True


@pytest.mark.parametrize("s", FALSE_SPELLINGS)
def test_kstrtobool_false(s: bytes) -> None:
    assert kstrtobool(s[:3], enable_disable=False) is False


@pytest.mark.parametrize("s", INVALID)
def test_kstrtobool_invalid(s: bytes) -> None:
    for enable_disable in (False, True):
        with pytest.raises(OSError) as ei:
            kstrtobool(s, enable_disable=enable_disable)
        assert ei.value.errno == errno.EINVAL
    emu = Emulator()
    assert _errno(emu.write, "enforce", s) == errno.EINVAL
    assert emu.read("enforce") == b"1"


@pytest.mark.parametrize(("s", "value"), [(b"e", True), (b"E", True), (b"enable", True), (b"d", False), (b"D", False)])
def test_enable_disable_only_from_616(s: bytes, value: bool) -> None:
    assert kstrtobool(s, enable_disable=True) is value
    with pytest.raises(OSError) as ei:
        kstrtobool(s, enable_disable=False)
    assert ei.value.errno == errno.EINVAL
    old, new = Emulator(abi="6.12"), Emulator(abi="6.16")
    new.write("success_audit", s)
    assert new.read("success_audit") == (b"1" if value else b"0")
    assert _errno(old.write, "success_audit", s) == errno.EINVAL


def test_only_three_bytes_are_looked_at() -> None:
    emu = Emulator()
    assert emu.write("success_audit", b"1" + b"garbage" * 100) == 701
    assert emu.read("success_audit") == b"1"
    assert emu.write("success_audit", b"of" + b"\xff" * 10) == 12
    assert emu.read("success_audit") == b"0"


@pytest.mark.parametrize("target", ["success_audit", "enforce"])
def test_toggles_need_cap_mac_admin(target: str) -> None:
    emu = Emulator()
    emu.caller_has_cap_mac_admin = False
    assert _errno(emu.write, target, b"0") == errno.EPERM
    assert _errno(emu.write, target, b"garbage") == errno.EPERM  # capability comes first
    assert emu.read(target) == (b"1" if target == "enforce" else b"0")
    assert emu.drain_audit() == []


def test_success_audit_changes_are_not_audited() -> None:
    emu = Emulator()
    emu.write("success_audit", b"1")
    emu.write("success_audit", b"0")
    assert emu.drain_audit() == []


def test_enforce_boot_parameter() -> None:
    emu = Emulator(config=KernelConfig(enforce=False, success_audit=True))
    assert emu.read("enforce") == b"0"
    assert emu.read("success_audit") == b"1"


@pytest.mark.parametrize(
    ("abi", "profile"),
    [("6.12", "6.12"), ("6.15", "6.12"), ("6.16", "6.16"), ("6.18.3", "6.16"), ("6.19", "6.19"), ("7.0", "7.0"),
     ("7.2-rc1", "7.0")],
)  # fmt: skip
def test_abi_selects_newest_profile_not_newer(abi: str, profile: str) -> None:
    assert Emulator(abi=abi).profile.name == profile


@pytest.mark.parametrize("abi", ["6.11", "5.15", "latest"])
def test_abi_before_ipe_or_garbage_is_rejected(abi: str) -> None:
    with pytest.raises(ValueError):
        Emulator(abi=abi)


def test_default_abi_is_newest() -> None:
    assert Emulator().profile.name == "7.0"


def test_empty_new_policy_write_is_ebadmsg() -> None:
    emu = make_emulator("6.16")
    assert _errno(emu.write, "new_policy", b"") == errno.EBADMSG
    assert emu.drain_audit()[0][1].endswith("res=0 errno=-74")


def test_write_larger_than_kmalloc_max_is_enomem() -> None:
    from iped.emulator.securityfs import KMALLOC_MAX_SIZE

    emu = make_emulator("6.16")
    load(emu, "big")
    emu.drain_audit()
    assert _errno(emu.write, "new_policy", b"0" * (KMALLOC_MAX_SIZE - 1)) != errno.ENOMEM
    assert _errno(emu.write, "new_policy", b"0" * KMALLOC_MAX_SIZE) == errno.ENOMEM  # + the NUL
    assert _errno(emu.write, "policies/big/update", b"0" * KMALLOC_MAX_SIZE) != errno.ENOMEM
    assert _errno(emu.write, "policies/big/update", b"0" * (KMALLOC_MAX_SIZE + 1)) == errno.ENOMEM
    assert [b.rsplit(" ", 1)[1] for _, b in emu.drain_audit()] == ["errno=-90", "errno=-12", "errno=-90", "errno=-12"]


def test_recreated_policy_dir_lists_first_and_update_keeps_place() -> None:
    emu = make_emulator()
    load(emu, "a")
    load(emu, "b")
    load(emu, "c")
    emu.write("policies/a/delete", b"1")
    load(emu, "a")
    assert emu.listdir("policies") == ["a", "c", "b"]
    emu.write("policies/b/update", sign(policy_text("b", "0.0.2")))
    assert emu.listdir("policies") == ["a", "c", "b"]
