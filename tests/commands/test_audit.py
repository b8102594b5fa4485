"""``iped audit`` and ``iped explain`` through the real CLI entry point (iped.cli.main)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from iped.commands.audit import parse_since
from tests.helpers.paths import AUDIT_GOLDEN

GOLDEN = AUDIT_GOLDEN
LOG = str(GOLDEN / "doc-examples.log")
POLICY = str(GOLDEN / "policy.pol")


def cli(argv: list[str]) -> int:
    from iped.cli import main

    return main(argv)


def test_audit_file_json_denials(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["audit", "--source", LOG, "--json", "--denials", "--policy", POLICY]) == 0
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["serial"] for o in objs] == [61, 64, 71, 72, 74]
    assert all(o["schema_version"] == 1 and o["decision"] == "DENY" for o in objs)
    assert [o["policy"]["line"] if o["policy"] else None for o in objs] == [3, 3, 4, 3, None]
    assert objs[0]["process"]["exe"] == "/usr/lib/ld-linux-x86-64.so.2"


def test_audit_file_human(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["audit", "--source", LOG, "--policy", POLICY, "--since", "1700000000"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2023-11-14 22:13:20.001 ALLOWED    EXECUTE/BPRM_CHECK /root/vol/bin/hello (pid 297)")
    assert out[0].endswith(f"[{POLICY}:6]")
    assert any("LOAD-FAIL  policy load/update failed: ENOKEY" in line for line in out)


def test_audit_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["audit", "--source", "/nonexistent/audit.log"]) == 1
    assert "No such file" in capsys.readouterr().err


def test_explain_pasted_record(capsys: pytest.CaptureFixture[str]) -> None:
    rec = 'type=1420 msg=audit(1.000:5): ipe_op=KMODULE ipe_hook=KERNEL_LOAD enforcing=1 pid=8 comm="insmod" path=? dev=? ino=? rule="DEFAULT op=KMODULE action=DENY"'  # noqa: E501
    assert cli(["explain", "--policy", POLICY, rec]) == 0
    out = capsys.readouterr().out
    assert "KMODULE of anonymous memory/no file via KERNEL_LOAD blocked" in out and f"{POLICY}:4" in out


def test_explain_errno_body(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["explain", "policy_name=? policy_version=? policy_digest=? auid=0 ses=1 lsm=ipe res=0 errno=-116"]) == 0
    assert "ESTALE" in capsys.readouterr().out


def test_explain_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["explain", "hello world"]) == 1
    assert "no IPE audit record" in capsys.readouterr().err


def test_parse_since() -> None:
    assert parse_since("-10m", now=1000.0) == 400.0
    assert parse_since("2h ago", now=10000.0) == 2800.0
    assert parse_since("1700000000") == 1700000000.0
    assert parse_since("2023-11-14T22:13:20+00:00") == 1700000000.0
    with pytest.raises(ValueError):
        parse_since("soon")


def test_audit_file_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``iped audit --source LOG | head -1``: the reader going away is not an error about LOG."""
    import subprocess
    import sys

    # distinct events (each copy's serials shifted): far more output than a pipe buffer holds, so
    # iped is still writing when the reader goes away (copies of one stamp would be dropped as
    # duplicates, and the little that is left could fit the pipe before the reader closes it)
    text = Path(LOG).read_text()

    def copy(k: int) -> str:
        return re.sub(r"audit\((\d+\.\d+):(\d+)\)", lambda m: f"audit({m[1]}:{int(m[2]) + 1_000_000 * k})", text)

    log = tmp_path / "audit.log"
    log.write_text("".join(copy(k) for k in range(1, 2001)))
    proc = subprocess.Popen([sys.executable, "-m", "iped", "audit", "--source", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert b" EXECUTE/" in proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert err == "", err


@pytest.mark.parametrize("cut", ['rule="DEFAULT op=EXECUTE act', "", 'rule="op=EXECUTE'])


def test_explain_says_a_truncated_denial_is_incomplete(cut: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: a 1420 record cut inside (or before) its rule= was explained as "allowed"."""
    rec = ('type=1420 msg=audit(1.000:5): ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=8 comm="sh" '
           f'path="/x" dev="vda" ino=3 {cut}').rstrip()  # fmt: skip
    assert cli(["explain", "--policy", POLICY, rec]) == 1
    captured = capsys.readouterr()
    assert "incomplete record" in captured.out and "the decision is unknown" in captured.out
    assert "allowed" not in captured.out and "blocked" not in captured.out
    assert "incomplete" in captured.err and captured.err.count("\n") == 1
    assert cli(["explain", "--json", "--policy", POLICY, rec]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert obj["decision"] is None and obj["blocked"] is False and "incomplete record" in obj["explanation"]
    assert " INCOMPLETE " in _human_line_of(rec)  # iped audit's line, never ALLOWED


def _human_line_of(record: str) -> str:
    from iped.audit.group import Grouper
    from iped.audit.records import parse_log_line
    from iped.audit.render import event_objects, human_line

    grouper = Grouper(2.0)
    events = [*grouper.feed(parse_log_line(record), 1.0), *grouper.flush()]
    (obj,) = [o for e in events for o in event_objects(e)]
    return human_line(obj)


def test_audit_of_a_file_that_holds_no_audit_record_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["audit", "--source", "/bin/true"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("iped: error: /bin/true: no audit record in it (not an auditd log, 'ausearch --raw' "
                            "output, kmsg audit lines or a 'journalctl -o export' stream)\n")


def test_audit_that_prints_nothing_says_what_it_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "audit.log"
    empty.write_text("")
    assert cli(["audit", "--source", str(empty)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"iped: audit: {empty}: 0 records read, 0 IPE events, none matched\n"
    assert cli(["audit", "--source", LOG, "--since", "4102444800", "--denials-only"]) == 0  # the year 2100
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.fullmatch(rf"iped: audit: {re.escape(LOG)}: \d+ records read, 14 IPE events, none matched "
                        r"\(--since 4102444800, --denials-only\)\n", captured.err), captured.err


def test_audit_of_the_journal_that_prints_nothing_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("systemd.journal")
    assert cli(["audit", "--source", "journal", "--since", "4102444800"]) == 0  # nothing there yet
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.search(r"^iped: audit: journal: \d+ records read, \d+ IPE events, none matched \(--since 4102444800\)$",
                     captured.err, re.M), captured.err
