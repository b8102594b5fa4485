"""Audit record bodies, byte for byte as the kernel writes them (security/ipe/audit.c).

Each ``audit_*`` formatter returns the text after ``audit(<ts>:<serial>): `` for one record;
:class:`AuditLog` is the emulator's audit queue (what ``auditd`` would receive, in order).

ABI differences are parameters, not branches spread around: ``errno_field`` selects the 6.16+
``res=%d errno=%d`` tail of AUDIT_IPE_POLICY_LOAD (commit 1d887d6f), and
``empty_mac_status`` reproduces ipe_audit_enforce()'s second, empty AUDIT_MAC_STATUS record
(it opens a buffer, logs the text through a separate audit_log() and then ends the empty buffer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from iped.emulator.digest import Digest
from iped.emulator.policy_parser import Action, Rule
from iped.emulator.types import EvalContext, MatchType, Task

if TYPE_CHECKING:
    from iped.emulator.types import Policy

AUDIT_IPE_ACCESS = 1420
AUDIT_IPE_CONFIG_CHANGE = 1421
AUDIT_IPE_POLICY_LOAD = 1422
AUDIT_MAC_STATUS = 1404

#: The digest algorithm of policy thumbprints (IPE_AUDIT_HASH_ALG).
IPE_AUDIT_HASH_ALG = b"sha256"

#: TASK_COMM_LEN - 1: get_task_comm() never yields more.
_COMM_MAX = 15


def audit_untrusted(value: bytes) -> bytes:
    """audit_log_untrustedstring(): quoted, or upper-case hex when any byte is '"', < 0x21 or > 0x7e."""
    if any(b == 0x22 or b < 0x21 or b > 0x7E for b in value):
        return value.hex().upper().encode()
    return b'"' + value + b'"'


def audit_digest(d: Digest) -> bytes:
    """ipe_digest_audit(): untrusted-string algorithm, ':', upper-case hex."""
    return audit_untrusted(d.alg) + b":" + d.digest.hex().upper().encode()


def audit_rule(rule: Rule) -> bytes:
    """audit_rule(): the text inside ``rule="..."`` for a matched rule.

    ``op=OP `` then each property followed by one space, then ``action=ACT``.
    """
    out = [b"op=", rule.op.encode(), b" "]
    for prop in rule.props:
        out.append(prop.type.value.encode())
        if prop.value is not None:
            out.append(audit_digest(prop.value))
        out.append(b" ")
    out.append(b"action=" + rule.action.encode())
    return b"".join(out)


def audit_default_rule(action: Action, op: str | None) -> bytes:
    """The ``rule=`` text for a per-op default (op given) or the global default."""
    if op is None:
        return b"DEFAULT action=" + action.encode()
    return b"DEFAULT op=" + op.encode() + b" action=" + action.encode()


def _comm(task: Task) -> bytes:
    return task.comm.encode("utf-8", "surrogateescape")[:_COMM_MAX]


def audit_match(
    ctx: EvalContext,
    match_type: MatchType,
    action: Action,
    rule: Rule | None,
    *,
    enforcing: bool,
    task: Task,
) -> bytes:
    """ipe_audit_match(): the AUDIT_IPE_ACCESS body (the caller decides whether to emit it).

    ``path``/``dev`` are untrusted strings (d_path and the superblock's s_id), ``ino`` decimal;
    without a file the record says ``path=? dev=? ino=?``.
    """
    op = ctx.op.value if ctx.op is not None else "UNKNOWN"
    out = [
        f"ipe_op={op} ipe_hook={ctx.hook.value} enforcing={int(enforcing)} pid={task.pid} comm=".encode(),
        audit_untrusted(_comm(task)),
    ]
    f = ctx.file
    if f is not None:
        out += [
            b" path=",
            audit_untrusted(f.path.encode("utf-8", "surrogateescape")),
            b" dev=",
            audit_untrusted(f.dev.encode("utf-8", "surrogateescape")),
            f" ino={f.ino}".encode(),
        ]
    else:
        out.append(b" path=? dev=? ino=?")
    if match_type is MatchType.RULE:
        assert rule is not None
        text = audit_rule(rule)
    elif match_type is MatchType.TABLE:
        text = audit_default_rule(action, op)
    else:
        text = audit_default_rule(action, None)
    out += [b' rule="', text, b'"']
    return b"".join(out)


def policy_digest(pkcs7: bytes | None) -> bytes:
    """The thumbprint audit_policy() logs: SHA-256 over the PKCS#7 blob (empty for the boot policy)."""
    return hashlib.sha256(pkcs7 or b"").hexdigest().upper().encode()


def _audit_policy(prefix: bytes, pol: Policy) -> bytes:
    """audit_policy(): ``<prefix>name="N" <prefix>version=M.m.r <digest-key>=sha256:HEX``."""
    name_key, ver_key, dig_key = {
        b"": (b"policy_name", b"policy_version", b"policy_digest"),
        b"old": (b"old_active_pol_name", b"old_active_pol_version", b"old_policy_digest"),
        b"new": (b"new_active_pol_name", b"new_active_pol_version", b"new_policy_digest"),
    }[prefix]
    return b"".join(
        [
            name_key + b'="' + pol.parsed.name + b'" ',
            ver_key + b"=" + str(pol.parsed.version).encode() + b" ",
            dig_key + b"=" + IPE_AUDIT_HASH_ALG + b":" + policy_digest(pol.pkcs7),
        ]
    )


def _auid_ses(task: Task) -> bytes:
    return f"auid={task.auid} ses={task.ses}".encode()


def audit_policy_activation(old: Policy | None, new: Policy, task: Task) -> bytes:
    """ipe_audit_policy_activation(): the AUDIT_IPE_CONFIG_CHANGE body (``?`` fields if no old)."""
    if old is not None:
        first = _audit_policy(b"old", old)
    else:
        first = b"old_active_pol_name=? old_active_pol_version=? old_policy_digest=?"
    return first + b" " + _audit_policy(b"new", new) + b" " + _auid_ses(task) + b" lsm=ipe res=1"


def audit_policy_load(pol: Policy | int, task: Task, *, errno_field: bool) -> bytes:
    """ipe_audit_policy_load(): the AUDIT_IPE_POLICY_LOAD body for a policy or a negative errno.

    Before 6.16 only successes are audited and the record ends ``res=1``; from 6.16 it ends
    ``res=%d errno=%d`` and failures print ``policy_name=? policy_version=? policy_digest=?``.
    """
    if isinstance(pol, int):
        assert errno_field, "failed loads are audited from 6.16 only"
        head = b"policy_name=? policy_version=? policy_digest=?"
        err = pol
    else:
        head = _audit_policy(b"", pol)
        err = 0
    tail = b" " + _auid_ses(task) + b" lsm=ipe res=" + str(int(not err)).encode()
    if errno_field:
        tail += f" errno={err}".encode()
    return head + tail


def audit_enforce(new: bool, old: bool, task: Task) -> bytes:
    """ipe_audit_enforce(): the populated AUDIT_MAC_STATUS body."""
    return (
        f"enforcing={int(new)} old_enforcing={int(old)} ".encode()
        + _auid_ses(task)
        + b" enabled=1 old-enabled=1 lsm=ipe res=1"
    )


@dataclass
class AuditLog:
    """The queue of emitted records, oldest first: ``(type, body)`` with body decoded losslessly."""

    records: list[tuple[int, str]] = field(default_factory=list)

    def log(self, rtype: int, body: bytes) -> None:
        self.records.append((rtype, body.decode("utf-8", "surrogateescape")))

    def drain(self) -> list[tuple[int, str]]:
        out, self.records = self.records, []
        return out
