"""The fast JSON Lines renderer (render.JsonLines) against the reference (event_objects + json.dumps).

``iped audit --json`` prints JsonLines' lines; the bytes must be those of the reference for
every event: the IPE records the real kernels wrote in the lab corpus (with and without their
SYSCALL/PROCTITLE, a policy that locates their rules and none), the messy stream of
test_bulk.py read through the bulk path with each block scanner, and a generated log of
every record kind with odd values (non-ASCII and control characters, permissive mode,
unset ids). One renderer runs over each whole stream, so what it keeps between events is
exercised too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from iped.audit import bulk
from iped.audit.explain import PolicyIndex
from iped.audit.files import iter_file_events
from iped.audit.group import Event, Grouper
from iped.audit.records import RawRecord
from iped.audit.render import JsonLines, event_objects, json_line, stamp_texts
from iped.emulator.audit import audit_untrusted
from tests.helpers.paths import AUDIT_GOLDEN
from tests.helpers.records import SYSCALL, kernel_bodies, messy_lines

GOLDEN = AUDIT_GOLDEN
POLICY = GOLDEN / "policy.pol"


def assert_same_lines(events: Iterable[Event], index: PolicyIndex | None) -> int:
    """Every event renders to the reference bytes; returns the number of lines compared."""
    fast = JsonLines(index)
    n = 0
    for event in events:
        if not event.is_ipe:
            continue
        objs = event_objects(event, index)
        got = fast.lines(event)
        assert [line for _, line in got] == [json_line(obj) for obj in objs], event
        for (rec, _), obj in zip(got, objs, strict=True):  # what --denials reads
            assert (rec is not None) == (obj["kind"] == "access")
            if rec is not None:
                assert rec.action == obj["decision"]
        n += len(got)
    # what `iped audit --json` prints with no filter: the same lines, one call for the stream
    events = list(events)
    out: list[str] = []
    assert JsonLines(index).extend(out, events) == sum(1 for e in events if e.is_ipe)
    assert len(out) == n and out == [json_line(o) for e in events if e.is_ipe for o in event_objects(e, index)]
    return n


def _group(records: list[RawRecord]) -> list[Event]:
    grouper = Grouper(2.0)
    events: list[Event] = []
    for rec in records:
        events.extend(grouper.feed(rec, rec.sec))
    return events + grouper.flush()


def _kernel_events() -> list[Event]:
    """Each IPE body of the corpus as an event: alone, or (1420s) with a SYSCALL and PROCTITLE."""
    records = []
    for n, (_, rtype, body) in enumerate(kernel_bodies()):
        stamp = (1700000000 + n // 7, n % 1000, n + 1)
        records.append(RawRecord(rtype, *stamp, body))
        if n % 3:
            sc = SYSCALL.format(ok="no", exit=-13, pid=n, auid=4294967295 if n % 5 == 0 else 0, comm='"sh"')
            records.append(RawRecord(1300, *stamp, sc))
        if n % 4:
            records.append(RawRecord(1327, *stamp, "proctitle=2F62696E2F7368002D63"))
        records.append(RawRecord(1320, *stamp, ""))
    return _group(records)


@pytest.mark.parametrize("with_policy", [True, False], ids=["policy", "no-policy"])
def test_lab_corpus_records(with_policy: bool) -> None:
    events = _kernel_events()
    assert len(events) > 100
    # (the few 1404s that are not IPE's own give no line)
    assert assert_same_lines(events, PolicyIndex.from_file(POLICY) if with_policy else None) > len(events) * 0.9


def _file_events(path: Path) -> list[Event]:
    grouper = Grouper(2.0)
    return [*iter_file_events(path, grouper), *grouper.flush()]


@pytest.mark.parametrize("scanner", ["c", "python"])
def test_messy_stream_through_the_bulk_path(tmp_path: Path, scanner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "use_c_scanner", scanner == "c")
    log = tmp_path / "audit.log"
    log.write_text("\n".join(messy_lines()) + "\n")
    assert assert_same_lines(_file_events(log), PolicyIndex.from_file(POLICY)) > 150


def _untrusted(text: str) -> str:
    return audit_untrusted(text.encode()).decode()


def _generated_lines() -> list[str]:
    """Every IPE record kind, with values that JSON must escape and fields the kernel leaves unset."""
    odd = ["tool", "tab\there", 'quo"te', "back\\slash", "nl\nx", "é-ü", "雪", "\x01ctl", "sp ace"]
    rules = [
        "DEFAULT action=DENY",
        "DEFAULT op=EXECUTE action=ALLOW",
        "op=EXECUTE boot_verified=TRUE action=ALLOW",
        'op=EXECUTE fsverity_digest="sha256":' + "AB" * 32 + " action=DENY",
    ]
    digest = "sha256:" + "CD" * 32
    lines = []
    for i in range(400):
        stamp = f"{1700000000 + i // 3}.{(i * 7) % 1000:03d}:{100 + i}"
        name = odd[i % len(odd)]
        unset = "4294967295" if i % 3 else "0"
        kind = i % 10
        if kind < 7:
            path, dev, ino = ("?", "?", "?") if i % 13 == 0 else (_untrusted("/bin/" + name), '"vda1"', str(i))
            lines.append(
                f"type=1420 msg=audit({stamp}): ipe_op=EXECUTE ipe_hook={'MMAP' if i % 3 else 'BPRM_CHECK'} "
                f'enforcing={i % 2} pid={i} comm="sh" path={path} dev={dev} ino={ino} rule="{rules[i % 4]}"'
            )
        elif kind == 7:
            lines.append(
                f'type=1422 msg=audit({stamp}): policy_name="p{i}" policy_version=0.0.{i} policy_digest={digest} '
                f"auid={unset} ses=2 lsm=ipe res=1{'' if i % 2 else ' errno=-74'}"
            )
            lines.append(
                f'type=1421 msg=audit({stamp}): old_active_pol_name="p{i - 1}" old_active_pol_version=0.0.1 '
                f'old_policy_digest={digest} new_active_pol_name="p{i}" new_active_pol_version=0.0.2 '
                f"new_policy_digest={digest} auid=0 ses={unset} lsm=ipe res=1"
            )
        elif kind == 8:
            lines.append(
                f"type=1404 msg=audit({stamp}): enforcing={i % 2} old_enforcing={1 - i % 2} auid=0 ses=2 "
                "enabled=1 old-enabled=1 lsm=ipe res=1"
            )
        else:
            lines.append(
                f"type=1422 msg=audit({stamp}): policy_name=? policy_version=? policy_digest=? auid=0 ses=2 "
                "lsm=ipe res=0 errno=-126"
            )
        if i % 5:
            ok = i % 2 == 1
            sc = SYSCALL.format(
                ok="yes" if ok else "no", exit=0 if ok else -13, pid=i, auid=unset, comm=_untrusted(name)
            )
            lines.append(f"type=SYSCALL msg=audit({stamp}): {sc}")
        if i % 6 == 1:
            lines.append(f'type=CWD msg=audit({stamp}): cwd="/root"')
        if i % 4:
            argv = ("/bin/" + name + "\0-x\0" + odd[(i + 1) % len(odd)]).encode().hex().upper()
            lines.append(f"type=PROCTITLE msg=audit({stamp}): proctitle={argv if i % 8 else chr(34) + 'sh' + chr(34)}")
        if i % 11:
            lines.append(f"type=EOE msg=audit({stamp}): ")  # else: flushed incomplete
    return lines


@pytest.mark.parametrize("scanner", ["c", "python"])
def test_generated_log(tmp_path: Path, scanner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "use_c_scanner", scanner == "c")
    log = tmp_path / "audit.log"
    log.write_text("\n".join(_generated_lines()) + "\n", encoding="utf-8")
    events = _file_events(log)
    for index in (PolicyIndex.from_file(POLICY), None):
        assert assert_same_lines(events, index) > 400


def test_cli_prints_the_reference_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``iped audit --source LOG --json [--denials]``: the reference lines of the file's events, in order."""
    from iped.cli import main

    log = tmp_path / "audit.log"
    log.write_text("\n".join(_generated_lines() + messy_lines()) + "\n", encoding="utf-8")
    index = PolicyIndex.from_file(POLICY)
    objs = [obj for event in _file_events(log) if event.is_ipe for obj in event_objects(event, index)]
    for denials in (False, True):
        argv = ["audit", "--source", str(log), "--json", "--policy", str(POLICY)] + (["--denials"] if denials else [])
        assert main(argv) == 0
        want = [o for o in objs if not denials or (o["kind"] == "access" and o["decision"] == "DENY")]
        assert capsys.readouterr().out == "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in want)
        assert len(want) > (100 if denials else 400)


