"""security/ipe/policy_tests.c, case for case, plus iped's edge cases of the same grammar."""

from __future__ import annotations

import errno

import pytest

from iped.emulator.audit import audit_rule
from iped.emulator.policy_parser import (
    Action,
    Op,
    PolicyError,
    PropType,
    Version,
    parse_policy,
)
from tests.helpers.policy_format import format_policy

# (description, policy text, expected errno) — the KUnit table, in its order. The kernel test
# passes strlen(policy), so text after a NUL is never seen; parse_policy truncates the same way.
KUNIT_POLICY_CASES: list[tuple[str, bytes, int]] = [
    ("basic", b"policy_name=allowall policy_version=0.0.0\nDEFAULT action=ALLOW", 0),
    (
        "trailing comment",
        b"policy_name=trailing_comment policy_version=152.0.0 #This is comment\nDEFAULT action=ALLOW",
        0,
    ),
    ("trailing newline", b"policy_name=allowallnewline policy_version=0.2.0\nDEFAULT action=ALLOW\n\n", 0),
    (
        "clrf newline",
        b"policy_name=carriagereturnlinefeed policy_version=0.0.1\nDEFAULT action=ALLOW\n\r\n",
        0,
    ),
    (
        "various whitespaces and nested default",
        b"policy_name=whitespace policy_version=0.0.0\nDEFAULT\taction=ALLOW\n"
        b"     \t     DEFAULT \t    op=EXECUTE      action=DENY\n"
        b"op=EXECUTE boot_verified=TRUE action=ALLOW\n"
        b"# this is a\tcomment\t\t\t\t\n"
        b"DEFAULT \t op=KMODULE\t\t\t  action=DENY\r\n"
        b"op=KMODULE boot_verified=TRUE action=ALLOW\n",
        0,
    ),
    ("negative version", b"policy_name=boot_verified policy_version=-1236.0.0\nDEFAULT\taction=ALLOW\n", -22),
    ("special characters", b"policy_name=$@!*&^%%\\:;{}() policy_version=0.0.0\nDEFAULT action=ALLOW", 0),
    ("overflow version", b"policy_name=test policy_version=999999.0.0\nDEFAULT action=ALLOW", -34),
    ("incomplete version", b"policy_name=test policy_version=255.0\nDEFAULT action=ALLOW", -74),
    ("extra version", b"policy_name=test policy_version=111.0.0.0\nDEFAULT action=ALLOW", -74),
    ("0-length policy", b"", -74),
    ("random null in header", b"policy_name=test\0policy_version=0.0.0\nDEFAULT action=ALLOW", -74),
    ("incomplete policy from NULL", b"policy_name=test policy_version=0.0.0\n\0DEFAULT action=ALLOW", -74),
    (
        "NULL truncates policy",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=DENY\n\0"
        b"op=EXECUTE dmverity_signature=TRUE action=ALLOW\n",
        0,
    ),
    (
        "invalid property type",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"op=EXECUTE dmverity_signature=abc action=ALLOW",
        -74,
    ),
    ("missing policy header", b"DEFAULT action=ALLOW", -74),
    ("missing default definition", b"policy_name=test policy_version=0.0.0\n", -74),
    (
        "invalid rule ordering",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"dmverity_signature=TRUE op=EXECUTE action=ALLOW",
        -74,
    ),
    (
        "invalid rule ordering (2)",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"action=ALLOW op=EXECUTE dmverity_signature=TRUE",
        -74,
    ),
    (
        "invalid version",
        b"policy_name=test policy_version=0.0\nDEFAULT action=ALLOW\n"
        b"op=EXECUTE dmverity_signature=TRUE action=ALLOW",
        -74,
    ),
    (
        "unknown operation",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"op=UNKNOWN dmverity_signature=TRUE action=ALLOW",
        -74,
    ),
    ("missing space after policy name", b"policy_name=asdvpolicy_version=0.0.0\nDEFAULT action=ALLOW\n", -74),
    (
        "expanded ascii",
        b"policy_name=test\xff\xef policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"op=EXECUTE dmverity_signature=TRUE action=ALLOW",
        0,
    ),
    (
        "invalid property value (2)",
        b"policy_name=test\xff\xef policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"op=EXECUTE dmverity_roothash=GOOD_DOG action=ALLOW",
        -74,
    ),
    (
        "double header",
        b"policy_name=test policy_version=0.0.0\npolicy_name=test policy_version=0.1.0\nDEFAULT action=ALLOW",
        -74,
    ),
    (
        "double default",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nDEFAULT action=ALLOW\n",
        -74,
    ),
    (
        "double operation default",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"DEFAULT op=EXECUTE action=DENY\nDEFAULT op=EXECUTE action=ALLOW\n",
        -74,
    ),
    (
        "invalid action value",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DEN\n",
        -74,
    ),
    (
        "invalid action value (2)",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action\n",
        -74,
    ),
    (
        "unrecognized statement",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\nUNKNOWN value=true\n",
        -74,
    ),
    (
        "old-style digest",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"op=EXECUTE dmverity_roothash=1c0d7ee1f8343b7fbe418378e8eb22c061d7dec7 action=DENY\n",
        -74,
    ),
    (
        "old-style digest",
        b"policy_name=test policy_version=0.0.0\nDEFAULT action=ALLOW\n"
        b"op=EXECUTE fsverity_digest=1c0d7ee1f8343b7fbe418378e8eb22c061d7dec7 action=DENY\n",
        -74,
    ),
]


