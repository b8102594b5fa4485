"""Evaluation semantics: first match wins, defaults, no policy, permissive, NULL file, every
property with its Kconfig on and off, and the compiled path against the kernel's linear walk."""

from __future__ import annotations

import errno
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iped.emulator import Emulator, FileInfo, Task
from iped.emulator.compiled import compile_policy, evaluate
from iped.emulator.eval import build_eval_ctx, evaluate_linear, property_evaluators
from iped.emulator.policy_parser import Action, Op, parse_policy
from iped.emulator.types import Hook, KernelConfig
from tests.helpers.emulator import load, make_emulator
from tests.helpers.policies import policy_text

SHA = bytes(range(32))
SHA_HEX = SHA.hex()
TASK = Task(pid=7, comm="sh")


def activate(emu: Emulator, *rules: str, default: str = "DEFAULT action=ALLOW", name: str = "p") -> None:
    load(emu, name, "0.0.1", *rules, default=default)
    emu.write(f"policies/{name}/active", b"1")
    emu.drain_audit()


def allowed(emu: Emulator, f: FileInfo | None, op: str | None = "EXECUTE", hook: str = "BPRM_CHECK") -> bool:
    try:
        emu.evaluate(op, hook, f, TASK)
    except PermissionError as e:
        assert e.errno == errno.EACCES
        return False
    return True


PLAIN = FileInfo("/usr/bin/true", "vda1", 12)
BOOT = FileInfo("/init", "rootfs", 2, boot_verified=True)
DMV = FileInfo("/usr/bin/ls", "dm-0", 99, dmverity_roothash=("sha256", SHA))
DMV_SIGNED = FileInfo("/usr/bin/ls", "dm-0", 99, dmverity_roothash=("sha256", SHA), dmverity_signature=True)
FSV = FileInfo("/opt/x", "vda1", 5, fsverity_digest=("sha256", SHA))
FSV_SIGNED = FileInfo("/opt/x", "vda1", 5, fsverity_digest=("sha256", SHA), fsverity_signature=True)


def test_no_active_policy_allows_silently() -> None:
    emu = make_emulator()
    load(emu, "loaded_only", default="DEFAULT action=DENY")
    emu.write("success_audit", b"1")
    emu.drain_audit()
    assert allowed(emu, PLAIN)
    assert allowed(emu, None, "KMODULE", "KERNEL_LOAD")
    assert emu.drain_audit() == []


def test_first_match_wins_in_file_order() -> None:
    emu = make_emulator()
    activate(emu, "op=EXECUTE boot_verified=TRUE action=DENY", "op=EXECUTE action=ALLOW", default="DEFAULT action=DENY")
    assert not allowed(emu, BOOT)
    assert allowed(emu, PLAIN)
    (rec,) = emu.drain_audit()
    assert rec[1].endswith('rule="op=EXECUTE boot_verified=TRUE action=DENY"')


def test_per_op_default_beats_global_and_other_ops_use_global() -> None:
    emu = make_emulator()
    activate(emu, "DEFAULT op=EXECUTE action=ALLOW", default="DEFAULT action=DENY")
    assert allowed(emu, PLAIN)
    assert not allowed(emu, PLAIN, "KMODULE", "KERNEL_READ")
    (rec,) = emu.drain_audit()
    assert rec[1].endswith('rule="DEFAULT action=DENY"') and "ipe_op=KMODULE" in rec[1]


def test_per_op_default_written_before_rules_still_comes_after_them() -> None:
    emu = make_emulator()
    activate(emu, "DEFAULT op=EXECUTE action=DENY", "op=EXECUTE boot_verified=TRUE action=ALLOW")
    assert allowed(emu, BOOT)
    assert not allowed(emu, PLAIN)


def test_permissive_audits_but_never_blocks() -> None:
    emu = make_emulator()
    activate(emu, default="DEFAULT action=DENY")
    emu.write("enforce", b"0")
    emu.drain_audit()
    assert allowed(emu, PLAIN)
    assert emu.drain_audit() == [
        (
            1420,
            'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=0 pid=7 comm="sh" path="/usr/bin/true" dev="vda1" ino=12'
            ' rule="DEFAULT action=DENY"',
        )
    ]


def test_allow_audited_only_with_success_audit() -> None:
    emu = make_emulator()
    activate(emu)
    assert allowed(emu, PLAIN)
    assert emu.drain_audit() == []
    emu.write("success_audit", b"1")
    assert allowed(emu, PLAIN)
    assert emu.drain_audit() == [
        (
            1420,
            'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=7 comm="sh" path="/usr/bin/true" dev="vda1" ino=12'
            ' rule="DEFAULT action=ALLOW"',
        )
    ]


def test_unknown_op_uses_global_default_and_says_unknown() -> None:
    emu = make_emulator()
    activate(emu, "DEFAULT op=KMODULE action=ALLOW", default="DEFAULT action=DENY")
    assert not allowed(emu, None, None, "KERNEL_LOAD")
    assert emu.drain_audit() == [
        (
            1420,
            'ipe_op=UNKNOWN ipe_hook=KERNEL_LOAD enforcing=1 pid=7 comm="sh" path=? dev=? ino=?'
            ' rule="DEFAULT action=DENY"',
        )
    ]


