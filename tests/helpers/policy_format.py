"""Canonical policy text for the parser's round-trip tests (the package itself never writes policies
from a parsed one: suggest writes its own text, with comments)."""

from __future__ import annotations

from iped.emulator.policy_parser import Op, ParsedPolicy


def format_policy(policy: ParsedPolicy) -> bytes:
    """Canonical policy text: parses back to an equal policy (rules grouped per op, as the kernel stores them)."""
    out = [b"policy_name=" + policy.name + b" policy_version=" + str(policy.version).encode()]
    if policy.global_default is not None:
        out.append(b"DEFAULT action=" + policy.global_default.encode())
    for op, table in zip(Op, policy.tables, strict=True):
        if table.default is not None:
            out.append(f"DEFAULT op={op} action={table.default}".encode())
        for rule in table.rules:
            words = [f"op={op}".encode()]
            for prop in rule.props:
                word = prop.type.value.encode()
                if prop.value is not None:
                    word += prop.value.alg + b":" + prop.value.digest.hex().encode()
                words.append(word)
            words.append(f"action={rule.action}".encode())
            out.append(b" ".join(words))
    return b"\n".join(out) + b"\n"
