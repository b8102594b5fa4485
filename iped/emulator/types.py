"""What the kernel keeps in IPE's headers: the types every other emulator module shares.

Counterparts: security/ipe/hooks.h (``enum ipe_hook_type`` -> :class:`Hook`), eval.h
(``struct ipe_eval_ctx`` -> :class:`EvalContext`, ``enum ipe_match`` -> :class:`MatchType`, and
the LSM blobs ``ipe_superblock``/``ipe_bdev``/``ipe_inode`` whose facts :class:`FileInfo` carries)
and include/linux/err.h (a negative errno returned to userspace -> :func:`kernel_error`).
:class:`Task` is the ``current`` an audit record names; :class:`Decision` is what eval.c's
evaluation loop settles on before it audits. policy.h's ``struct ipe_policy`` is :class:`Policy`,
eval.h's globals :class:`EvalState`; the build options (Kconfig, boot parameters) are
:class:`KernelConfig` and what changed between releases :class:`KernelProfile`. The policy's own enums (``ipe_op_type``,
``ipe_action_type``, ``ipe_prop_type``) live with the parser in :mod:`iped.emulator.policy_parser`,
which ``iped validate`` imports on its own.

This module imports nothing else from the emulator but the parser, so any module may import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from functools import partial
from typing import NamedTuple, Protocol

from iped.emulator.policy_parser import Action, Op, ParsedPolicy, Rule

UNSET_ID = 4294967295  # (u32)-1: an unset loginuid / sessionid


def kernel_error(err: int, detail: str = "") -> OSError:
    """The OSError a syscall raises when the kernel returns ``-err``; ``detail`` says why in IPE's terms."""
    return OSError(err, os.strerror(err) + (f": {detail}" if detail else ""))


class Hook(StrEnum):
    """``enum ipe_hook_type``; values are the ``ipe_hook=`` spellings (audit_hook_names)."""

    BPRM_CHECK = "BPRM_CHECK"
    BPRM_CREDS_FOR_EXEC = "BPRM_CREDS_FOR_EXEC"  # 6.19+
    MMAP = "MMAP"
    MPROTECT = "MPROTECT"
    KERNEL_READ = "KERNEL_READ"
    KERNEL_LOAD = "KERNEL_LOAD"


#: spelling -> enum, cheaper than calling the enum on every event
HOOKS: dict[str, Hook] = {h.value: h for h in Hook}
OPS: dict[str | None, Op | None] = {**{o.value: o for o in Op}, None: None}


class MatchType(Enum):
    """``enum ipe_match``: what decided (a rule, the op's default, the global default)."""

    RULE = "rule"
    TABLE = "table"
    GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Task:
    """The task an audit record names: ``pid`` is the tgid, ``comm`` at most 15 bytes."""

    pid: int
    comm: str
    auid: int = UNSET_ID
    ses: int = UNSET_ID


#: facts a decision can depend on: (initramfs, dmv key, dmv signed, fsv key, fsv signed)
Facts = tuple[bool, tuple[bytes, bytes] | None, bool, tuple[bytes, bytes] | None, bool]


@dataclass(frozen=True)
class FileInfo:
    """What the kernel knows about a file when IPE evaluates it.

    ``dev`` is the superblock's s_id (``vda1``, ``dm-0``, ``tmpfs``) and ``ino`` the inode
    number, both only for the audit record. ``boot_verified`` is the initramfs flag of the
    mount's superblock; ``dmverity_*`` describe the backing block device as dm-verity reported
    it (algorithm name as in the verity table); ``fsverity_*`` the inode (algorithm as the
    kernel's hash_algo_name[], e.g. ``sha256``). A signature flag without a digest is ignored,
    as the kernel requires IS_VERITY / a root hash first. :func:`iped.discovery.file_info_from_path`
    builds one for a real file of this host.
    """

    path: str
    dev: str
    ino: int
    boot_verified: bool = False
    dmverity_roothash: tuple[str, bytes] | None = None
    dmverity_signature: bool = False
    fsverity_digest: tuple[str, bytes] | None = None
    fsverity_signature: bool = False
    facts: Facts = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dmv = self.dmverity_roothash
        fsv = self.fsverity_digest
        facts: Facts = (
            self.boot_verified,
            (dmv[0].encode(), bytes(dmv[1])) if dmv is not None else None,
            self.dmverity_signature,
            (fsv[0].encode(), bytes(fsv[1])) if fsv is not None else None,
            fsv is not None and self.fsverity_signature,
        )
        object.__setattr__(self, "facts", facts)


#: facts of a NULL file (anonymous memory, kernel_load_data)
NO_FILE_FACTS: Facts = (False, None, False, None, False)


