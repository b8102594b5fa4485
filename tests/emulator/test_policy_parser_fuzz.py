"""Property tests for the policy parser: only PolicyError, only the kernel's errnos, round trip."""

from __future__ import annotations

import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from iped.emulator.policy_parser import Op, PolicyError, parse_policy
from tests.helpers.policy_format import format_policy

PARSER_ERRNOS = {errno.EBADMSG, errno.EINVAL, errno.ERANGE}

SEEDS: list[bytes] = [
    b"policy_name=allowall policy_version=0.0.0\nDEFAULT action=ALLOW",
    b"policy_name=whitespace policy_version=0.0.0\nDEFAULT\taction=ALLOW\n"
    b"     \t     DEFAULT \t    op=EXECUTE      action=DENY\n"
    b"op=EXECUTE boot_verified=TRUE action=ALLOW\n# comment\nDEFAULT \t op=KMODULE\t\t\t  action=DENY\r\n",
    b"policy_name=digests policy_version=65535.1.2\nDEFAULT action=DENY\n"
    b"op=EXECUTE dmverity_roothash=sha256:AbCd01 dmverity_signature=TRUE action=ALLOW\n"
    b"op=KEXEC_IMAGE fsverity_digest=sha512: fsverity_signature=FALSE action=ALLOW\n",
]

TOKENS = [
    b"policy_name=x", b"policy_version=1.2.3", b"DEFAULT", b"action=ALLOW", b"action=DENY",
    b"op=EXECUTE", b"op=POLICY", b"boot_verified=TRUE", b"dmverity_signature=FALSE",
    b"fsverity_digest=sha256:00", b"dmverity_roothash=x:zz", b"#", b"\n", b"\r", b"\0", b" ", b"\t",
    b"\xa0", b"=", b".", b"99999", b"+1", b"-1",
]  # fmt: skip


def check(text: bytes) -> None:
    """parse_policy either returns or raises PolicyError with a parser errno; nothing else."""
    try:
        parse_policy(text)
    except PolicyError as e:
        assert e.errno in PARSER_ERRNOS, e
        assert e.line is None or e.line >= 1


@settings(max_examples=400)
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    text = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "token"]))
        at = draw(st.integers(0, len(text)))
        if kind == "insert":
            text[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            text[at : at + draw(st.integers(1, 8))] = b""
        elif kind == "replace" and at < len(text):
            text[at] = draw(st.integers(0, 255))
        else:
            text[at:at] = draw(st.sampled_from(TOKENS))
    return bytes(text)


@settings(max_examples=800)
@given(mutated())
def test_mutated_valid_policies(text: bytes) -> None:
    check(text)


@settings(max_examples=300)
@given(mutated())
def test_format_round_trip(text: bytes) -> None:
    """For every text that parses, the canonical form parses back to an equal policy."""
    try:
        parsed = parse_policy(text)
    except PolicyError:
        return
    again = parse_policy(format_policy(parsed))
    assert (again.name, again.version, again.global_default) == (parsed.name, parsed.version, parsed.global_default)
    for op in Op:
        a, b = again.table(op), parsed.table(op)
        assert a.default == b.default
        assert [(r.op, r.action, r.props) for r in a.rules] == [(r.op, r.action, r.props) for r in b.rules]
    assert format_policy(again) == format_policy(parsed)


def test_seeds_are_valid() -> None:
    # The mutation corpus starts from policies that parse, so mutants are near misses.
    for seed in SEEDS:
        parse_policy(seed)
