"""Audit record bodies, byte for byte as the kernel writes them (security/ipe/audit.c).

Each function returns the text after ``audit(<ts>:<serial>): `` for one record.
"""

from __future__ import annotations

from iped.emulator.digest import Digest
from iped.emulator.policy_parser import Action, Rule

AUDIT_IPE_ACCESS = 1420
AUDIT_IPE_CONFIG_CHANGE = 1421
AUDIT_IPE_POLICY_LOAD = 1422
AUDIT_MAC_STATUS = 1404


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