def _errno_of(text: bytes) -> int:
    try:
        parse_policy(text)
    except PolicyError as e:
        return -e.errno
    return 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(t, e, id=f"{i:02d}-{d}") for i, (d, t, e) in enumerate(KUNIT_POLICY_CASES, 1)],
)
def test_kunit_policy_cases(text: bytes, expected: int) -> None:
    assert _errno_of(text) == expected


def test_kunit_table_is_complete() -> None:
    assert len(KUNIT_POLICY_CASES) == 32


def test_kunit_widestring() -> None:
    """ipe_parser_widestring_test: UTF-16 text is an error (the kernel sees "p" then NUL)."""
    text = "policy_name=Test policy_version=0.0.0\nDEFAULT action=ALLOW".encode("utf-16-le")
    with pytest.raises(PolicyError) as e:
        parse_policy(text)
    assert e.value.errno == errno.EBADMSG


def test_whitespace_case_model() -> None:
    p = parse_policy(KUNIT_POLICY_CASES[4][1])
    assert p.name == b"whitespace"
    assert p.global_default is Action.ALLOW
    assert p.table(Op.EXECUTE).default is Action.DENY
    assert p.table(Op.KMODULE).default is Action.DENY
    assert [r.line for r in p.table(Op.EXECUTE).rules] == [4]
    # CRLF counts as one editor line: the KMODULE rule is on line 7.
    assert [r.line for r in p.table(Op.KMODULE).rules] == [7]


