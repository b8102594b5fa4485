"""Which lines are taken as the kernel's audit records: only forms whose writer is proven to be
the kernel or auditd. A syslog file holds whatever any local user logs under the tag "kernel"
(``logger -t kernel 'type=1420 ...'``), so its lines are counted and said to be unproven, never
read as records by ``iped audit``, ``survey`` or ``suggest``; ``explain`` explains them but
marks them."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from iped.audit.records import RawRecord
from iped.cli import main
from tests.rollout.streams import BASE, write_facts

#: what an attacker makes the kernel appear to say: an exec of /opt/app/evil under enforcement
BODY = ('ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=0 pid=4242 comm="evil" path="/opt/app/evil" dev="vda2" '
        'ino=8 rule="DEFAULT op=EXECUTE action=DENY"')
SYSCALL = ("arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 a2=3 a3=4 items=2 ppid=1 pid=4242 auid=0 uid=0 "
           'gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=1 comm="evil" exe="/opt/app/evil"')


def syslog_file(path: Path) -> Path:
    """/var/log/syslog as rsyslog writes it (RFC 3339 stamps, then host and tag as the client gave
    them): the kernel's real kmsg line and a user's ``logger -t kernel`` look the same."""
    stamp = "2026-12-04T16:50:00.123456+00:00 host kernel:"
    path.write_text(
        f"{stamp} [ 5794.4] audit: type=1420 audit(1764867000.001:901): {BODY}\n"
        f"{stamp} type=1300 audit(1764867000.001:901): {SYSCALL}\n"
        f"{stamp} type=1320 audit(1764867000.001:901): \n"
        "2026-12-04T16:50:01.000000+00:00 host systemd[1]: Started something.\n"
    )
    return path


def test_audit_does_not_read_syslog_lines_as_kernel_records(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    log = syslog_file(tmp_path / "syslog")
    assert main(["audit", "--source", str(log), "--json"]) == 0
    captured = capsys.readouterr()
    objs = [json.loads(line) for line in captured.out.splitlines()]
    assert [o["kind"] for o in objs] == ["unproven"]
    assert (objs[0]["source"], objs[0]["lines"]) == (str(log), 3)
    assert f"iped: {log}: 3 line(s) that look like audit records were not read" in captured.err


def test_survey_and_suggest_are_not_swayed_by_syslog_lines(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: spoofed records turned survey NO-GO. Now there is no data, and it says why."""
    log = syslog_file(tmp_path / "syslog")
    base = tmp_path / "base.pol"
    base.write_bytes(BASE)
    common = ["--source", str(log), "--facts", str(write_facts(tmp_path)), "--json"]
    assert main(["survey", "--policy", str(base), *common]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert (doc["verdict"], doc["records"], doc["unproven_lines"]) == ("no-data", 0, 3)
    assert "were not read: nothing proves the kernel wrote them" in captured.err
    assert main(["suggest", "--base", str(base), *common]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["unproven_lines"] == 3 and "/opt/app/evil" not in json.dumps(doc)


def test_explain_marks_records_whose_writer_is_unproven(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = syslog_file(tmp_path / "syslog")
    assert main(["explain", "--source", str(log), "--json"]) == 0
    captured = capsys.readouterr()
    objs = [json.loads(line) for line in captured.out.splitlines()]
    assert [(o["kind"], o["provenance"]) for o in objs] == [("access", "unproven")]
    assert "1 of 1 record(s) explained are in a form that does not prove the kernel wrote them" in captured.err
    auditd = tmp_path / "audit.log"
    auditd.write_text(f"type=1420 msg=audit(1764867000.001:901): {BODY}\n")
    assert main(["explain", "--source", str(auditd), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["provenance"] == "kernel" and "does not prove" not in captured.err


def test_kmsg_lines_count_only_with_the_kernels_facility(tmp_path: Path) -> None:
    """What the real kernel does with a line userspace writes to /dev/kmsg: it gets LOG_USER,
    whatever ``<N>`` the writer claims. /dev/kmsg and ``dmesg -x`` show the facility and are
    read only when it is the kernel's (0); ``dmesg -r`` shows the level alone (``<5>``, as for
    the kernel's own lines) and plain ``dmesg`` nothing: both unproven."""
    from iped.audit.files import Unproven, iter_file

    marker = f"{os.getpid()}{os.urandom(3).hex()}"
    serial = int(marker, 16) % 10**9
    line = f"audit: type=1420 audit(1764867000.001:{serial}): {BODY} marker={marker}"
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(f"<5>{line}\n")  # claims facility 0 (kernel), level 5

    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    records = []
    try:
        while True:
            try:
                records.append(os.read(fd, 8192).decode("utf-8", "backslashreplace"))
            except BlockingIOError:
                break
    finally:
        os.close(fd)
    injected = [r.rstrip("\n") for r in records if marker in r]
    assert len(injected) == 1 and injected[0].startswith("13,"), injected  # LOG_USER << 3 | 5
    outputs = {"kmsg": injected[0]}
    for flag in ("-x", "-r", ""):
        out = subprocess.run(["dmesg", *([flag] if flag else [])], capture_output=True, text=True, check=True,
                             timeout=120).stdout
        outputs[f"dmesg {flag}"] = next(ln for ln in out.splitlines() if marker in ln)
    assert outputs["dmesg -x"].startswith("user  :notice:") and outputs["dmesg -r"].startswith("<5>")
    for what, text in outputs.items():
        path = tmp_path / what.replace(" ", "_")
        path.write_text(text + "\n")
        unproven = Unproven()
        assert list(iter_file(path, unproven)) == [], what
        assert unproven.lines == 1, what

    # the same line with the facility the kernel gives its own messages is read
    own = tmp_path / "own"
    own.write_text("5," + injected[0].split(",", 1)[1] + "\n")
    assert [r.type for r in iter_file(own)] == [1420]
    own.write_text(outputs["dmesg -x"].replace("user  :", "kern  :", 1) + "\n")
    assert [r.serial for r in iter_file(own)] == [serial]


def _entry(fields: dict[str, bytes]) -> bytes:
    out = b""
    for k, v in fields.items():
        out += k.encode() + b"\n" + struct.pack("<Q", len(v)) + v + b"\n"
    return out + b"\n"


def test_journal_export_reads_the_audit_transport_and_the_kernels_facility_only() -> None:
    from iped.audit.files import Unproven, iter_export

    message = b"audit: type=1420 audit(1764867000.001:7): " + BODY.encode()
    entries = [
        {"_TRANSPORT": b"kernel", "SYSLOG_FACILITY": b"0", "MESSAGE": message},  # the kernel's printk
        {"_TRANSPORT": b"kernel", "SYSLOG_FACILITY": b"1", "MESSAGE": message},  # written to /dev/kmsg
        {"_TRANSPORT": b"syslog", "SYSLOG_IDENTIFIER": b"kernel", "MESSAGE": message[7:]},  # logger -t kernel
        {"_TRANSPORT": b"stdout", "MESSAGE": message},
    ]
    unproven = Unproven()
    data = b"".join(_entry({"__CURSOR": f"s=1;i={n}".encode(), **e}) for n, e in enumerate(entries))
    assert list(iter_export(io.BytesIO(data), unproven)) == [RawRecord(1420, 1764867000, 1, 7, BODY)]
    assert unproven.lines == 3
