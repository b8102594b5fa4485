"""IPE policy texts for tests: one header builder and one ``policy_text``, so a test states only
what its policy is about (name, version, rules) and every test writes the grammar the same way."""

from __future__ import annotations

#: the default most test policies use: allow what no rule matches
ALLOW = "DEFAULT action=ALLOW"


def header(name: str = "p", version: str = "0.0.1") -> str:
    """The policy's first line: ``policy_name=NAME policy_version=VERSION``."""
    return f"policy_name={name} policy_version={version}"


def policy_text(name: str = "p", version: str = "0.0.1", *rules: str, default: str = ALLOW) -> bytes:
    """A whole policy: header, ``default``, then ``rules``, one per line, ending in a newline."""
    return "\n".join([header(name, version), default, *rules, ""]).encode()


def unparsable(name: str = "broken", version: str = "1.0.0") -> bytes:
    """A policy the parser refuses (EBADMSG): its one rule misspells its action."""
    return "\n".join([header(name, version), "op=EXECUTE action=ALOW", ""]).encode()
