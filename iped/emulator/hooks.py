"""LSM hook entry points: which op and hook an event is, and whether it is evaluated (security/ipe/hooks.c).

Each function keeps the kernel's name without ``ipe_`` and returns what the hook returns
(0 or -EACCES). They gate the evaluation exactly as hooks.c does: mmap only with PROT_EXEC in the
effective ``prot``; mprotect not at all on an already-executable VMA; bprm_creds_for_exec only
for ``execveat(AT_EXECVE_CHECK)`` (6.19+); kernel_read_file / kernel_load_data map their ids to
ops and an unmapped id to IPE_OP_INVALID (``ipe_op=UNKNOWN``, the global default).
"""

from __future__ import annotations

import mmap
from enum import IntEnum
from typing import TYPE_CHECKING

from iped.emulator.eval import build_eval_ctx
from iped.emulator.policy_parser import Op
from iped.emulator.types import EvalContext, FileInfo, Hook, Task

if TYPE_CHECKING:
    from iped.emulator.state import Ipe

PROT_EXEC = mmap.PROT_EXEC

__all__ = [
    "PROT_EXEC",
    "Hook",
    "KernelLoadDataId",
    "KernelReadFileId",
    "bprm_check",
    "bprm_creds_for_exec",
    "file_mprotect",
    "kernel_load_data",
    "kernel_read_file",
    "mmap_file",
]


class KernelReadFileId(IntEnum):
    """``enum kernel_read_file_id`` (include/linux/kernel_read_file.h), newest numbering."""

    READING_UNKNOWN = 0
    READING_FIRMWARE = 1
    READING_MODULE = 2
    READING_KEXEC_IMAGE = 3
    READING_KEXEC_INITRAMFS = 4
    READING_POLICY = 5
    READING_X509_CERTIFICATE = 6
    READING_MODULE_COMPRESSED = 7  # 6.19+


class KernelLoadDataId(IntEnum):
    """``enum kernel_load_data_id``."""

    LOADING_UNKNOWN = 0
    LOADING_FIRMWARE = 1
    LOADING_MODULE = 2
    LOADING_KEXEC_IMAGE = 3
    LOADING_KEXEC_INITRAMFS = 4
    LOADING_POLICY = 5
    LOADING_X509_CERTIFICATE = 6


_READ_OPS: dict[KernelReadFileId, Op] = {
    KernelReadFileId.READING_FIRMWARE: Op.FIRMWARE,
    KernelReadFileId.READING_MODULE: Op.KMODULE,
    KernelReadFileId.READING_KEXEC_INITRAMFS: Op.KEXEC_INITRAMFS,
    KernelReadFileId.READING_KEXEC_IMAGE: Op.KEXEC_IMAGE,
    KernelReadFileId.READING_POLICY: Op.POLICY,
    KernelReadFileId.READING_X509_CERTIFICATE: Op.X509_CERT,
}
_LOAD_OPS: dict[KernelLoadDataId, Op] = {
    KernelLoadDataId.LOADING_FIRMWARE: Op.FIRMWARE,
    KernelLoadDataId.LOADING_MODULE: Op.KMODULE,
    KernelLoadDataId.LOADING_KEXEC_INITRAMFS: Op.KEXEC_INITRAMFS,
    KernelLoadDataId.LOADING_KEXEC_IMAGE: Op.KEXEC_IMAGE,
    KernelLoadDataId.LOADING_POLICY: Op.POLICY,
    KernelLoadDataId.LOADING_X509_CERTIFICATE: Op.X509_CERT,
}


def read_file_op(read_id: int, *, module_compressed: bool) -> Op | None:
    """The op for a kernel_read_file id; None is IPE_OP_INVALID (the kernel WARNs)."""
    if read_id == KernelReadFileId.READING_MODULE_COMPRESSED and module_compressed:
        return Op.KMODULE
    try:
        return _READ_OPS.get(KernelReadFileId(read_id))
    except ValueError:
        return None


def load_data_op(load_id: int) -> Op | None:
    """The op for a kernel_load_data id; None is IPE_OP_INVALID."""
    try:
        return _LOAD_OPS.get(KernelLoadDataId(load_id))
    except ValueError:
        return None


def _run(emu: Ipe, ctx: EvalContext, task: Task | None) -> int:
    return emu.evaluate_event(ctx, task)


def bprm_check(emu: Ipe, file: FileInfo, task: Task | None = None) -> int:
    """ipe_bprm_check_security(): every exec (and each binfmt pass) evaluates EXECUTE."""
    return _run(emu, build_eval_ctx(file, Op.EXECUTE, Hook.BPRM_CHECK), task)


def bprm_creds_for_exec(emu: Ipe, file: FileInfo, is_check: bool, task: Task | None = None) -> int:
    """ipe_bprm_creds_for_exec() (6.19+): only ``execveat(.., AT_EXECVE_CHECK)`` is evaluated."""
    if not emu.profile.bprm_creds_for_exec:
        raise NotImplementedError(f"bprm_creds_for_exec is not an IPE hook on {emu.profile.name}")
    if not is_check:
        return 0
    return _run(emu, build_eval_ctx(file, Op.EXECUTE, Hook.BPRM_CREDS_FOR_EXEC), task)


def mmap_file(emu: Ipe, file: FileInfo | None, prot: int, task: Task | None = None) -> int:
    """ipe_mmap_file(): only a mapping whose effective ``prot`` has PROT_EXEC; file None = anonymous."""
    if prot & PROT_EXEC:
        return _run(emu, build_eval_ctx(file, Op.EXECUTE, Hook.MMAP), task)
    return 0


def file_mprotect(
    emu: Ipe, vma_file: FileInfo | None, vma_is_exec: bool, prot: int, task: Task | None = None
) -> int:
    """ipe_file_mprotect(): skipped for an already VM_EXEC area; else only when adding PROT_EXEC."""
    if vma_is_exec:
        return 0
    if prot & PROT_EXEC:
        return _run(emu, build_eval_ctx(vma_file, Op.EXECUTE, Hook.MPROTECT), task)
    return 0


def kernel_read_file(emu: Ipe, file: FileInfo, read_id: int, task: Task | None = None) -> int:
    """ipe_kernel_read_file(): the op from the read id (READING_MODULE_COMPRESSED only on 6.19+)."""
    op = read_file_op(read_id, module_compressed=emu.profile.reading_module_compressed)
    return _run(emu, build_eval_ctx(file, op, Hook.KERNEL_READ), task)


def kernel_load_data(emu: Ipe, load_id: int, task: Task | None = None) -> int:
    """ipe_kernel_load_data(): a buffer from userspace, so there is never a file."""
    return _run(emu, build_eval_ctx(None, load_data_op(load_id), Hook.KERNEL_LOAD), task)
