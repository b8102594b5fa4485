"""Typed record parsing (records.py) on exact kernel bodies, hex-encoded untrusted strings and truncation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iped.audit.records import (
    IpeAccess,
    IpeConfigChange,
    IpePolicyLoad,
    RawRecord,
    RecordError,
    decode_rule,
    decode_untrusted,
    parse_access,
    parse_log_line,
    parse_mac_status,
    parse_policy_load,
    parse_proctitle,
    parse_stamped,
    parse_syscall,
    parse_typed,
    parse_unproven_line,
    type_number,
)
from iped.audit.records import _decode_rule_tokens as decode_rule_tokens
from tests.helpers.records import kernel_bodies

ADMIN_GUIDE_1420 = (
    'ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=2241 comm="ld-linux.so" path="/deny/lib/libc.so.6" '
    'dev="sda2" ino=14549020 rule="DEFAULT action=DENY"'
)


def test_access_admin_guide() -> None:
    rec = parse_access(ADMIN_GUIDE_1420)
    assert rec == IpeAccess("EXECUTE", "MMAP", True, 2241, "ld-linux.so", "/deny/lib/libc.so.6", "sda2", 14549020,
                            "DEFAULT action=DENY")  # fmt: skip
    assert (rec.action, rec.match) == ("DENY", "global_default")


def test_access_no_file() -> None:
    rec = parse_access(
        'ipe_op=KMODULE ipe_hook=KERNEL_LOAD enforcing=0 pid=812 comm="insmod" path=? dev=? ino=? '
        'rule="DEFAULT op=KMODULE action=DENY"'
    )
    assert (rec.path, rec.dev, rec.ino, rec.enforcing, rec.match) == (None, None, None, False, "op_default")


def test_access_hex_untrusted_and_digest_rule() -> None:
    # comm "my tool" and a deleted path have a space -> the kernel prints them as upper-case hex
    body = (
        "ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=9 comm=6D7920746F6F6C "
        'path=2F612062 dev="vda1" ino=5 rule="op=EXECUTE fsverity_digest="sha256":ABCD action=ALLOW"'
    )
    rec = parse_access(body)
    assert (rec.comm, rec.path) == ("my tool", "/a b")
    assert rec.rule == 'op=EXECUTE fsverity_digest="sha256":ABCD action=ALLOW'
    assert rec.action == "ALLOW" and rec.match == "rule"
    assert decode_rule(rec.rule) == "op=EXECUTE fsverity_digest=sha256:ABCD action=ALLOW"
    # an algorithm name with odd bytes is itself hex ("sha 1")
    assert decode_rule("op=EXECUTE dmverity_roothash=73686120:00 action=DENY") == (
        "op=EXECUTE dmverity_roothash=sha :00 action=DENY"
    )


@pytest.mark.parametrize("rule", [
    'op=EXECUTE fsverity_digest="sha256":ABCD action=ALLOW',
    'op=EXECUTE fsverity_digest="sha256":AB:CD action=ALLOW',  # the last colon splits
    'op=EXECUTE fsverity_digest="sha256:ABCD action=ALLOW',
    "op=EXECUTE fsverity_digest=736861323536:ABCD action=ALLOW",
    'op=EXECUTE fsverity_digest="":ABCD',
    "op=EXECUTE fsverity_digest=ABCD action=ALLOW",  # no colon: as printed
    ' fsverity_digest="sha256":AB',
    'op=EXECUTE xfsverity_digest="sha256":AB fsverity_digest="sha256":CD action=ALLOW',
    'op=EXECUTE fsverity_digest="sha256":AB dmverity_roothash="sha256":CD action=ALLOW',
    'op=EXECUTE a=fsverity_digest="sha256":AB action=ALLOW',
    "DEFAULT action=DENY",
])  # fmt: skip
def test_decode_rule_quick_path_is_the_token_rendering(rule: str) -> None:
    assert decode_rule(rule) == decode_rule_tokens(rule)


@given(st.lists(st.sampled_from([" fsverity_digest=", "fsverity_digest", "dmverity_roothash=", "_digest=", "=",
                                 '"', ":", " ", "sha256", "AB", "736861", '"sha256":', "action=ALLOW"]),
                max_size=12).map("".join))  # fmt: skip
def test_decode_rule_quick_path_generated(rule: str) -> None:
    assert decode_rule(rule) == decode_rule_tokens(rule)


def test_access_truncated() -> None:
    rec = parse_access(
        'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=1 comm="a" path="/x" dev="vda1" ino=2 rule="op=EXE'
    )
    assert rec.rule == "op=EXE" and rec.action is None
    rec = parse_access("ipe_op=EXECUTE ipe_hook=BPR")
    assert (rec.hook, rec.rule, rec.pid, rec.match) == ("BPR", None, None, None)


def test_decode_untrusted() -> None:
    assert decode_untrusted('"abc"') == "abc"
    assert decode_untrusted("616263") == "abc"
    assert decode_untrusted("FF") == "\\xff"
    assert decode_untrusted("?") is None
    assert decode_untrusted("(null)") is None


def test_policy_load_forms() -> None:
    old = parse_policy_load(
        'policy_name="Ex_Policy" policy_version=0.0.1 policy_digest=sha256:AB auid=0 ses=2 lsm=ipe res=1'
    )
    assert old == IpePolicyLoad("Ex_Policy", "0.0.1", "sha256:AB", 0, 2, 1, None) and old.ok
    new_ok = parse_policy_load(
        'policy_name="boot_verified" policy_version=0.0.0 policy_digest=sha256:AB auid=4294967295 '
        "ses=4294967295 lsm=ipe res=1 errno=0"
    )
    assert (new_ok.auid, new_ok.ses, new_ok.errno, new_ok.ok) == (None, None, 0, True)
    failed = parse_policy_load("policy_name=? policy_version=? policy_digest=? auid=1000 ses=3 lsm=ipe res=0 errno=-74")
    assert failed == IpePolicyLoad(None, None, None, 1000, 3, 0, -74) and not failed.ok


def test_policy_name_with_quote() -> None:
    # policy_name is printed raw inside quotes: a '"' in the name is not escaped
    rec = parse_policy_load('policy_name="a"b" policy_version=1.0.0 policy_digest=sha256:00 auid=0 ses=1 lsm=ipe res=1')
    assert rec.name == 'a"b'


def test_config_change_none_old() -> None:
    rec = parse_typed(RawRecord(1421, 0, 0, 1,
        "old_active_pol_name=? old_active_pol_version=? old_policy_digest=? new_active_pol_name=\"Ex\" "
        "new_active_pol_version=0.0.1 new_policy_digest=sha256:AA auid=0 ses=2 lsm=ipe res=1"))  # fmt: skip
    assert rec == IpeConfigChange(None, None, None, "Ex", "0.0.1", "sha256:AA", 0, 2, 1)


def test_mac_status_only_ipe() -> None:
    ipe = "enforcing=0 old_enforcing=1 auid=4294967295 ses=4294967295 enabled=1 old-enabled=1 lsm=ipe res=1"
    rec = parse_mac_status(ipe)
    assert rec is not None and (rec.enforcing, rec.old_enforcing, rec.auid) == (False, True, None)
    assert (
        parse_mac_status("enforcing=1 old_enforcing=0 auid=0 ses=1 enabled=1 old-enabled=1 lsm=selinux res=1") is None
    )
    assert parse_mac_status("") is None  # the empty second 1404 of ipe_audit_enforce()


def test_syscall_and_proctitle() -> None:
    sc = parse_syscall('arch=c000003e syscall=59 success=no exit=-13 ppid=1 pid=5 auid=4294967295 uid=0 ses=4294967295 '
                       'comm="sh" exe="/usr/bin/dash" key=(null)')  # fmt: skip
    assert (sc.syscall, sc.success, sc.exit, sc.auid, sc.exe) == (59, False, -13, None, "/usr/bin/dash")
    assert parse_proctitle("proctitle=2F62696E2F7368002D63006563686F").argv == ("/bin/sh", "-c", "echo")
    assert parse_proctitle('proctitle="bash"').argv == ("bash",)


def test_line_forms() -> None:
    a = parse_log_line("type=IPE_ACCESS msg=audit(1653364370.067:61): " + ADMIN_GUIDE_1420)
    b = parse_log_line("node=h1 type=1420 msg=audit(1653364370.067:61): " + ADMIN_GUIDE_1420)
    c = parse_log_line("kern  :notice: [   12.3] audit: type=1420 audit(1653364370.067:61): " + ADMIN_GUIDE_1420)
    d = parse_log_line("type=UNKNOWN[1420] msg=audit(1653364370.067:61): " + ADMIN_GUIDE_1420 + '\x1dUID="root"')
    e = parse_unproven_line("[   12.3] audit: type=1420 audit(1653364370.067:61): " + ADMIN_GUIDE_1420)
    assert a == b == c == d == e == RawRecord(1420, 1653364370, 67, 61, ADMIN_GUIDE_1420)
    assert a.to_log_line() == "type=1420 msg=audit(1653364370.067:61): " + ADMIN_GUIDE_1420
    assert parse_stamped(1420, "audit(1653364370.067:61): " + ADMIN_GUIDE_1420 + "\x00") == a


@pytest.mark.parametrize(
    "bad", ["type=1420 msg=audit(123", "type=1420 msg=audit(x.y:z): a", "hello", "type=FOO msg=audit(1.0:1): x"]
)
def test_bad_lines(bad: str) -> None:
    with pytest.raises(RecordError):
        parse_log_line(bad)


def test_type_names() -> None:
    assert [type_number(n) for n in ("1422", "IPE_POLICY_LOAD", "UNKNOWN[1422]", "AUDIT1422")] == [1422] * 4


def test_fast_parsers_match_generic() -> None:
    """The one-regex parsers of 1420 and SYSCALL agree with the field-by-field ones."""
    from iped.audit.records import (
        _parse_access_generic,
        _parse_access_re,
        _parse_syscall_generic,
        parse_access,
        parse_syscall,
    )

    accesses = [
        'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=5 comm="sh" path="/x" dev="vda1" ino=2 rule="DEFAULT action=DENY"',  # noqa: E501
        'ipe_op=EXECUTE ipe_hook=MMAP enforcing=0 pid=5 comm=6C6420736F path=2F612062 dev="v" ino=2 rule="op=EXECUTE action=ALLOW"',  # noqa: E501
        'ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=5 comm="sh" path=? dev=? ino=? rule="DEFAULT op=EXECUTE action=DENY"',  # noqa: E501
        'ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=5 comm="sh" path="/x" dev="v" ino=2 rule="DEFAULT action=DE',
    ]
    for body in accesses:
        assert parse_access(body) == _parse_access_re(body) == _parse_access_generic(body)
    tail = 'a0=1 a1=2 a2=3 a3=4 items=1 ppid=1 pid=5 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=4294967295 comm="sh" exe=2F62696E2F7368'  # noqa: E501
    heads = (
        "arch=c000003e syscall=59 success=no exit=-13 ",
        "arch=c000003e syscall=59 per=400000 success=yes exit=0 ",
        "arch=c000003e syscall=59 ",
    )
    for head in heads:
        for end in ("", " subj=unconfined key=(null)"):
            body = head + tail + end
            assert parse_syscall(body) == _parse_syscall_generic(body)


def test_c_access_parser_matches_python_on_kernel_bodies() -> None:
    """parse_access takes the C helper's result where it gives one: the same record as the regex
    path on every 1420 body the real kernels wrote (and on odd ones it declines)."""
    from iped.audit import _scan
    from iped.audit.records import IpeAccess, _parse_access_re

    bodies = sorted({body for _, rtype, body in kernel_bodies() if rtype == 1420})
    odd = [b.replace('comm="', 'comm="x') for b in bodies[:5]] + [b.replace("pid=", "pid=+") for b in bodies[:5]]
    typed = 0
    for body in (
        bodies
        + odd
        + ["", "ipe_op=EXECUTE", 'ipe_op=E ipe_hook=H enforcing=1 pid=1 comm="é" path="/" dev="d" ino=1 rule="x"']
    ):
        c = _scan.parse_access(body, IpeAccess)
        if c is not None:
            typed += 1
            assert c == _parse_access_re(body) and type(c) is IpeAccess
        assert parse_access(body) == _parse_access_re(body)
    assert typed >= len(bodies) * 0.8


def test_type_name_cache_is_bounded() -> None:
    """Type numbers spelt with ever more leading zeros are all read, and the name cache of
    parse_log_line stays within its bound (each spelling was kept)."""
    from iped.audit import records

    for zeros in range(3000):
        rec = records.parse_log_line(f"type={'0' * zeros}1420 msg=audit(1700000000.001:{zeros + 1}): x=1")
        assert rec.type == 1420
    assert len(records._TYPE_CACHE) <= records._TYPE_CACHE_MAX
