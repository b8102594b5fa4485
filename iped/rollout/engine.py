"""The one door from :mod:`iped.rollout` into the emulator, the policy parser and file discovery.

Every name the rollout tools need from those is imported here and nowhere else, so a rename
there is a one-line fix here; :func:`parse_policy`, :class:`PolicyError`, :class:`FileInfo` and
:class:`Task` are the parser's and the emulator's own, re-exported.

:class:`PolicyEngine` evaluates through the emulator's public :class:`~iped.emulator.Emulator`
(the policy as its boot policy, permissive, ``success_audit`` on) and returns the very 1420 body
the kernel would write, parsed by the same :func:`iped.audit.records.parse_access` that reads
real records: the verdict of a replay and of a kernel record are the same type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from iped import discovery as _discovery
from iped.audit.records import AUDIT_IPE_ACCESS, IpeAccess, parse_access
from iped.emulator import Emulator, FileInfo, KernelConfig, Task
from iped.emulator.audit import audit_untrusted as _audit_untrusted
from iped.emulator.policy_parser import Op, ParsedPolicy, PolicyError, parse_policy

# the shared, kernel-exact parser (the one ``iped validate`` uses) and its error (errno, line,
# token, reason), and what the kernel knows of a file and a task: the emulator's own types
__all__ = ["FileInfo", "PolicyError", "Task", "parse_policy"]


def fixed_action(parsed: ParsedPolicy, op: str) -> tuple[str, bool] | None:
    """The action ``parsed`` takes for ``op`` whatever the file, and whether the op has rules.

    When every rule of the op carries the action of the op's default (or of the global default
    when the op has none) no property of the file can change the decision: an allow-everything
    policy allows a file whose properties cannot be read. None when properties can matter (or
    the op is unknown).
    """
    try:
        table = parsed.table(Op(op))
    except ValueError:
        return None
    default = table.default if table.default is not None else parsed.global_default
    if default is None or any(rule.action != default for rule in table.rules):
        return None
    return str(default), bool(table.rules)


class PolicyEngine:
    """One policy, evaluated as the kernel would: :meth:`evaluate` returns the 1420 record.

    Raises PolicyError (from :func:`parse_policy`) for a policy the kernel would reject.
    """

    def __init__(self, text: bytes) -> None:
        self.parsed = parse_policy(text)  # PolicyError with a line, before the emulator sees it
        self._emu: Emulator = Emulator(config=KernelConfig(boot_policy=text, enforce=False, success_audit=True))
        if self._emu.boot_error is not None:  # pragma: no cover - parse_policy() failed first
            raise self._emu.boot_error
        self._task = Task(0, "iped")

    def evaluate_body(self, op: str, hook: str, file: FileInfo | None, task: Task | None = None) -> str:
        """The AUDIT_IPE_ACCESS body the kernel writes for this access (enforcing=0).

        Raises ValueError for an op or hook the emulator does not know.
        """
        self._emu.evaluate(op, hook, file, task or self._task)
        records = self._emu.drain_audit()
        bodies = [body for rtype, body in records if rtype == AUDIT_IPE_ACCESS]
        assert len(bodies) == 1, records  # success_audit: every decision is audited
        return bodies[0]

    def evaluate(self, op: str, hook: str, file: FileInfo | None) -> IpeAccess:
        """The decision for one access, as the parsed 1420 record (``.action``, ``.rule``, ``.match``)."""
        return parse_access(self.evaluate_body(op, hook, file))


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a superblock contributes to every file on it: s_id and the dm-verity target."""

    dev: str
    dmverity_roothash: tuple[str, bytes] | None
    dmverity_signature: bool


def device_facts(st_dev: int) -> DeviceFacts:
    """The s_id and dm-verity root hash/signature flag of the device ``st_dev`` (discovery)."""
    verity = _discovery.dm_verity_of(os.major(st_dev), os.minor(st_dev))
    return DeviceFacts(
        _discovery.superblock_id(st_dev),
        (verity.algorithm, verity.root_hash) if verity is not None else None,
        bool(verity is not None and verity.signed),
    )


def fsverity_of(fd: int) -> tuple[tuple[str, bytes] | None, bool]:
    """The fs-verity digest of an open file and whether a built-in signature is attached."""
    digest = _discovery.fsverity_measure(fd)
    return digest, digest is not None and _discovery.fsverity_has_signature(fd)


@lru_cache(maxsize=4096)
def audit_untrusted(value: str) -> str:
    """audit_log_untrustedstring(): ``"text"``, or upper-case hex when it needs escaping."""
    return _audit_untrusted(value.encode("utf-8", "surrogateescape")).decode("ascii")
