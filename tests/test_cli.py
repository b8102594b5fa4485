"""The CLI framework: verb table, exit codes from one place, one-line errors, lazy verbs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iped import __version__
from iped.cli import Verb, build_parser, load_verb, main
from iped.commands import CliError, ExitCode
from tests.helpers.policies import policy_text


def run_iped(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m iped ARGS`` in a real process."""
    return subprocess.run([sys.executable, "-m", "iped", *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_every_verb_has_help_and_a_module_name() -> None:
    assert {v.value for v in Verb} == {
        "validate",
        "sign",
        "daemon",
        "reload",
        "status",
        "plan",
        "apply",
        "rollback",
        "audit",
        "explain",
        "survey",
        "suggest",
        "shadow",
        "check-config",
        "boot-check",
    }
    for verb in Verb:
        assert verb.help and verb.module == f"iped.commands.{verb.value.replace('-', '_')}"
    help_text = build_parser().format_help()
    for verb in Verb:
        assert verb.value in help_text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out.strip() == f"iped {__version__}"


def test_no_verb_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("iped: error: ")


def test_unknown_verb_and_option_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "invalid choice" in err and "did you mean" not in err
    assert main(["validate", "--no-such-option", "x"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-such-option" in err


def test_mistyped_verb_or_choice_names_the_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stauts"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("iped: error: argument VERB: invalid choice: 'stauts'; did you mean 'status'? (choose from ")
    assert main(["validate", "--format", "tetx", "x.pol"]) == ExitCode.USAGE
    assert "invalid choice: 'tetx'; did you mean 'text'?" in capsys.readouterr().err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == ExitCode.OK
    assert "validate" in capsys.readouterr().out
    assert main(["validate", "--help"]) == ExitCode.OK
    assert "--trust" in capsys.readouterr().out


def test_missing_verb_module_fails_alone_with_clear_message(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A verb whose module is absent is a one-line error naming the module; others keep working.
    # ``None`` in sys.modules is the import system's own "this module is not there".
    monkeypatch.setitem(sys.modules, Verb.survey.module, None)
    with pytest.raises(CliError, match=r"^'survey' is not available in this build \(module iped.commands.survey "
                                       r"is missing\)$"):
        load_verb(Verb.survey)
    assert main(["survey", "--policy", "x.pol"]) == ExitCode.FAILED
    assert capsys.readouterr().err == ("iped: error: 'survey' is not available in this build "
                                       "(module iped.commands.survey is missing)\n")
    policy = tmp_path / "ok.pol"
    policy.write_bytes(policy_text("ok"))
    assert main(["validate", str(policy)]) == ExitCode.OK


def test_verb_module_without_run_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    stub = types.ModuleType(Verb.survey.module)
    stub.add_arguments = lambda parser: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, Verb.survey.module, stub)
    with pytest.raises(CliError, match=r"^'survey' cannot be loaded: iped.commands.survey has no run\(\)$"):
        load_verb(Verb.survey)


def test_subprocess_exit_codes_and_one_line_stderr(tmp_path: object) -> None:
    usage = run_iped()
    assert usage.returncode == 2
    assert usage.stderr.count("\n") == 1 and usage.stderr.startswith("iped: error: ")
    version = run_iped("--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"iped {__version__}")
    missing = run_iped("validate", "/nonexistent/policy.pol")
    assert missing.returncode == 1
    assert missing.stderr == "/nonexistent/policy.pol: ENOENT: No such file or directory\n"
    assert "Traceback" not in missing.stderr


def test_debug_shows_traceback_otherwise_never() -> None:
    plain = run_iped("validate", "--trust", "/nonexistent/ca.crt", "x")
    assert plain.returncode == 1
    assert plain.stderr == "iped: error: /nonexistent/ca.crt: ENOENT: No such file or directory\n"
    debug = run_iped("--debug", "validate", "--trust", "/nonexistent/ca.crt", "x")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and debug.stderr.endswith(plain.stderr)


def test_interrupt_is_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A real SIGINT while ``validate -`` blocks reading a real pipe that never gets data."""
    import io
    import os
    import signal
    import threading

    read_fd, write_fd = os.pipe()
    try:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.FileIO(read_fd, "r"))))
        timer = threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        timer.start()
        assert main(["validate", "-"]) == ExitCode.INTERRUPTED
        timer.join()
    finally:
        os.close(write_fd)
    assert capsys.readouterr().err == "iped: error: interrupted\n"


def test_explain_reads_records_with_source_like_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one name for one idea: `iped audit --source FILE` and `iped explain --source FILE`
    log = tmp_path / "audit.log"
    log.write_text("type=1422 msg=audit(5.006:7): policy_name=? policy_version=? policy_digest=? auid=0 ses=1 "
                   "lsm=ipe res=0 errno=-116\n")
    assert main(["explain", "--source", str(log)]) == 0
    by_source = capsys.readouterr().out
    assert "ESTALE" in by_source
    assert main(["explain", "--file", str(log)]) == 0  # the old name still works
    assert capsys.readouterr().out == by_source


def test_every_outcome_has_its_exit_code() -> None:
    """The README's exit-code table, from the one Outcome vocabulary: nothing falls to 'failed' unnoticed."""
    from iped.commands import OUTCOME_EXIT, outcome_exit
    from iped.outcome import Outcome

    assert set(OUTCOME_EXIT) == set(Outcome)
    assert [outcome_exit(str(o)) for o in Outcome] == [ExitCode.OK, ExitCode.UNCHANGED, ExitCode.FAILED,
                                                       ExitCode.APPLY_FAILED, ExitCode.OK, ExitCode.OK]
    assert outcome_exit("something new") == ExitCode.FAILED


@pytest.mark.parametrize("verb", ["audit", "survey", "suggest"])
def test_since_takes_a_relative_time_as_documented(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--since -7d`` as README.md and docs/ write it (not only ``--since=-7d``): the value is a
    time, read as one, and it filters (every record of the log is older than a day)."""
    from tests.rollout.streams import ALLOW_ALL, write_facts, write_period

    log = str(write_period(tmp_path, start=1_700_000_000).log)
    policy = tmp_path / "all.pol"
    policy.write_bytes(ALLOW_ALL)
    extra = {"audit": ["--json"], "survey": ["--policy", str(policy), "--json"],
             "suggest": ["--policy", str(policy), "--json"]}[verb]  # fmt: skip
    facts = [] if verb == "audit" else ["--facts", str(write_facts(tmp_path))]
    seen = []
    for since in ("-100000d", "-2h", "-10m", "-1d"):
        code = main([verb, "--source", log, "--since", since, *facts, *extra])
        out = capsys.readouterr().out
        assert code != ExitCode.USAGE, (since, capsys.readouterr().err)
        if verb == "audit":
            seen.append(len(out.splitlines()))
        else:
            doc = json.loads(out)
            seen.append(doc["records"] if verb == "survey" else doc["verification"]["records"])
    assert seen[0] == 23 and seen[1:] == [0, 0, 0]


def test_the_lower_floors_exit_codes_are_the_clis() -> None:
    """iped.errors names the two codes a daemon-floor UserError may carry without importing the CLI."""
    from iped import errors

    assert (errors.USAGE, errors.UNREACHABLE) == (ExitCode.USAGE, ExitCode.UNREACHABLE)


#: a verb whose module says LOGS = False, run by the real CLI: is Python's logging set up?
_LOGGING_PROBE = """
import logging, sys, types
import iped.cli as cli
def run(args):
    print(bool(logging.root.handlers))
    return 0
cli.load_verb = lambda verb: types.SimpleNamespace(LOGS=False, add_arguments=lambda parser: None, run=run)
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_verb_that_never_logs_gets_logging_only_with_debug() -> None:
    """`iped status` and `iped daemon` report through their own paths: the CLI skips setting up
    Python's logging for them (milliseconds of every start) unless --debug asks for it."""
    assert load_verb(Verb.daemon).LOGS is False and load_verb(Verb.status).LOGS is False
    assert getattr(load_verb(Verb.audit), "LOGS", True) is True
    for argv, configured in ((["daemon"], "False"), (["daemon", "--debug"], "True")):
        r = subprocess.run([sys.executable, "-c", _LOGGING_PROBE, *argv], capture_output=True, text=True,
                           check=False, timeout=120)  # fmt: skip
        assert (r.returncode, r.stdout.strip()) == (0, configured), (argv, r.stderr)