class EvalContext(NamedTuple):
    """``struct ipe_eval_ctx``: the op (None = IPE_OP_INVALID), the hook, the file and its facts.

    A NamedTuple rather than a frozen dataclass: it is built once per hook call, and tuple
    construction is several times cheaper.
    """

    op: Op | None
    hook: Hook
    file: FileInfo | None
    facts: Facts  # (initramfs, dm-verity root hash, its signature, fs-verity digest, its signature)


#: ``EvalContext((op, hook, file, facts))`` straight through tuple.__new__: a NamedTuple's own
#: ``__new__`` is Python code, and a context is built on every hook call (benchmarks/bench_eval.py).
new_eval_ctx: Callable[[tuple[Op | None, Hook, FileInfo | None, Facts]], EvalContext] = partial(
    tuple.__new__, EvalContext
)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one evaluation: the action, what decided, and the rule if one matched."""

    action: Action
    match_type: MatchType
    rule: Rule | None = None


@dataclass(frozen=True, slots=True)
class KernelProfile:
    """Behaviour that differs between kernel releases (each field names its commit or release).

    * ``policy_load_errno`` (6.16, 1d887d6f): AUDIT_IPE_POLICY_LOAD gains ``errno=`` and failed
      new_policy/update writes (EPERM included) are audited.
    * ``kstrtobool_enable_disable`` (lib/kstrtox.c ae5b3500856f, taken as 6.16): ``e``/``d``.
    * ``bprm_creds_for_exec`` (6.19): the AT_EXECVE_CHECK hook exists.
    * ``reading_module_compressed`` (6.19): READING_MODULE_COMPRESSED maps to KMODULE.
    * ``empty_mac_status_record``: ipe_audit_enforce()'s second, empty 1404 record (every
      release by code reading; the lab decides).
    """

    name: str
    policy_load_errno: bool
    kstrtobool_enable_disable: bool
    bprm_creds_for_exec: bool
    reading_module_compressed: bool
    empty_mac_status_record: bool = True


PROFILES: dict[str, KernelProfile] = {
    "6.12": KernelProfile("6.12", False, False, False, False),
    "6.16": KernelProfile("6.16", True, True, False, False),
    "6.19": KernelProfile("6.19", True, True, True, True),
    "7.0": KernelProfile("7.0", True, True, True, True),
}
NEWEST_ABI = "7.0"


def _version_key(abi: str) -> tuple[int, int]:
    parts = abi.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(f"abi {abi!r} is not a kernel version like '6.12' or '7.0.3'") from None


def profile_for(abi: str) -> KernelProfile:
    """The profile of the newest listed release not newer than ``abi`` ("6.18" -> 6.16's, "7.1" -> 7.0's).

    Raises ValueError: not a version, or older than 6.12 (no IPE, or its pre-release behaviour).
    """
    want = _version_key(abi)
    fits = [p for name, p in PROFILES.items() if _version_key(name) <= want]
    if not fits:
        raise ValueError(f"abi {abi!r}: IPE is emulated from 6.12 on; known: {', '.join(PROFILES)}")
    return max(fits, key=lambda p: _version_key(p.name))


@dataclass(frozen=True, slots=True)
class KernelConfig:
    """Kconfig options and boot parameters that change what IPE does.

    The four ``prop_*`` options make a property evaluate (off: it still parses, but evaluates
    false — both TRUE and FALSE forms of the signature properties). ``boot_policy`` is the text
    of CONFIG_IPE_BOOT_POLICY; ``enforce``/``success_audit`` are ``ipe.enforce=`` and
    ``ipe.success_audit=`` on the kernel command line.
    """

    prop_dm_verity: bool = True
    prop_dm_verity_signature: bool = True
    prop_fs_verity: bool = True
    prop_fs_verity_builtin_sig: bool = True
    policy_sig_secondary_keyring: bool = True
    policy_sig_platform_keyring: bool = True
    boot_policy: bytes | None = None
    enforce: bool = True
    success_audit: bool = False


@dataclass(frozen=True, eq=False)
class Policy:
    """One loaded policy; identity (``is``) is what the kernel compares for "the active one"."""

    text: bytes
    pkcs7: bytes | None
    parsed: ParsedPolicy


class Decider(Protocol):
    """What an active policy is evaluated by (:class:`iped.emulator.compiled.CompiledPolicy`)."""

    def decide(self, op: Op | None, facts: Facts, /) -> Decision: ...


@dataclass
class EvalState:
    """eval.h's globals (``ipe_active_policy``, ``ipe_enforce``, ``ipe_success_audit``): the active
    policy and its compiled form, enforce, success_audit."""

    enforce: bool = True
    success_audit: bool = False
    active: Policy | None = None
    compiled: Decider | None = None