def _hdr(rest: bytes = b"DEFAULT action=ALLOW\n") -> bytes:
    return b"policy_name=t policy_version=1.2.3\n" + rest


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (b"+1.2.3", 0),
        (b"001.002.003", 0),
        (b"65535.65535.65535", 0),
        (b"65536.0.0", errno.ERANGE),
        (b"70000x.0.0", errno.EINVAL),
        (b"99999999999999999999x.0.0", errno.ERANGE),
        (b"18446744073709551615.0.0", errno.ERANGE),
        (b"18446744073709551616.0.0", errno.ERANGE),
        (b"1..2", errno.EINVAL),
        (b"1.2.", errno.EINVAL),
        (b"1.2.3.", errno.EBADMSG),
        (b"++1.2.3", errno.EINVAL),
        (b"0x10.0.0", errno.EINVAL),
        (b"-0.0.0", errno.EINVAL),
        (b"1.2", errno.EBADMSG),
        (b"999999.0", errno.ERANGE),
        (b"a", errno.EINVAL),
        (b"1", errno.EBADMSG),
    ],
)
def test_version_components(version: bytes, expected: int) -> None:
    text = b"policy_name=t policy_version=" + version + b"\nDEFAULT action=ALLOW"
    assert -_errno_of(text) == expected


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (b"op=EXECUTE action=ALLOW", 0),
        (b"op=EXECUTE boot_verified=TRUE boot_verified=FALSE action=ALLOW", 0),
        (b"op=EXECUTE fsverity_digest=sha256: action=ALLOW", 0),
        (b"op=EXECUTE fsverity_digest=:00 action=ALLOW", 0),
        (b"op=EXECUTE fsverity_digest=any-alg:AbCd action=ALLOW", 0),
        (b"op=EXECUTE fsverity_digest=sha256:abc action=ALLOW", errno.EINVAL),
        (b"op=EXECUTE fsverity_digest=sha256:zz action=ALLOW", errno.EINVAL),
        (b"op=EXECUTE fsverity_digest=sha256:00:00 action=ALLOW", errno.EINVAL),
        (b"op=EXECUTE dmverity_roothash= action=ALLOW", errno.EBADMSG),
        (b"op=EXECUTE fsverity_digest=sha256:abc action=BAD", errno.EINVAL),
        (b"op=EXECUTE boot_verified=true action=ALLOW", errno.EBADMSG),
        (b"op=execute action=ALLOW", errno.EBADMSG),
        (b"op=EXECUTE op=KMODULE action=ALLOW", errno.EBADMSG),
        (b"op=EXECUTE DEFAULT action=ALLOW", errno.EBADMSG),
        (b"DEFAULT DEFAULT action=ALLOW", errno.EBADMSG),
        (b"DEFAULT op=EXECUTE boot_verified=TRUE action=ALLOW", errno.EBADMSG),
        (b"action=ALLOW", errno.EBADMSG),
        (b"op=EXECUTE", errno.EBADMSG),
        (b"op=EXECUTE action=allow", errno.EBADMSG),
        (b"op=EXECUTE\x0baction=ALLOW", errno.EBADMSG),
        (b"op=EXECUTE action=ALLOW\x0b\x0c\xa0 ", 0),
        (b"op=EXECUTE action=ALLOW#comment", 0),
        (b"op=EXECUTE action=AL#LOW", errno.EBADMSG),
        (b"   \t op=EXECUTE \t\t action=DENY", 0),
        (b"op=EXECUTE action=ALLOW\rop=KMODULE action=DENY", 0),
        (b"op=EXECUTE action=ALLOW\x85", errno.EBADMSG),
    ],
)
def test_rule_grammar(rule: bytes, expected: int) -> None:
    assert -_errno_of(_hdr(b"DEFAULT action=ALLOW\n" + rule + b"\n")) == expected


def test_per_op_defaults_cover_every_op() -> None:
    ops = b"".join(f"DEFAULT op={op} action=DENY\n".encode() for op in Op)
    assert _errno_of(_hdr(ops)) == 0
    missing_one = b"".join(f"DEFAULT op={op} action=DENY\n".encode() for op in list(Op)[:-1])
    with pytest.raises(PolicyError) as e:
        parse_policy(_hdr(missing_one))
    assert e.value.errno == errno.EBADMSG
    assert "X509_CERT" in e.value.reason


def test_error_location() -> None:
    text = _hdr(b"DEFAULT action=ALLOW\n\r\nop=EXECUTE boot_verified=maybe action=ALLOW\n")
    with pytest.raises(PolicyError) as e:
        parse_policy(text)
    assert (e.value.errno, e.value.line, e.value.token) == (errno.EBADMSG, 4, b"boot_verified=maybe")
    assert "EBADMSG" in str(e.value)


