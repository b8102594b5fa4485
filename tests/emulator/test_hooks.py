"""Hook gating and id mapping (hooks.c), and the exact 1420 record of each hook."""

from __future__ import annotations

import errno
import mmap

import pytest

from iped.emulator import Emulator, FileInfo, Task
from iped.emulator.hooks import KernelLoadDataId, KernelReadFileId
from tests.helpers.emulator import load, make_emulator

TASK = Task(pid=300, comm="insmod", auid=0, ses=2)
F = FileInfo("/lib/modules/x.ko", "vda1", 4242)
RWX = mmap.PROT_READ | mmap.PROT_EXEC


def deny_all(abi: str = "7.0") -> Emulator:
    emu = make_emulator(abi)
    load(emu, "deny", default="DEFAULT action=DENY")
    emu.write("policies/deny/active", b"1")
    emu.drain_audit()
    return emu


def denied(fn: object, *args: object) -> bool:
    try:
        fn(*args)  # type: ignore[operator]
    except PermissionError as e:
        assert e.errno == errno.EACCES
        return True
    return False


def test_mmap_without_exec_is_not_evaluated() -> None:
    emu = deny_all()
    assert not denied(emu.mmap_file, F, mmap.PROT_READ | mmap.PROT_WRITE, TASK)
    assert not denied(emu.mmap_file, None, mmap.PROT_READ, TASK)
    assert emu.drain_audit() == []
    assert denied(emu.mmap_file, F, RWX, TASK)
    assert denied(emu.mmap_file, None, mmap.PROT_EXEC, TASK)
    assert emu.drain_audit() == [
        (
            1420,
            'ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=300 comm="insmod"'
            ' path="/lib/modules/x.ko" dev="vda1" ino=4242 rule="DEFAULT action=DENY"',
        ),
        (
            1420,
            'ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=300 comm="insmod" path=? dev=? ino=?'
            ' rule="DEFAULT action=DENY"',
        ),
    ]


def test_mprotect_on_exec_vma_is_not_evaluated() -> None:
    emu = deny_all()
    assert not denied(emu.file_mprotect, F, True, RWX, TASK)
    assert not denied(emu.file_mprotect, F, False, mmap.PROT_READ, TASK)
    assert emu.drain_audit() == []
    assert denied(emu.file_mprotect, None, False, RWX, TASK)
    assert emu.drain_audit()[0][1].startswith("ipe_op=EXECUTE ipe_hook=MPROTECT ")


def test_bprm_check() -> None:
    emu = deny_all()
    assert denied(emu.bprm_check, F, TASK)
    assert emu.drain_audit()[0][1].startswith("ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=300 ")


def test_bprm_creds_for_exec_only_for_execve_check_and_only_619() -> None:
    emu = deny_all("6.19")
    assert not denied(emu.bprm_creds_for_exec, F, False, TASK)
    assert emu.drain_audit() == []
    assert denied(emu.bprm_creds_for_exec, F, True, TASK)
    assert emu.drain_audit()[0][1].startswith("ipe_op=EXECUTE ipe_hook=BPRM_CREDS_FOR_EXEC ")
    old = deny_all("6.16")
    with pytest.raises(NotImplementedError):
        old.bprm_creds_for_exec(F, True, TASK)
    with pytest.raises(ValueError):
        old.evaluate("EXECUTE", "BPRM_CREDS_FOR_EXEC", F, TASK)


READ_IDS = [
    (KernelReadFileId.READING_FIRMWARE, "FIRMWARE"),
    (KernelReadFileId.READING_MODULE, "KMODULE"),
    (KernelReadFileId.READING_KEXEC_IMAGE, "KEXEC_IMAGE"),
    (KernelReadFileId.READING_KEXEC_INITRAMFS, "KEXEC_INITRAMFS"),
    (KernelReadFileId.READING_POLICY, "POLICY"),
    (KernelReadFileId.READING_X509_CERTIFICATE, "X509_CERT"),
    (KernelReadFileId.READING_UNKNOWN, "UNKNOWN"),
    (99, "UNKNOWN"),
]


@pytest.mark.parametrize(("read_id", "op"), READ_IDS)
def test_kernel_read_file_ids(read_id: int, op: str) -> None:
    emu = deny_all()
    assert denied(emu.kernel_read_file, F, read_id, TASK)
    assert emu.drain_audit()[0][1].startswith(f"ipe_op={op} ipe_hook=KERNEL_READ ")


