"""``iped survey``: observed accesses re-evaluated against a policy, grouped, with a gating exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iped.cli import main
from iped.rollout.facts import FactsResolver, load_facts
from iped.rollout.observe import observe
from iped.rollout.survey import survey
from tests.helpers.policies import policy_text
from tests.rollout.streams import ALLOW_ALL, BASE, DENIED_DIGEST, write_facts, write_period


def test_observe_folds_records_into_distinct_accesses(tmp_path: Path) -> None:
    period = write_period(tmp_path)
    obs = observe(str(period.log))
    assert obs.records == period.records == 23
    ls = obs.rows[("EXECUTE", "BPRM_CHECK", "/usr/bin/ls", "dm-0", 101)]
    assert (ls.count, ls.recorded["DENY"], ls.enforcing[False], ls.by) == (5, 5, 5, ["/usr/bin/bash"])
    assert ls.last - ls.first == 4 and ls.shadow == 0
    assert ("EXECUTE", "MMAP", None, None, None) in obs.rows


def test_survey_groups_would_be_denials_by_program_and_rule(tmp_path: Path) -> None:
    period = write_period(tmp_path)
    obs = observe(str(period.log))
    report = survey(BASE, "base.pol", obs, load_facts(str(write_facts(tmp_path))), obs.records)
    assert report.breaks and not report.unknown
    by_program = {g["program"]: g["count"] for g in report.by_program()}
    assert by_program == {
        "/usr/bin/cat": 6, "/usr/bin/ls": 5, "/home/u/script": 4, "<no file>": 3, "/init/bin/busybox": 2,
        "/opt/app/run": 1, "/opt/app/evil": 1, "/usr/lib/modules/fs.ko": 1,
    }  # fmt: skip
    by_rule = {(g["rule"], g["line"]): (g["count"], len(g["programs"])) for g in report.by_rule()}
    assert by_rule == {
        ("DEFAULT op=EXECUTE action=DENY", 4): (20, 6),
        ("DEFAULT op=KMODULE action=DENY", 5): (2, 2),
        (f"op=EXECUTE fsverity_digest=sha256:{DENIED_DIGEST.upper()} action=DENY", 6): (1, 1),
    }


def test_survey_go_when_the_policy_allows_everything_that_ran(tmp_path: Path) -> None:
    period = write_period(tmp_path)
    obs = observe(str(period.log))
    report = survey(ALLOW_ALL, "all.pol", obs, load_facts(str(write_facts(tmp_path))), obs.records)
    assert not report.breaks and report.lines()[-1].startswith("GO:")


#: a policy whose decision for EXECUTE depends on the file's properties (KMODULE's does not)
BY_PROPERTY = policy_text("site", "1.0.0", "DEFAULT op=EXECUTE action=DENY",
                          "op=EXECUTE boot_verified=TRUE action=ALLOW")


def test_a_file_that_cannot_be_resolved_is_unknown_and_counts_against_go(tmp_path: Path) -> None:
    period = write_period(tmp_path)
    obs = observe(str(period.log))
    report = survey(BY_PROPERTY, "prop.pol", obs, FactsResolver({}), obs.records)
    unknown = {v.observation.program for v in report.unknown}
    assert "/usr/bin/ls" in unknown and "<no file>" not in unknown  # no file: evaluated as the kernel does
    assert "/usr/lib/modules/fs.ko" not in unknown  # KMODULE: no rule, the global DEFAULT allows any file
    assert report.breaks


def test_an_allow_everything_policy_is_go_whatever_the_files_became(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: survey said NO-GO ("UNKNOWN: 3 ...", exit 1) for DEFAULT action=ALLOW when the
    recorded files had changed since: nothing can be denied by that policy."""
    period = write_period(tmp_path)
    obs = observe(str(period.log))
    report = survey(ALLOW_ALL, "all.pol", obs, FactsResolver({}), obs.records)
    assert report.unknown == [] and report.verdict == "go"
    allow = tmp_path / "all.pol"
    allow.write_bytes(ALLOW_ALL)
    (tmp_path / "nothing.json").write_text("{}")  # no recorded file resolves any more
    assert main(["survey", "--policy", str(allow), "--source", str(period.log),
                 "--facts", str(tmp_path / "nothing.json")]) == 0  # fmt: skip
    assert "GO:" in capsys.readouterr().out


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    period = write_period(tmp_path)
    facts = str(write_facts(tmp_path))
    base, allow = tmp_path / "base.pol", tmp_path / "all.pol"
    base.write_bytes(BASE)
    allow.write_bytes(ALLOW_ALL)
    common = ["--source", str(period.log), "--facts", facts]
    assert main(["survey", "--policy", str(base), *common, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "no-go" and doc["would_deny"] == {"records": 23, "distinct": 10}
    assert doc["policy"] == {"origin": str(base), "name": "site", "version": "1.0.0"}
    assert main(["survey", "--policy", str(allow), *common]) == 0
    assert "GO:" in capsys.readouterr().out


def test_cli_uses_the_declared_active_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    period = write_period(tmp_path)
    policies = tmp_path / "policies.d"
    policies.mkdir()
    (policies / "site.pol").write_bytes(BASE)
    (policies / "other.pol").write_bytes(ALLOW_ALL.replace(b"=site", b"=other"))
    config = tmp_path / "iped.toml"
    config.write_text(f'[policies]\ndir = "{policies}"\nactive = "site"\n')
    args = ["survey", "--config", str(config), "--source", str(period.log), "--facts", str(write_facts(tmp_path))]
    assert main(args) == 1
    assert f"({policies / 'site.pol'})" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["survey", "--config", "/nonexistent/iped.toml"], "cannot read the configuration"),
        (["survey", "--policy", "/nonexistent.pol"], "/nonexistent.pol: No such file"),
        (["survey", "--policy", "{bad}", "--source", "{log}"], "line 2: EBADMSG"),
        (["survey", "--policy", "{good}", "--since", "never"], "--since: cannot read time"),
        (["survey", "--policy", "{good}", "--facts", "{bad}", "--source", "{log}"], "not JSON"),
    ],
)
def test_cli_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    period = write_period(tmp_path)
    bad, good = tmp_path / "bad.pol", tmp_path / "good.pol"
    bad.write_bytes(b"policy_name=x policy_version=0.0.1\nop=EXECUTE frobnicate action=ALLOW\n")
    good.write_bytes(ALLOW_ALL)
    subs = {"{bad}": str(bad), "{good}": str(good), "{log}": str(period.log)}
    assert main([subs.get(a, a) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_no_records_is_no_data_not_go(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty, allow = tmp_path / "empty.log", tmp_path / "all.pol"
    empty.write_text("")
    allow.write_bytes(ALLOW_ALL)
    assert main(["survey", "--policy", str(allow), "--source", str(empty), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "no-data"


@pytest.mark.parametrize("verb", ["survey", "shadow"])
def test_configuration_errors_are_one_line_each(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: survey and shadow printed ``cannot read the configuration X:`` and then the
    problems on lines of their own; every error line must stand alone (README: one line each)."""
    broken = tmp_path / "iped.toml"
    broken.write_text('[policies]\nenforce = "yes"\nactive = 3\n')
    for config, problems in ((tmp_path / "missing.toml", 1), (broken, 2)):
        assert main([verb, "--config", str(config)]) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == problems, lines
        for line in lines:
            assert line.startswith("iped: error: cannot read the configuration: ") and f"{config}:" in line, line