def test_unknown_op_without_global_default_is_allowed() -> None:
    ops = ["EXECUTE", "FIRMWARE", "KMODULE", "KEXEC_IMAGE", "KEXEC_INITRAMFS", "POLICY", "X509_CERT"]
    emu = make_emulator()
    activate(emu, *[f"DEFAULT op={o} action=DENY" for o in ops[1:]], default="DEFAULT op=EXECUTE action=DENY")
    emu.write("success_audit", b"1")
    assert allowed(emu, PLAIN, None, "KERNEL_READ")
    assert emu.drain_audit() == [
        (
            1420,
            'ipe_op=UNKNOWN ipe_hook=KERNEL_READ enforcing=1 pid=7 comm="sh" path="/usr/bin/true" dev="vda1" ino=12 '
            'rule="DEFAULT action=ALLOW"',
        )
    ]


def test_anonymous_memory_record_and_negative_properties() -> None:
    emu = make_emulator()
    activate(
        emu,
        "op=EXECUTE boot_verified=FALSE dmverity_signature=FALSE fsverity_signature=FALSE action=DENY",
        default="DEFAULT action=ALLOW",
    )
    assert not allowed(emu, None, "EXECUTE", "MMAP")
    assert emu.drain_audit() == [
        (
            1420,
            'ipe_op=EXECUTE ipe_hook=MMAP enforcing=1 pid=7 comm="sh" path=? dev=? ino=? '
            'rule="op=EXECUTE boot_verified=FALSE dmverity_signature=FALSE fsverity_signature=FALSE action=DENY"',
        )
    ]


CASES: list[tuple[str, FileInfo | None, bool]] = [
    ("boot_verified=TRUE", BOOT, True),
    ("boot_verified=TRUE", PLAIN, False),
    ("boot_verified=TRUE", None, False),
    ("boot_verified=FALSE", PLAIN, True),
    ("boot_verified=FALSE", None, True),
    ("boot_verified=FALSE", BOOT, False),
    (f"dmverity_roothash=sha256:{SHA_HEX}", DMV, True),
    (f"dmverity_roothash=sha256:{SHA_HEX.upper()}", DMV, True),
    (f"dmverity_roothash=SHA256:{SHA_HEX}", DMV, False),
    (f"dmverity_roothash=sha256:{SHA_HEX[:-2]}", DMV, False),
    ("dmverity_roothash=sha256:", DMV, False),
    (f"dmverity_roothash=sha256:{SHA_HEX}", FSV, False),
    (f"dmverity_roothash=sha256:{SHA_HEX}", None, False),
    ("dmverity_signature=TRUE", DMV_SIGNED, True),
    ("dmverity_signature=TRUE", DMV, False),
    ("dmverity_signature=FALSE", DMV, True),
    ("dmverity_signature=FALSE", DMV_SIGNED, False),
    ("dmverity_signature=FALSE", PLAIN, True),
    ("dmverity_signature=FALSE", None, True),
    (f"fsverity_digest=sha256:{SHA_HEX}", FSV, True),
    (f"fsverity_digest=sha512:{SHA_HEX}", FSV, False),
    (f"fsverity_digest=sha256:{SHA_HEX}", DMV, False),
    (f"fsverity_digest=sha256:{SHA_HEX}", None, False),
    ("fsverity_signature=TRUE", FSV_SIGNED, True),
    ("fsverity_signature=TRUE", FSV, False),
    ("fsverity_signature=TRUE", FileInfo("/a", "vda1", 1, fsverity_signature=True), False),
    ("fsverity_signature=FALSE", FSV, True),
    ("fsverity_signature=FALSE", FSV_SIGNED, False),
    ("fsverity_signature=FALSE", PLAIN, True),
    ("fsverity_signature=FALSE", None, True),
]


@pytest.mark.parametrize(("prop", "file", "matches"), CASES)
def test_property(prop: str, file: FileInfo | None, matches: bool) -> None:
    emu = make_emulator()
    activate(emu, f"op=EXECUTE {prop} action=DENY")
    assert allowed(emu, file, "EXECUTE", "MMAP") is not matches


KCONFIG_OFF = {
    "dmverity_roothash": "prop_dm_verity",
    "dmverity_signature": "prop_dm_verity_signature",
    "fsverity_digest": "prop_fs_verity",
    "fsverity_signature": "prop_fs_verity_builtin_sig",
}


@pytest.mark.parametrize(("prop", "file", "matches"), [c for c in CASES if not c[0].startswith("boot")])
def test_property_with_kconfig_off_never_matches(prop: str, file: FileInfo | None, matches: bool) -> None:
    option = KCONFIG_OFF[prop.split("=", 1)[0]]
    emu = make_emulator(config=KernelConfig(**{option: False}))  # type: ignore[arg-type]
    activate(emu, f"op=EXECUTE {prop} action=DENY")
    assert allowed(emu, file, "EXECUTE", "MMAP")