@pytest.mark.parametrize(("token", "hint"), [
    (b"boot_verfied=TRUE", "; did you mean 'boot_verified=TRUE'?"),
    (b"dmverity_signature=true", "; did you mean 'dmverity_signature=TRUE'?"),
    (b"fsverity_digets=sha256:" + b"0" * 64, "; did you mean 'fsverity_digest=...'?"),
    (b"xyzzy", ""),
])
def test_unknown_property_names_the_nearest_but_keeps_the_kernels_errno(token: bytes, hint: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(_hdr(b"DEFAULT action=ALLOW\nop=EXECUTE " + token + b" action=DENY\n"))
    assert (e.value.errno, e.value.line, e.value.token) == (errno.EBADMSG, 3, token)
    assert e.value.reason == "unknown property (or TRUE/FALSE not in upper case)" + hint


def test_first_failing_line_wins() -> None:
    text = _hdr(b"op=EXECUTE fsverity_digest=sha256:0 action=ALLOW\nop=BAD action=ALLOW\n")
    with pytest.raises(PolicyError) as e:
        parse_policy(text)
    assert (e.value.errno, e.value.line) == (errno.EINVAL, 2)


def test_header_errors() -> None:
    for header, expected in [
        (b"policy_name= policy_version=0.0.0", errno.EBADMSG),
        (b"policy_version=0.0.0 policy_name=a", errno.EBADMSG),
        (b"policy_name=a", errno.EBADMSG),
        (b"policy_name=a policy_version=0.0.0 extra", errno.EBADMSG),
        (b"policy_name=a policy_version=99999.0.0 extra", errno.ERANGE),
        (b"policy_name=a=b policy_version=0.0.0", 0),
        (b"  policy_name=a\tpolicy_version=0.0.0", 0),
    ]:
        assert -_errno_of(header + b"\nDEFAULT action=ALLOW") == expected, header


def test_model_and_digest_bytes() -> None:
    p = parse_policy(
        _hdr(
            b"DEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=sha256:00ff dmverity_signature=TRUE action=DENY\n"
        )
    )
    assert p.version == Version(1, 2, 3)
    assert p.version.as_u64() == (1 << 32) | (2 << 16) | 3
    (rule,) = p.table(Op.EXECUTE).rules
    assert rule.props[0].type is PropType.FSV_DIGEST
    assert rule.props[0].value is not None
    assert (rule.props[0].value.alg, rule.props[0].value.digest) == (b"sha256", b"\x00\xff")
    assert rule.action is Action.DENY


def test_audit_rule_rendering() -> None:
    p = parse_policy(
        _hdr(
            b"DEFAULT action=ALLOW\n"
            b"op=EXECUTE fsverity_digest=sha256:00ff boot_verified=TRUE action=ALLOW\n"
            b'op=KMODULE dmverity_roothash=we"ird:ab action=DENY\n'
            b"op=FIRMWARE action=ALLOW\n"
        )
    )
    assert audit_rule(p.table(Op.EXECUTE).rules[0]) == (
        b'op=EXECUTE fsverity_digest="sha256":00FF boot_verified=TRUE action=ALLOW'
    )
    # An algorithm name with a '"' is not printable as a quoted string: the kernel hex-encodes it.
    assert (
        audit_rule(p.table(Op.KMODULE).rules[0])
        == b"op=KMODULE dmverity_roothash=776522697264:AB action=DENY"
    )
    assert audit_rule(p.table(Op.FIRMWARE).rules[0]) == b"op=FIRMWARE action=ALLOW"


def test_format_policy_round_trips() -> None:
    text = KUNIT_POLICY_CASES[4][1]
    p = parse_policy(text)
    q = parse_policy(format_policy(p))
    assert (q.name, q.version, q.global_default) == (p.name, p.version, p.global_default)
    assert [[(r.op, r.action, r.props) for r in t.rules] for t in q.tables] == [
        [(r.op, r.action, r.props) for r in t.rules] for t in p.tables
    ]
    assert [t.default for t in q.tables] == [t.default for t in p.tables]
