"""Out-of-range numbers in audit records: the record is skipped (netlink counts it as
malformed), never fatal, and every event after it is still read -- by the Python and the C
scanner alike, and by `iped audit` / `iped explain` end to end."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iped.audit import bulk
from iped.audit.files import iter_file_events, iter_log_text
from iped.audit.group import Event, Grouper
from iped.audit.records import RecordError, parse_policy_load, parse_stamped
from iped.audit.render import event_objects, human_line
from tests.helpers.daemon import iped

FUZZ_EXAMPLES = 3000 if os.environ.get("IPED_FUZZ_LONG") else 100

SYSCALL = ("arch=c000003e syscall=59 success=no exit=-13 a0=1 a1=2 a2=3 a3=4 items=1 ppid=1 pid={pid} "
           "auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=1 comm=\"x\" "
           "exe=\"/x\"")


def access_event(stamp: str, path: str) -> list[str]:
    """The five lines auditd writes for one IPE denial (the bulk scanners' whole-event shape)."""
    return [
        f'type=IPE_ACCESS msg=audit({stamp}): ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=7 '
        f'comm="x" path="{path}" dev="sda" ino=1 rule="DEFAULT action=DENY"',
        f"type=SYSCALL msg=audit({stamp}): " + SYSCALL.format(pid=7),
        f"type=PROCTITLE msg=audit({stamp}): 78",
        f"type=EOE msg=audit({stamp}): ",
    ]


BAD_LOG = [
    *access_event("1700000000.000:1", "/before"),
    "type=1422 msg=audit(1700000000.100:2): policy_name=\"p\" policy_version=0.0.1 policy_digest=sha256:00 "
    "auid=0 ses=1 lsm=ipe res=0 errno=99999999999999999999",
    *access_event("100000000000000000.000:3", "/eoverflow"),
    *access_event("9" * 300 + ".000:4", "/300-digits"),
    *access_event("1700000000.0000000001:5", "/msec"),
    *access_event("1700000000.200:" + "9" * 40, "/serial"),
    *access_event("1700000000.300:6", "/after"),
]


@pytest.fixture(params=["python", "c"])
def scanner(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "c" and not bulk.C_SCANNER_BUILT:
        pytest.skip("C scanner not built")
    saved = bulk.use_c_scanner
    bulk.use_c_scanner = request.param == "c"
    yield request.param
    bulk.use_c_scanner = saved


def rendered(path: Path) -> list[dict[str, object]]:
    grouper = Grouper()
    events: list[Event] = [*iter_file_events(path, grouper), *grouper.flush()]
    objs = [o for e in events for o in event_objects(e)]
    for o in objs:
        human_line(o)
    return objs


def test_out_of_range_records_are_skipped_and_the_rest_is_read(tmp_path: Path, scanner: str) -> None:
    log = tmp_path / "audit.log"
    log.write_text("\n".join(BAD_LOG) + "\n")
    objs = rendered(log)
    paths = [o.get("path") for o in objs if o.get("kind") == "access"]
    assert paths == ["/before", "/after"]
    load = [o for o in objs if o.get("kind") == "policy_load"]
    assert len(load) == 1 and load[0]["errno"] is None  # 1e20 is no errno: left out, record kept


def test_cli_audit_and_explain_survive_out_of_range_records(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("\n".join(BAD_LOG) + "\n")
    audit = iped("audit", "--source", str(log), "--json")
    assert audit.returncode == 0, audit.stderr
    paths = [json.loads(line).get("path") for line in audit.stdout.splitlines()]
    assert "/before" in paths and "/after" in paths
    explain = iped("explain", "--file", str(log))
    assert explain.returncode == 0, explain.stderr
    assert "/after" in explain.stdout


def test_netlink_stamp_out_of_range_is_a_record_error() -> None:
    for stamp in ("100000000000000000.000:1", "1.0000:1", "1.000:" + "1" * 21, "9" * 300 + ".0:1"):
        with pytest.raises(RecordError, match="out of range"):
            parse_stamped(1420, f"audit({stamp}): ipe_op=EXECUTE")
    assert parse_stamped(1420, "audit(99999999999.999:18446744073709551615): x").sec == 99999999999


def test_errno_out_of_range_is_no_errno() -> None:
    body = "policy_name=\"p\" policy_version=0.0.1 policy_digest=sha256:00 auid=0 ses=1 lsm=ipe res=0 errno={}"
    for value, want in (("-74", -74), ("99999999999999999999", None), ("4096", None), ("9" * 300, None)):
        rec = parse_policy_load(body.format(value))
        assert rec is not None and rec.errno == want, value


_number = st.one_of(st.integers(0, 10**25).map(str), st.integers(1, 400).map(lambda n: "9" * n),
                    st.sampled_from(["-1", "?", "", "0x10", "1e5", "٣"]))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.lists(st.tuples(_number, _number, _number, _number,
                          st.sampled_from(["IPE_ACCESS", "1422", "1404", "1421", "SYSCALL", "EOE", "PROCTITLE"])),
                min_size=1, max_size=6))
def test_fuzzed_numbers_never_abort_either_scanner(tmp_path_factory: pytest.TempPathFactory,
                                                   records: list[tuple[str, str, str, str, str]]) -> None:
    lines = []
    for sec, msec, serial, num, rtype in records:
        stamp = f"{sec}.{msec}:{serial}"
        lines += access_event(stamp, "/f") if rtype == "IPE_ACCESS" else [
            f"type={rtype} msg=audit({stamp}): policy_name=\"p\" policy_version={num}.0.1 res={num} errno={num} "
            f"old_enforcing={num} enforcing={num} pid={num} ino={num} " + SYSCALL.format(pid=num)]
    log = tmp_path_factory.mktemp("fuzz") / "audit.log"
    log.write_text("\n".join(lines) + "\n")
    results = []
    for c in ([False, True] if bulk.C_SCANNER_BUILT else [False]):
        saved, bulk.use_c_scanner = bulk.use_c_scanner, c
        try:
            results.append(rendered(log))
        finally:
            bulk.use_c_scanner = saved
    assert all(r == results[0] for r in results)  # both scanners, same events
    list(iter_log_text("\n".join(lines)))