def test_stamp_texts_are_the_reference_formulas() -> None:
    """The digits of a plain stamp are what _iso's and round(ts, 3)'s float arithmetic give."""
    import random

    rng = random.Random(15)
    secs = [0, 1, 9, 10**9, 1700000000, 2**31 - 1, 2**32, 10**10 - 1, 10**10, 2**53]
    secs += [rng.randrange(10**10) for _ in range(2000)]
    for sec in secs:
        for msec in [0, 1, 5, 10, 100, 120, 999, 1000, 1234, rng.randrange(1000), rng.randrange(1000)]:
            ts = sec + msec / 1000.0
            assert stamp_texts(sec, msec, ts) == (f"{round(ts * 1000) % 1000:03d}", repr(round(ts, 3))), (sec, msec)


def test_tables_stay_bounded_when_every_event_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log whose every event names another rule, path and process (a policy of one
    fsverity_digest= rule per file): each table the renderer keeps stays within its bound, and
    every line is still the reference's -- rules located in the policy and not, permissive and
    enforcing, ALLOW and DENY, a digest algorithm printed as hex (an odd byte in it)."""
    from iped.audit import render

    monkeypatch.setattr(render, "_KEPT_VERDICTS", 16)
    monkeypatch.setattr(render, "_KEPT", 8)
    located = "fd88f2b8824e197f850bf4c5109bea5cf0ee38104f710843bb72da796ba5af9e"
    records = []
    for n in range(300):
        stamp = (1700000000 + n // 50, n % 1000, n + 1)
        digest = located if n % 10 == 0 else f"{n:064x}"
        alg = audit_untrusted(b"sha\x07256").decode() if n % 13 == 0 else '"sha256"'
        action = "DENY" if n % 3 == 0 else "ALLOW"
        rule = f"op=EXECUTE fsverity_digest={alg}:{digest} action={action}"
        body = (
            f'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing={n % 2} pid={n} comm="c{n}" path="/bin/t{n}" '
            f'dev="vda1" ino={n} rule="{rule}"'
        )
        records.append(RawRecord(1420, *stamp, body))
        sc = SYSCALL.format(ok="yes", exit=0, pid=n, auid=n, comm=f'"c{n}"')
        records.append(RawRecord(1300, *stamp, sc))
        records.append(RawRecord(1327, *stamp, "proctitle=" + f"/bin/t{n}".encode().hex().upper()))
        records.append(RawRecord(1320, *stamp, ""))
    events = _group(records)
    for index in (PolicyIndex.from_file(POLICY), None):
        fast = JsonLines(index)
        for event in events:
            assert [line for _, line in fast.lines(event)] == [json_line(o) for o in event_objects(event, index)]
            stats = fast.cache_stats()
            assert all(table["size"] <= table["bound"] for table in stats.values()), stats
        stats = fast.cache_stats()
        assert stats["verdicts"]["lookups"] == 300 and stats["verdicts"]["misses"] > 250
        assert stats["processes"]["misses"] == 300


RULE_SHAPES = [
    'op=EXECUTE fsverity_digest="sha256":{h} action=ALLOW',
    'op=EXECUTE fsverity_digest="sha256":{h} action=DENY',
    "op=EXECUTE fsverity_digest=736861073235:{h} action=ALLOW",  # the algorithm printed as hex
    'op=EXECUTE fsverity_digest="it\'s":{h} action=ALLOW',  # repr's quotes turn to "
    'op=EXECUTE fsverity_digest="it\'s \\"x":{h} action=ALLOW',  # both quotes: repr escapes
    'op=EXECUTE fsverity_digest="a\\\\b":{h} action=ALLOW',  # a backslash
    'op=EXECUTE fsverity_digest="\ue000":{h} action=ALLOW',  # the mark's own character
    'op=EXECUTE fsverity_digest="\\\\ue000":{h} action=ALLOW',  # the mark's escape as text
    'op=EXECUTE fsverity_digest="sha256":{h}:{h} action=ALLOW',  # the last colon splits
    'op=EXECUTE fsverity_digest="sha256":{h}- action=ALLOW',  # not letters and digits
    'op=EXECUTE fsverity_digest="sha256":{h}',  # no action
    'DEFAULT op=EXECUTE fsverity_digest="sha256":{h} action=ALLOW',
    'op=EXECUTE fsverity_digest="sha256":{h} dmverity_roothash="sha256":{h} action=ALLOW',
    'op=EXECUTE fsverity_digest="sha256":{h} boot_verified=TRUE action=ALLOW',
    'op=EXECUTE fsverity_digest="sha256": action=ALLOW',  # empty hex
    'op=EXECUTE fsverity_digest="sha256":{h} action=ALLOW \u00e9\x01',
]  # fmt: skip


@pytest.mark.parametrize("rule", RULE_SHAPES)
@pytest.mark.parametrize("split", ["c", "python"])
def test_digest_rule_verdicts_from_templates_are_the_reference(
    rule: str, split: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A digest rule's verdict made from a template kept by the rest of the rule (the hex put
    in) is the reference's, whatever the rest holds, for a new hex and for one seen before;
    with the rule split by the C helper and by the Python one."""
    from iped.audit import render

    if split == "c" and render._digest_parts_c is None:
        pytest.skip("the _scan extension is not built (pip install builds it)")
    if split == "python":
        monkeypatch.setattr(render, "_digest_parts_c", None)
    records = []
    for n in range(6):
        stamp = (1700000000, n, n + 1)
        text = rule.replace("{h}", f"{n % 4:064x}" if n % 2 else f"{n % 4:064X}")
        body = (f'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing={n % 2} pid={n} comm="c" path="/bin/t" '
                f'dev="vda1" ino={n} rule="{text}"')  # fmt: skip
        records += [RawRecord(1420, *stamp, body), RawRecord(1320, *stamp, "")]
    assert assert_same_lines(_group(records), None) == 6


