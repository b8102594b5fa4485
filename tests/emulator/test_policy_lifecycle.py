"""Policy life cycle through securityfs: load, duplicate, update, activate, delete — errnos and records."""

from __future__ import annotations

import errno
import hashlib

import pytest

from iped.emulator import Emulator
from iped.emulator.types import KernelConfig
from tests.helpers.certs import sign
from tests.helpers.emulator import load, make_emulator
from tests.helpers.policies import policy_text

U = "auid=4294967295 ses=4294967295"
BOOT = policy_text("boot", "1.0.0")
EMPTY_SHA256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"


def _errno(emu: Emulator, path: str, data: bytes) -> int:
    with pytest.raises(OSError) as ei:
        emu.write(path, data)
    assert ei.value.errno is not None
    return ei.value.errno


def _d(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest().upper()


def test_load_is_inactive_and_audited_612_vs_716() -> None:
    for abi, tail in (("6.12", "res=1"), ("7.0", "res=1 errno=0")):
        emu = make_emulator(abi)
        blob = load(emu, "p", "0.1.2")
        assert emu.read("policies/p/active") == b"0"
        assert emu.drain_audit() == [
            (1422, f'policy_name="p" policy_version=0.1.2 policy_digest=sha256:{_d(blob)} {U} lsm=ipe {tail}')
        ]


def test_duplicate_name_is_eexist() -> None:
    emu = make_emulator()
    load(emu, "dup", "0.0.1")
    emu.drain_audit()
    assert _errno(emu, "new_policy", sign(policy_text("dup", "9.0.0"))) == errno.EEXIST
    assert emu.read("policies/dup/version") == b"0.0.1"
    assert emu.drain_audit() == [(1422, f"policy_name=? policy_version=? policy_digest=? {U} lsm=ipe res=0 errno=-17")]


def test_duplicate_of_boot_policy_name_is_eexist() -> None:
    emu = make_emulator(config=KernelConfig(boot_policy=BOOT))
    assert _errno(emu, "new_policy", sign(policy_text("boot", "2.0.0"))) == errno.EEXIST


def test_activate_then_records() -> None:
    emu = make_emulator()
    a = load(emu, "a", "0.0.1")
    b = load(emu, "b", "0.0.2")
    emu.drain_audit()
    assert emu.write("policies/a/active", b"1") == 1
    assert emu.read("policies/a/active") == b"1"
    assert emu.drain_audit() == [
        (
            1421,
            "old_active_pol_name=? old_active_pol_version=? old_policy_digest=? "
            f'new_active_pol_name="a" new_active_pol_version=0.0.1 new_policy_digest=sha256:{_d(a)} {U} lsm=ipe res=1',
        )
    ]
    emu.write("policies/b/active", b"y")
    assert emu.read("policies/a/active") == b"0"
    assert emu.drain_audit() == [
        (
            1421,
            f'old_active_pol_name="a" old_active_pol_version=0.0.1 old_policy_digest=sha256:{_d(a)} '
            f'new_active_pol_name="b" new_active_pol_version=0.0.2 new_policy_digest=sha256:{_d(b)} {U} lsm=ipe res=1',
        )
    ]


def test_activate_already_active_is_silent_success() -> None:
    emu = make_emulator()
    load(emu, "a")
    emu.write("policies/a/active", b"1")
    emu.drain_audit()
    assert emu.write("policies/a/active", b"1") == 1
    assert emu.drain_audit() == []


def test_activate_older_is_einval_equal_is_fine() -> None:
    emu = make_emulator()
    load(emu, "new", "1.0.0")
    load(emu, "old", "0.9.9")
    load(emu, "same", "1.0.0")
    emu.write("policies/new/active", b"1")
    assert _errno(emu, "policies/old/active", b"1") == errno.EINVAL
    assert emu.write("policies/same/active", b"1") == 1
    assert emu.read("policies/same/active") == b"1"


@pytest.mark.parametrize("path", ["active", "delete"])
def test_false_or_garbage_is_einval(path: str) -> None:
    emu = make_emulator()
    load(emu, "a")
    for value in (b"0", b"n", b"off", b"", b"x"):
        assert _errno(emu, f"policies/a/{path}", value) == errno.EINVAL
    assert emu.read("policies/a/active") == b"0"
    assert emu.listdir("policies") == ["a"]


def test_delete_inactive_and_active() -> None:
    emu = make_emulator()
    load(emu, "a")
    load(emu, "b")
    emu.write("policies/a/active", b"1")
    emu.drain_audit()
    assert _errno(emu, "policies/a/delete", b"1") == errno.EPERM
    assert emu.write("policies/b/delete", b"1") == 1
    assert emu.listdir("policies") == ["a"]
    assert emu.drain_audit() == []  # deletion is never audited
    load(emu, "b")  # the name is free again


def test_delete_boot_policy_while_active_is_eperm() -> None:
    emu = make_emulator(config=KernelConfig(boot_policy=BOOT))
    assert _errno(emu, "policies/boot/delete", b"1") == errno.EPERM


def test_writes_need_cap_mac_admin_audit_only_from_616() -> None:
    for abi, records in (
        ("6.12", []),
        ("6.16", [(1422, f"policy_name=? policy_version=? policy_digest=? {U} lsm=ipe res=0 errno=-1")] * 2),
    ):
        emu = make_emulator(abi)
        blob = load(emu, "a")
        emu.drain_audit()
        emu.caller_has_cap_mac_admin = False
        assert _errno(emu, "new_policy", blob) == errno.EPERM
        assert _errno(emu, "policies/a/update", blob) == errno.EPERM
        assert _errno(emu, "policies/a/active", b"1") == errno.EPERM
        assert _errno(emu, "policies/a/delete", b"1") == errno.EPERM
        assert emu.drain_audit() == records


def test_update_up_equal_down_other_name() -> None:
    emu = make_emulator()
    load(emu, "u", "1.0.0")
    emu.drain_audit()
    assert _errno(emu, "policies/u/update", sign(policy_text("u", "1.0.0"))) == errno.ESTALE
    assert _errno(emu, "policies/u/update", sign(policy_text("u", "0.9.0"))) == errno.ESTALE
    assert _errno(emu, "policies/u/update", sign(policy_text("v", "2.0.0"))) == errno.EINVAL
    assert [r[1].split(" errno=")[1] for r in emu.drain_audit()] == ["-116", "-116", "-22"]
    up = sign(policy_text("u", "1.0.1"))
    assert emu.write("policies/u/update", up) == len(up)
    assert emu.read("policies/u/version") == b"1.0.1"
    assert emu.read("policies/u/pkcs7") == up
    assert emu.read("policies/u/active") == b"0"
    assert emu.drain_audit() == [
        (1422, f'policy_name="u" policy_version=1.0.1 policy_digest=sha256:{_d(up)} {U} lsm=ipe res=1 errno=0')
    ]


def test_update_of_active_policy_activates_new_after_load_record() -> None:
    emu = make_emulator("6.12")
    old = load(emu, "u", "1.0.0")
    emu.write("policies/u/active", b"1")
    emu.drain_audit()
    new = sign(policy_text("u", "1.1.0", default="DEFAULT action=DENY"))
    emu.write("policies/u/update", new)
    assert emu.read("policies/u/active") == b"1"
    assert emu.drain_audit() == [
        (1422, f'policy_name="u" policy_version=1.1.0 policy_digest=sha256:{_d(new)} {U} lsm=ipe res=1'),
        (
            1421,
            f'old_active_pol_name="u" old_active_pol_version=1.0.0 old_policy_digest=sha256:{_d(old)} '
            f'new_active_pol_name="u" new_active_pol_version=1.1.0 new_policy_digest=sha256:{_d(new)}'
            f" {U} lsm=ipe res=1",
        ),
    ]


def test_update_is_checked_against_the_policy_not_the_active_one() -> None:
    emu = make_emulator()
    load(emu, "high", "5.0.0")
    load(emu, "low", "1.0.0")
    emu.write("policies/high/active", b"1")
    emu.write("policies/low/update", sign(policy_text("low", "2.0.0")))
    assert emu.read("policies/low/version") == b"2.0.0"


def test_update_failures_unaudited_on_612() -> None:
    emu = make_emulator("6.12")
    load(emu, "u", "1.0.0")
    emu.drain_audit()
    assert _errno(emu, "policies/u/update", sign(policy_text("u", "1.0.0"))) == errno.ESTALE
    assert emu.drain_audit() == []


def test_update_of_boot_policy_then_it_is_signed() -> None:
    emu = make_emulator("7.0", KernelConfig(boot_policy=BOOT))
    new = sign(policy_text("boot", "1.0.1"))
    emu.write("policies/boot/update", new)
    assert emu.read("policies/boot/pkcs7") == new
    records = emu.drain_audit()
    assert records[1] == (
        1421,
        f'old_active_pol_name="boot" old_active_pol_version=1.0.0 old_policy_digest=sha256:{EMPTY_SHA256} '
        f'new_active_pol_name="boot" new_active_pol_version=1.0.1 new_policy_digest=sha256:{_d(new)} {U} lsm=ipe res=1',
    )


def test_activating_over_boot_policy_needs_its_version() -> None:
    emu = make_emulator(config=KernelConfig(boot_policy=BOOT))
    load(emu, "older", "0.9.0")
    load(emu, "same", "1.0.0")
    assert _errno(emu, "policies/older/active", b"1") == errno.EINVAL
    emu.write("policies/same/active", b"1")
    assert emu.drain_audit()[-1][1].startswith(
        f'old_active_pol_name="boot" old_active_pol_version=1.0.0 old_policy_digest=sha256:{EMPTY_SHA256} '
    )


def test_records_carry_the_writer_task() -> None:
    from iped.emulator import Task

    emu = make_emulator("6.16")
    emu.task = Task(pid=42, comm="ipectl", auid=1000, ses=3)
    load(emu, "a")
    emu.write("enforce", b"0")
    emu.write("policies/a/active", b"1")
    bodies = [b for _, b in emu.drain_audit()]
    assert bodies[0].endswith(" auid=1000 ses=3 lsm=ipe res=1 errno=0")
    assert bodies[1] == "enforcing=0 old_enforcing=1 auid=1000 ses=3 enabled=1 old-enabled=1 lsm=ipe res=1"
    assert bodies[2] == ""
    assert bodies[3].endswith(" auid=1000 ses=3 lsm=ipe res=1")


def test_enforce_only_audited_on_change() -> None:
    emu = Emulator()
    emu.write("enforce", b"1")
    assert emu.drain_audit() == []
    emu.write("enforce", b"off")
    emu.write("enforce", b"0")
    emu.write("enforce", b"T")
    assert emu.drain_audit() == [
        (1404, f"enforcing=0 old_enforcing=1 {U} enabled=1 old-enabled=1 lsm=ipe res=1"),
        (1404, ""),
        (1404, f"enforcing=1 old_enforcing=0 {U} enabled=1 old-enabled=1 lsm=ipe res=1"),
        (1404, ""),
    ]


def test_empty_mac_status_record_is_one_switch() -> None:
    from dataclasses import replace

    emu = Emulator()
    emu.profile = replace(emu.profile, empty_mac_status_record=False)
    emu.write("enforce", b"0")
    assert [t for t, _ in emu.drain_audit()] == [1404]


def test_policy_name_with_odd_bytes_round_trips() -> None:
    emu = make_emulator()
    name = b"$@!*&^%%\\:;{}()\xff\xef"
    blob = sign(b"policy_name=" + name + b" policy_version=0.0.0\nDEFAULT action=ALLOW\n")
    emu.write("new_policy", blob)
    import os

    (entry,) = emu.listdir("policies")
    assert os.fsencode(entry) == name
    assert emu.read(f"policies/{entry}/name") == name
    assert emu.drain_audit()[0][1].startswith('policy_name="' + os.fsdecode(name) + '" ')
