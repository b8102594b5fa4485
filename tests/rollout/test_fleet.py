"""``iped survey``/``suggest --collection``: a fleet's records as its collector keeps them.

The journals are real: systemd-journal-remote receives each host's journal export on stdin
(``--output=DIR/remote-HOST.journal -``), as it writes what journald's upload sends, and the
survey reads the files with libsystemd. One more host arrives as an auditd log file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from iped.audit.files import iter_file
from iped.cli import main
from iped.rollout.fleet import hosts_in
from tests.helpers.journal import JOURNAL_REMOTE, export
from tests.helpers.policies import policy_text
from tests.rollout.streams import DENIED_DIGEST, write_facts, write_period

#: every access allowed but the one fs-verity digest the site denies (/opt/app/evil)
POLICY = policy_text("site", "1.0.0", f"op=EXECUTE fsverity_digest=sha256:{DENIED_DIGEST} action=DENY")


def receive(collection: Path, host: str, log: Path) -> Path:
    """systemd-journal-remote writing one host's journal file from its export on stdin."""
    assert JOURNAL_REMOTE is not None
    records = [r for r in iter_file(log) if r.body]
    out = collection / f"remote-{host}.journal"
    subprocess.run([str(JOURNAL_REMOTE), f"--output={out}", "-"], input=export(records, 1).encode(),
                   check=True, capture_output=True, timeout=60)
    return out


def without_evil(log: Path, dest: Path) -> Path:
    """The same period on a host that never ran /opt/app/evil (its events' records dropped)."""
    lines = log.read_text().splitlines()
    evil = {line.split("msg=audit(")[1].split(")")[0] for line in lines if "/opt/app/evil" in line
            or 'name="evil"' in line}
    dest.write_text("\n".join(line for line in lines
                              if not any(f"msg=audit({stamp})" in line for stamp in evil)) + "\n")
    return dest


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    period = write_period(tmp_path)
    clean = without_evil(period.log, tmp_path / "clean.log")
    assert clean.read_text() != period.log.read_text()
    coll = tmp_path / "collector"
    coll.mkdir()
    receive(coll, "web1", period.log)
    receive(coll, "web2", clean)
    (coll / "db1.log").write_text(clean.read_text())  # auditd's remote logging: one log per host
    return coll


def test_hosts_of_a_collection(collection: Path) -> None:
    hosts = {h.host: h for h in hosts_in(collection)}
    assert sorted(hosts) == ["db1", "web1", "web2"]
    assert hosts["web1"].journals and not hosts["web1"].logs and hosts["db1"].logs


def test_survey_answers_per_host_and_for_the_fleet(collection: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "site.pol"
    policy.write_bytes(POLICY)
    facts = str(write_facts(tmp_path))
    args = ["survey", "--policy", str(policy), "--collection", str(collection), "--facts", facts]
    assert main([*args, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "no-go" and doc["hosts"] == 3
    assert doc["by_verdict"] == {"go": ["db1", "web2"], "no-go": ["web1"], "no-data": []}
    assert [(p["program"], p["hosts"]) for p in doc["programs"]] == [("/opt/app/evil", ["web1"])]
    assert doc["per_host"]["web1"]["would_deny"] == {"records": 1, "distinct": 1}
    assert doc["per_host"]["web2"]["records"] == doc["per_host"]["db1"]["records"] > 10
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "3 host(s): 2 go, 1 no-go" in text and "NO-GO web1" in text and "NO-GO for the wave" in text


def test_one_suggested_policy_for_the_wave(collection: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """One policy from every host's accesses: it allows what ran on any host (web1's fs-verity
    program too); what no property can allow is flagged (exit 1), as for one host."""
    facts = str(write_facts(tmp_path))
    assert main(["suggest", "--collection", str(collection), "--facts", facts, "--name", "site"]) == 1
    out = capsys.readouterr()
    suggested = tmp_path / "wave.pol"
    suggested.write_text(out.out)
    assert DENIED_DIGEST in suggested.read_text().lower()  # only web1 ran it
    assert "FLAGGED /home/u/script" in out.err and "unexpected" in out.err
    assert main(["survey", "--policy", str(suggested), "--collection", str(collection), "--facts", facts,
                 "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    flagged = {"/home/u/script", "<no file>"}
    assert {p["program"] for p in doc["programs"]} == flagged  # nothing else denied on any host
    assert set(doc["by_verdict"]["no-go"]) == {"db1", "web1", "web2"}