def test_kconfig_off_property_still_parses() -> None:
    emu = make_emulator(config=KernelConfig(prop_fs_verity=False, prop_fs_verity_builtin_sig=False))
    activate(
        emu,
        f"op=EXECUTE fsverity_digest=sha256:{SHA_HEX} action=ALLOW",
        "op=EXECUTE fsverity_signature=TRUE action=ALLOW",
        default="DEFAULT action=DENY",
    )
    assert not allowed(emu, FSV_SIGNED)


def test_indexed_later_digest_rule_does_not_beat_earlier_match() -> None:
    emu = make_emulator()
    digests = [random.Random(i).randbytes(32).hex() for i in range(50)]
    activate(
        emu,
        "op=EXECUTE fsverity_signature=TRUE action=DENY",
        *[f"op=EXECUTE fsverity_digest=sha256:{d} action=ALLOW" for d in digests],
        f"op=EXECUTE fsverity_digest=sha256:{SHA_HEX} action=ALLOW",
        default="DEFAULT action=DENY",
    )
    assert not allowed(emu, FSV_SIGNED)  # the earlier unindexed rule matches first
    assert allowed(emu, FSV)  # then the indexed rule
    assert allowed(emu, FileInfo("/y", "vda1", 6, fsverity_digest=("sha256", bytes.fromhex(digests[30]))))
    assert not allowed(emu, PLAIN)


def test_earliest_of_duplicate_digest_rules_wins() -> None:
    emu = make_emulator()
    emu.write("success_audit", b"1")
    activate(
        emu,
        f"op=EXECUTE fsverity_digest=sha256:{SHA_HEX} boot_verified=TRUE action=DENY",
        f"op=EXECUTE fsverity_digest=sha256:{SHA_HEX} action=ALLOW",
        f"op=EXECUTE dmverity_roothash=sha256:{SHA_HEX} action=DENY",
    )
    both = FileInfo("/z", "dm-0", 1, dmverity_roothash=("sha256", SHA), fsverity_digest=("sha256", SHA))
    assert allowed(emu, both)
    assert emu.drain_audit()[0][1].endswith(
        f'rule="op=EXECUTE fsverity_digest="sha256":{SHA_HEX.upper()} action=ALLOW"'
    )
    booted = FileInfo(
        "/z", "dm-0", 1, boot_verified=True, dmverity_roothash=("sha256", SHA), fsverity_digest=("sha256", SHA)
    )
    assert not allowed(emu, booted)


# --- compiled path == kernel's linear walk, for random policies and files ------------------------

_ALGS = ["sha256", "sha512"]
_DIGESTS = [bytes([i]) * 32 for i in range(4)]


def _prop_strategy() -> st.SearchStrategy[str]:
    flag = st.sampled_from(
        [f"{k}={v}" for k in ("boot_verified", "dmverity_signature", "fsverity_signature") for v in ("TRUE", "FALSE")]
    )
    dig = st.builds(
        lambda k, a, d: f"{k}={a}:{d.hex()}",
        st.sampled_from(["dmverity_roothash", "fsverity_digest"]),
        st.sampled_from(_ALGS),
        st.sampled_from(_DIGESTS),
    )
    return st.one_of(flag, dig)


_rule = st.builds(
    lambda op, props, act: " ".join([f"op={op}", *props, f"action={act}"]),
    st.sampled_from(["EXECUTE", "KMODULE"]),
    st.lists(_prop_strategy(), max_size=3),
    st.sampled_from(["ALLOW", "DENY"]),
)
_opt_digest = st.one_of(st.none(), st.tuples(st.sampled_from(_ALGS), st.sampled_from(_DIGESTS)))
_file = st.one_of(
    st.none(),
    st.builds(
        lambda b, dmv, dsig, fsv, fsig: FileInfo("/f", "vda", 1, b, dmv, dsig, fsv, fsig),
        st.booleans(), _opt_digest, st.booleans(), _opt_digest, st.booleans(),
    ),
)  # fmt: skip
_config = st.builds(KernelConfig, st.booleans(), st.booleans(), st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_rule, max_size=12),
    st.sampled_from(["DEFAULT action=ALLOW", "DEFAULT action=DENY"]),
    st.lists(st.tuples(st.sampled_from([Op.EXECUTE, Op.KMODULE, None]), _file), min_size=1, max_size=8),
    _config,
)
def test_compiled_equals_linear(
    rules: list[str], default: str, events: list[tuple[Op | None, FileInfo | None]], config: KernelConfig
) -> None:
    parsed = parse_policy(policy_text("h", "0.0.0", *rules, default=default))
    compiled = compile_policy(parsed, config)
    evaluators = property_evaluators(config)
    for op, f in events:
        ctx = build_eval_ctx(f, op, Hook.MMAP)
        expect = evaluate_linear(parsed, ctx, evaluators)
        assert evaluate(compiled, ctx) == expect
        assert compiled.decide_uncached(op, ctx.facts) == expect
        assert expect.action in (Action.ALLOW, Action.DENY)
