"""What the daemon owes systemd (found by the system-image lab, tests/lab/system):

* a start whose declared active policy is rejected or refused by the kernel fails at once with
  a status line naming the errno and the file, and an exit status the unit does not restart on;
* every journal entry it writes carries a MESSAGE_ID.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from iped.daemon import log
from iped.daemon.loop import EXIT_START_REFUSED, startup_refusal

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "iped.service"


def refused_record() -> dict[str, Any]:
    step = {"kind": "load", "name": "lab_b", "path": "new_policy", "source": "/etc/iped/policies.d/lab_b.p7s",
            "description": "load lab_b 2.0.0 from /etc/iped/policies.d/lab_b.p7s"}
    return {"outcome": "failed", "failure": {"step": step, "errno": 126, "errno_name": "ENOKEY",
                                              "message": "no trusted key for the signature"}, "errors": []}


def test_kernel_refusal_names_errno_and_file() -> None:
    status = startup_refusal(refused_record(), "lab_b")
    assert status is not None
    assert "ENOKEY (126)" in status and "/etc/iped/policies.d/lab_b.p7s" in status and "'lab_b'" in status


def test_rejected_plan_names_the_file_error() -> None:
    record = {"outcome": "rejected", "failure": None,
              "errors": [{"message": "/etc/iped/policies.d/x.pol:2: EBADMSG: invalid policy"}]}
    status = startup_refusal(record, "x")
    assert status is not None and "x.pol:2: EBADMSG" in status


@pytest.mark.parametrize("outcome", ["applied", "unchanged"])
def test_no_refusal_when_the_plan_went_through(outcome: str) -> None:
    assert startup_refusal({"outcome": outcome, "failure": None, "errors": []}, "a") is None
    assert startup_refusal(None, "a") is None


def test_unit_does_not_restart_on_a_refused_start() -> None:
    prevent = re.findall(r"^RestartPreventExitStatus=(.*)$", UNIT.read_text(), re.M)
    assert prevent and str(EXIT_START_REFUSED) in prevent[0].split()


def test_every_journal_entry_has_a_message_id() -> None:
    sent: list[dict[str, str]] = []
    reporter = log.JournalReporter.__new__(log.JournalReporter)  # journald itself is not needed here
    reporter._send = lambda message, **fields: sent.append({"MESSAGE": message, **fields})
    reporter.log("warning", "cannot watch /etc/iped: EACCES")
    reporter.log("notice", "backend: KERNEL -- securityfs", "daemon_backend")
    reporter.log("info", "stopping; kernel state is left as it is", "daemon_stopping")
    reporter.plan_rejected("x.pol:1: EBADMSG")
    ids = [e.get("MESSAGE_ID") for e in sent]
    assert all(ids), sent
    assert ids[0] == log.MESSAGE_IDS["daemon_message"]
    assert len(set(ids)) == 4
    assert len(set(log.MESSAGE_IDS.values())) == len(log.MESSAGE_IDS)
