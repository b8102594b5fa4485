"""The policy text builders write what the kernel's parser takes, in the shape tests expect."""

from __future__ import annotations

from iped.emulator.policy_parser import parse_policy
from tests.helpers.policies import header, policy_text


def test_policy_text_is_header_default_then_rules() -> None:
    text = policy_text("base", "1.2.3", "op=EXECUTE boot_verified=TRUE action=DENY")
    assert text == (b"policy_name=base policy_version=1.2.3\nDEFAULT action=ALLOW\n"
                    b"op=EXECUTE boot_verified=TRUE action=DENY\n")


def test_the_defaults_parse() -> None:
    policy = parse_policy(policy_text(default="DEFAULT action=DENY"))
    assert (policy.name, str(policy.version)) == (b"p", "0.0.1")
    assert header("x", "2.0.0") == "policy_name=x policy_version=2.0.0"