def test_c_digest_split_is_the_python_one() -> None:
    """``_scan.digest_parts`` gives what ``render._digest_parts`` gives on every plain ASCII
    rule (NotImplemented on any other, which the Python one then splits): rules put together at
    random from the pieces each of its conditions looks at."""
    import random

    from iped.audit import render

    if render._digest_parts_c is None:
        pytest.skip("the _scan extension is not built (pip install builds it)")
    pieces = ["op=EXECUTE", " ", " fsverity_digest=", "fsverity_digest=", "_digest=", " dmverity_roothash=",
              "_roothash=", '"sha256"', ":", "::", "ab", "AB09", "z", "-", "_", "action=ALLOW", "\u00e9", "\x01",
              "\ue000", "=", '"', "\t"]  # fmt: skip
    rng = random.Random(23)
    rules = [t.replace("{h}", "ab" * 32) for t in RULE_SHAPES]

    def some() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 4)))

    rules += ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12))) for _ in range(10000)]
    # the shape the helper splits, with pieces in every slot (most still split, many not)
    rules += [f"op=EXECUTE{some()} fsverity_digest={some()}:{rng.choice(['ab' * 32, 'AB09', '', some()])}"
              f"{rng.choice(['', ' ', ' action=DENY'])}{some()}" for _ in range(10000)]  # fmt: skip
    split = 0
    for rule in rules:
        got = render._digest_parts_c(rule)
        if got is NotImplemented:
            assert not rule.isascii(), rule
            continue
        assert got == render._digest_parts(rule), rule
        split += got is not None
    assert split > 500  # (the pieces make many rules the helper splits, not only refusals)
