"""Text output of ``iped audit`` / ``iped explain``: comms and paths the kernel printed as hex
(they held bytes it would not print raw) come out escaped, never as raw terminal input."""

from __future__ import annotations

from pathlib import Path

import pytest

from iped.cli import main as cli
from tests.helpers.paths import AUDIT_GOLDEN

POLICY = str(AUDIT_GOLDEN / "policy.pol")

#: "x<ESC>[2Jy" and "/tmp/<ESC>]0;pwned<BEL>": the kernel prints such untrusted strings as hex
COMM = b"x\x1b[2Jy".hex().upper()
PATH = b"/tmp/\x1b]0;pwned\x07".hex().upper()
RECORD = (f"type=1420 msg=audit(1700000000.001:7): ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid=9 "
          f'comm={COMM} path={PATH} dev="vda1" ino=12 rule="DEFAULT action=DENY"')


def _no_raw_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, text


def test_audit_text_escapes_comm_and_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "audit.log"
    log.write_text(RECORD + "\ntype=EOE msg=audit(1700000000.001:7): \n")
    assert cli(["audit", "--source", str(log), "--policy", POLICY]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "x\\x1b[2Jy (pid 9) /tmp/\\x1b]0;pwned\\x07 " in out


def test_explain_text_escapes_comm_and_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["explain", "--policy", POLICY, RECORD]) == 0
    out = capsys.readouterr().out
    _no_raw_controls(out)
    assert "/tmp/\\x1b]0;pwned\\x07" in out