@pytest.mark.parametrize(
    ("abi", "op"), [("6.12", "UNKNOWN"), ("6.16", "UNKNOWN"), ("6.19", "KMODULE"), ("7.0", "KMODULE")]
)
def test_reading_module_compressed(abi: str, op: str) -> None:
    emu = deny_all(abi)
    assert denied(emu.kernel_read_file, F, KernelReadFileId.READING_MODULE_COMPRESSED, TASK)
    assert emu.drain_audit()[0][1].startswith(f"ipe_op={op} ipe_hook=KERNEL_READ ")


LOAD_IDS = [
    (KernelLoadDataId.LOADING_FIRMWARE, "FIRMWARE"),
    (KernelLoadDataId.LOADING_MODULE, "KMODULE"),
    (KernelLoadDataId.LOADING_KEXEC_IMAGE, "KEXEC_IMAGE"),
    (KernelLoadDataId.LOADING_KEXEC_INITRAMFS, "KEXEC_INITRAMFS"),
    (KernelLoadDataId.LOADING_POLICY, "POLICY"),
    (KernelLoadDataId.LOADING_X509_CERTIFICATE, "X509_CERT"),
    (KernelLoadDataId.LOADING_UNKNOWN, "UNKNOWN"),
]


@pytest.mark.parametrize(("load_id", "op"), LOAD_IDS)
def test_kernel_load_data_ids_have_no_file(load_id: int, op: str) -> None:
    emu = deny_all()
    assert denied(emu.kernel_load_data, load_id, TASK)
    assert emu.drain_audit() == [
        (
            1420,
            f'ipe_op={op} ipe_hook=KERNEL_LOAD enforcing=1 pid=300 comm="insmod" path=? dev=? ino=?'
            f' rule="DEFAULT action=DENY"',
        )
    ]


def test_per_op_rules_route_by_op() -> None:
    emu = make_emulator()
    load(
        emu,
        "r",
        "0.0.1",
        "op=KMODULE boot_verified=FALSE action=ALLOW",
        "DEFAULT op=FIRMWARE action=ALLOW",
        default="DEFAULT action=DENY",
    )
    emu.write("policies/r/active", b"1")
    emu.drain_audit()
    assert not denied(emu.kernel_read_file, F, KernelReadFileId.READING_MODULE, TASK)
    assert not denied(emu.kernel_load_data, KernelLoadDataId.LOADING_FIRMWARE, TASK)
    assert denied(emu.kernel_load_data, KernelLoadDataId.LOADING_KEXEC_IMAGE, TASK)


def test_untrusted_strings_in_record_become_hex() -> None:
    emu = deny_all()
    f = FileInfo('/tmp/a b"c', "my dev", 1)
    task = Task(pid=1, comm="a-very-long-command-name")
    assert denied(emu.bprm_check, f, task)
    body = emu.drain_audit()[0][1]
    assert 'comm="a-very-long-com" ' in body  # TASK_COMM_LEN - 1 bytes
    path_hex = b'/tmp/a b"c'.hex().upper()
    assert f" path={path_hex} dev=6D7920646576 ino=1 " in body


def test_digest_rule_rendering_in_record() -> None:
    emu = make_emulator()
    load(emu, "d", "0.0.1", "op=EXECUTE dmverity_roothash=sha256:ab01 dmverity_signature=TRUE action=DENY")
    emu.write("policies/d/active", b"1")
    emu.drain_audit()
    f = FileInfo("/x", "dm-3", 9, dmverity_roothash=("sha256", b"\xab\x01"), dmverity_signature=True)
    assert denied(emu.bprm_check, f, TASK)
    assert emu.drain_audit()[0][1].endswith(
        'rule="op=EXECUTE dmverity_roothash="sha256":AB01 dmverity_signature=TRUE action=DENY"'
    )


def test_unknown_op_or_hook_spelling_is_rejected() -> None:
    emu = deny_all()
    with pytest.raises(ValueError):
        emu.evaluate("EXEC", "BPRM_CHECK", F, TASK)
    with pytest.raises(ValueError):
        emu.evaluate("EXECUTE", "bprm_check", F, TASK)
    assert emu.drain_audit() == []


def test_emulator_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from iped.emulator import Emulator, FileInfo; e = Emulator(); "
        "e.evaluate('EXECUTE', 'MMAP', FileInfo('/a', 'vda', 1)); "
        "print(sorted(m for m in ('cryptography', 'pydantic', 'pyudev', 'systemd', 'asn1crypto') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == "[]"
