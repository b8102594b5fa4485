"""The C block scanner (iped/audit/_scan.c) against the Python one, item by item.

Both give, per line of an auditd log block, the line or a whole IPE access event; the C one
also types the common forms of the three bodies (None where it leaves them to the Python
parsers). Equal items, and typed records equal to what records.py's parsers give, on the
messy stream of test_bulk.py, on every real kernel 1420 body of the lab corpus and on
generated blocks where every field is spoiled in some way.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iped.audit import bulk
from iped.audit.group import Event
from iped.audit.records import IpeAccess, Proctitle, RawRecord, Syscall, parse_proctitle, parse_syscall
from iped.audit.records import _parse_access_re as parse_access  # (parse_access itself tries the C helper first)
from tests.helpers.records import SYSCALL, kernel_bodies, messy_lines

try:
    from iped.audit import _scan
except ImportError:  # a bare checkout: skip this module; test_bulk's "c" runs fail, naming the missing build
    pytest.skip("iped.audit._scan is not built (packaging/dev.sh setup builds it)", allow_module_level=True)


def c_items(text: str) -> list[Any] | None:
    items: list[Any] | None = _scan.scan_block(text, RawRecord, IpeAccess, Syscall, Proctitle, Event)
    return items


def assert_same(text: str) -> tuple[int, int]:
    """C items == Python items; returns (events, events the C scanner typed)."""
    ours = c_items(text)
    if not text.isascii() or "\r" in text or "\x1d" in text:
        assert ours is None  # left to the Python scanner
        return 0, 0
    assert ours is not None
    ref = bulk.scan_block_py(text)
    assert len(ours) == len(ref)
    events = typed = 0
    for mine, theirs in zip(ours, ref, strict=True):
        if isinstance(theirs, str):
            assert mine == theirs
            continue
        events += 1
        assert isinstance(mine, tuple)
        assert mine[:6] == theirs[:6]
        assert [type(r) for r in mine[3]] == [RawRecord] * 3
        three = mine[3]
        expected = (parse_access(three[0].body), parse_syscall(three[1].body), parse_proctitle(three[2].body))
        if mine[6] is not None:
            typed += 1
            assert mine[6] == expected
            assert [type(t) for t in mine[6]] == [IpeAccess, Syscall, Proctitle]
        event = mine[7]
        if mine[6] is None or mine[4]:
            assert event is None  # (records between SYSCALL and PROCTITLE: built in Python)
        else:  # the Event bulk.iter_block would build
            assert type(event) is Event
            assert event == Event(mine[0], mine[1], mine[2], three, True)
            assert event.__dict__ == {"sec": mine[0], "msec": mine[1], "serial": mine[2], "records": three,
                                      "complete": True, "is_ipe": True, "typed": expected}  # fmt: skip
    return events, typed


def test_messy_stream() -> None:
    # (the Python scanner handles the enriched lines' blocks: keep them out here)
    text = "\n".join(line for line in messy_lines() if "\x1d" not in line) + "\n"
    events, typed = assert_same(text)
    assert events > 150 and 40 < typed < events  # both typed and left-to-Python events


def _kernel_access_bodies() -> list[str]:
    return sorted({body for _, rtype, body in kernel_bodies() if rtype == 1420})


def test_real_kernel_access_bodies_are_typed_alike() -> None:
    bodies = _kernel_access_bodies()
    assert len(bodies) > 20
    lines = []
    for n, body in enumerate(bodies):
        stamp = f"1700000000.{n % 1000:03d}:{n + 1}"
        sc = SYSCALL.format(ok="no", exit=-13, pid=n, auid=1000, comm='"bash"')
        lines += [
            f"type=1420 msg=audit({stamp}): {body}",
            f"type=SYSCALL msg=audit({stamp}): {sc}",
            f"type=PROCTITLE msg=audit({stamp}): proctitle=2F62696E2F7368",
            f"type=EOE msg=audit({stamp}): ",
        ]
    events, typed = assert_same("\n".join(lines) + "\n")
    assert events == len(bodies)
    # the kernel quotes comm, path and dev unless they hold odd characters: most are typed in C
    assert typed >= len(bodies) * 0.8


def test_declines_what_python_handles() -> None:
    assert c_items("type=1420 msg=audit(1.2:3): x\r\n") is None
    assert c_items("type=1420 msg=audit(1.2:3): x\x1dAUID=root\n") is None
    assert c_items('type=1420 msg=audit(1.2:3): comm="é"\n') is None
    assert c_items("no newline at the end") == []
    assert c_items("") == []
    with pytest.raises(TypeError):
        _scan.scan_block(b"bytes", RawRecord, IpeAccess, Syscall, Proctitle, Event)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _scan.scan_block("x\n", int, IpeAccess, Syscall, Proctitle, Event)  # type: ignore[type-var]


def test_no_leak() -> None:
    text = "\n".join(line for line in messy_lines() if "\x1d" not in line) + "\n"
    c_items(text)
    gc.collect()
    tracemalloc.start()
    try:
        c_items(text)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            c_items(text)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # one leaked object per event would be ~200 kB here
    assert after - before < 20_000


# ---- generated blocks: the event shape with every part spoiled in some way ----

_digits = st.text("0123456789", min_size=1, max_size=3) | st.sampled_from(["0", "007", "9" * 19, "4294967295"])
_number = _digits | st.sampled_from(["-13", "-0", "+5", "1_0", "?", "", "0x10", " 5", "\t5", "٣"])
_word = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"'), max_size=6)
_untrusted = (
    st.builds(lambda w: f'"{w}"', _word)
    | st.sampled_from(["?", "(null)", '"', '""', "2F746D70", "2f746d70", "ZZ", '"a"b"'])
    | _word
)
_hex = st.binary(max_size=12).map(lambda b: b.hex().upper())
_title = (
    st.builds(lambda h: f"proctitle={h}", _hex | _hex.map(str.lower) | _hex.map(lambda h: h[:-1]))
    | st.sampled_from(['proctitle="tool"', "proctitle=ZZ", "proctitle=2F 2F", "proctitle=", "title=2F", ""])
    | st.builds(lambda b: "proctitle=" + b.hex(), st.binary(max_size=8).map(lambda b: b + b"\x00\xff\xe2\x82"))
)


@st.composite
def _access_body(draw: st.DrawFn) -> str:
    enf = draw(st.sampled_from(["0", "1", "2", "", "?"]))
    body = (
        f"ipe_op={draw(_word)} ipe_hook={draw(_word)} enforcing={enf} pid={draw(_number)} "
        f"comm={draw(_untrusted)} path={draw(_untrusted)} dev={draw(_untrusted)} ino={draw(_number)} "
        f'rule="{draw(_word)} action={draw(st.sampled_from(["ALLOW", "DENY"]))}"'
    )
    return draw(st.sampled_from([body, body[:-1], body[: draw(st.integers(0, len(body)))], body + " x=1"]))


@st.composite
def _syscall_body(draw: st.DrawFn) -> str:
    body = SYSCALL.format(
        ok=draw(st.sampled_from(["yes", "no", "?"])),
        exit=draw(_number),
        pid=draw(_number),
        auid=draw(_number),
        comm=draw(_untrusted),
    ).replace('exe="/usr/bin/bash"', f"exe={draw(_untrusted)}")
    how = draw(st.sampled_from(["as is", "per", "no success", "cut", "no tail", "uid"]))
    if how == "per":
        body = body.replace("a0=", "per=400000 a0=")
    elif how == "no success":
        body = body.replace("success=no exit=-13 ", "").replace("success=yes exit=0 ", "")
    elif how == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif how == "no tail":
        body = body[: body.index(" subj=")]
    elif how == "uid":
        body = body.replace("uid=1000 gid", f"uid={draw(_number)} gid")
    return body


@st.composite
def _line(draw: st.DrawFn, stamp: str, kind: str) -> str:
    names = {
        "access": ["1420", "IPE_ACCESS", "UNKNOWN[1420]", "14200", "IPE_ACCES"],
        "syscall": ["SYSCALL", "1300"],
        "middle": ["CWD", "PATH", "FOO", "EOE", "1320", "PROCTITLE", ""],
        "title": ["PROCTITLE", "1327"],
        "eoe": ["EOE", "1320"],
    }[kind]
    name = draw(st.sampled_from(names))
    if draw(st.integers(0, 9)) == 0:
        stamp = draw(st.sampled_from(["1.2:3", "1700000000.001:10000", "a.b:c", "1.2", "1" * 25 + ".0:1"]))
    sep = draw(st.sampled_from([": ", ": ", ":", ":  "]))
    body = {
        "access": _access_body(),
        "syscall": _syscall_body(),
        "middle": st.sampled_from(['cwd="/root"', "item=0 name=x", ""]),
        "title": _title,
        "eoe": st.sampled_from(["", " ", "x"]),
    }[kind]
    node = "node=h " if draw(st.integers(0, 19)) == 0 else ""
    return f"{node}type={name} msg=audit({stamp}){sep}{draw(body)}"


@st.composite
def _block(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for n in range(draw(st.integers(1, 6))):
        stamp = f"{draw(st.sampled_from(['1700000000', '5', '0' * 20 + '7']))}.{n:03d}:{draw(_digits)}"
        kinds = ["access", "syscall", *(["middle"] * draw(st.integers(0, 2))), "title", "eoe"]
        if draw(st.integers(0, 4)) == 0:
            kinds = draw(st.permutations(kinds))
        if draw(st.integers(0, 4)) == 0:
            del kinds[draw(st.integers(0, len(kinds) - 1))]
        lines += [draw(_line(stamp, kind)) for kind in kinds]
        if draw(st.integers(0, 6)) == 0:
            lines.append(draw(st.sampled_from(["----", "", "junk line", "type=EOE msg=audit(5.000:1): "])))
    text = "\n".join(lines)
    return text + draw(st.sampled_from(["\n", "\n", ""]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_block())
def test_generated_blocks(text: str) -> None:
    assert_same(text)
