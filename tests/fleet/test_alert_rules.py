"""The shipped alert rules (prometheus/iped-alerts.rules.yml) under Prometheus's own promtool.

``promtool check rules`` checks the file; ``promtool test rules`` evaluates every alert over
series whose samples are the textfiles iped actually wrote here: the daemon's state file in sync,
after a rejected reload (out of sync, degraded), at a start whose declared policy the kernel
refused (not ready), and the audit follower's counters from real journal files with denials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from iped.backend import EmulatorBackend
from iped.config import load_settings
from iped.daemon import runtime
from iped.daemon.log import NullReporter
from iped.daemon.loop import Daemon
from iped.daemon.metrics import state_textfile
from iped.daemon.notify import Notifier
from iped.settings import AuditSource
from tests.helpers.backends import PosingAsKernel
from tests.helpers.daemon import SLOW_DEBOUNCE_MS, Site, iped, start_daemon, wait_child, wait_for
from tests.helpers.iped_with_hooks import Fault, FaultyEmulatorBackend
from tests.helpers.paths import AUDIT_GOLDEN, ROOT
from tests.helpers.policies import policy_text

RULES = ROOT / "prometheus" / "iped-alerts.rules.yml"
PROMTOOL = shutil.which("promtool")
if PROMTOOL is None:  # packaging/dev.sh installs Debian's prometheus package
    pytest.fail("promtool is not installed: run packaging/dev.sh setup", pytrace=False)


def promtool(*args: str, cwd: Path = ROOT) -> str:
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_rules_check() -> None:
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", str(RULES))


def test_docs_show_the_shipped_rules() -> None:
    doc = (ROOT / "docs" / "fleet.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", doc, re.S)]
    assert yaml.safe_load(RULES.read_text()) in blocks


def series(textfile: str, instance: str, values: str) -> list[dict[str, str]]:
    """promtool input_series: every sample of a textfile, labelled with ``instance``; ``values``
    in promtool's expanding notation, ``{v}`` standing for the value the file holds."""
    out = []
    for family in text_string_to_metric_families(textfile):
        for s in family.samples:
            labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted({**s.labels, "instance": instance}.items()))
            out.append({"series": f"{s.name}{{{labels}}}", "values": values.format(v=repr(s.value))})
    return out


def written_state(site: Site) -> tuple[str, str]:
    """The daemon's state textfile in sync, then after a rejected reload."""
    textfile = site.root / "collector" / "iped.prom"
    textfile.parent.mkdir()
    site.extra = f'prometheus_textfile = "{textfile}"\n'
    site.debounce_ms = SLOW_DEBOUNCE_MS
    site.write_config()
    state = state_textfile(textfile)
    d = start_daemon(site)
    try:
        in_sync = wait_for(lambda: state.exists() and state.read_text(), what="the state textfile")
        site.put("broken.pol", policy_text("broken", "1.0.0", default="DEFAULT action=MAYBE"))
        assert iped("reload", "--config", str(site.config)).returncode == 1
        rejected = state.read_text()
    finally:
        d.stop()
    assert "\niped_in_sync 1\n" in in_sync and "\niped_in_sync 0\n" in rejected
    return in_sync, rejected


def written_not_ready(site: Site, tmp: Path) -> str:
    """The state textfile of a start whose declared policy the kernel refuses (ENOKEY): the daemon,
    as systemd runs it, writes it before it exits 78 without READY=1 (the emulator posing as the
    kernel: the emulator backend itself is ready after its first reconcile)."""
    textfile = tmp / "collector-start" / "iped.prom"
    textfile.parent.mkdir()
    site.extra = f'prometheus_textfile = "{textfile}"\n'
    (site.policies / "broken.pol").unlink()  # the rejected state's file: this start is refused by the kernel
    site.put("fleet.pol", policy_text("fleet", "1.0.0"))
    site.active = "fleet"
    site.write_config()
    settings = load_settings(site.config)
    settings = dataclasses.replace(settings, audit=dataclasses.replace(settings.audit, source=AuditSource.NONE))
    emulator = runtime.make_backend(settings)
    assert isinstance(emulator, EmulatorBackend)
    refusing = PosingAsKernel(FaultyEmulatorBackend(emulator.emulator, "refuses the load",
                                                    Fault("new_policy", 1, errno.ENOKEY)))
    pid = os.fork()
    if pid == 0:  # the suite runs no threads, so fork is safe
        code = 70
        with contextlib.suppress(BaseException):
            code = Daemon(runtime.make_reconciler(settings, NullReporter(), refusing), Notifier({}),
                          NullReporter()).run()
        os._exit(code)
    status = wait_child(pid, 60)
    assert os.waitstatus_to_exitcode(status) == 78
    return state_textfile(textfile).read_text()


class JournalDir:
    """The follower's journal source over a directory of journal files (the daemon's reads the
    system journal): :class:`iped.audit.journal.JournalSource` with its ``path``."""

    name = "journal"
    track_gaps = False

    def __init__(self, path: Path) -> None:
        from iped.audit.journal import JournalSource

        self.src = JournalSource(None, since=0.0, path=str(path))

    def fileno(self) -> int:
        return self.src.fileno()

    def read(self) -> list[Any]:
        return self.src.read()

    def close(self) -> None:
        self.src.close()


def written_denials(tmp: Path) -> str:
    """The audit follower's textfile after reading real journal files (systemd-journal-remote) of
    the golden log, which holds enforcing denials."""
    from iped.audit.files import iter_file
    from iped.audit.follow import Follower
    from tests.helpers.journal import export, write_journal

    journal = tmp / "journal"
    journal.mkdir()
    golden = iter_file(AUDIT_GOLDEN / "doc-examples.log")
    records = sorted((r for r in golden if r.body), key=lambda r: (r.sec, r.msec, r.serial))
    write_journal(journal, "a.journal", export(records, 1))
    textfile = tmp / "collector-audit" / "iped.prom"
    textfile.parent.mkdir()
    follower = Follower(JournalDir(journal), textfile=textfile, group_timeout=0.0)
    try:
        follower.on_readable()
        follower.flush()
        follower.on_timeout(time.monotonic() + 60)  # past the textfile's once-a-second bound
        text = textfile.read_text()
    finally:
        follower.close()
    assert 'action="DENY"' in text, text
    return text


def fired(alert: str, instance: str, value: str = "") -> dict[str, Any]:
    """promtool's expected alert: the rule's labels and its annotations as Prometheus renders them."""
    [rule] = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r["alert"] == alert]
    notes = {k: v.replace("{{ $labels.instance }}", instance).replace("{{ $value }}", value)
             for k, v in rule.get("annotations", {}).items()}
    return {"exp_labels": {"instance": instance, **rule.get("labels", {})}, "exp_annotations": notes}


def test_rules_fire_on_what_iped_wrote(site: Site, tmp_path: Path) -> None:
    in_sync, rejected = written_state(site)
    not_ready = written_not_ready(site, tmp_path)
    denials = written_denials(tmp_path)
    assert "\niped_ready 0\n" in not_ready and "\niped_declared_errors 0\n" in not_ready, not_ready
    steady = "{v}x1700"  # a day and more, one sample a minute
    inputs = series(in_sync, "good", steady) + series(rejected, "rejected", steady) + \
        series(not_ready, "starting", steady)
    # the audit counters as the follower wrote them: flat for a day on "good", then on "wave1" the
    # same series rising 30 a minute for the last 20 minutes, after a new policy version appeared
    for s in series(denials, "wave1", "{v}x1680 {v}+30x20"):
        inputs.append(s)
    for s in series(in_sync, "wave1", "_x1640 1x60"):  # the new version's series: 60 minutes old
        if s["series"].startswith("iped_active_policy_info"):
            inputs.append(s)
    # the rule compares with yesterday; the `last reconcile` of every file is "now" at t=0, so the
    # silent-daemon rule is judged at 10m, before an hour has passed
    tests = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": inputs,
        "alert_rule_test": [
            {"eval_time": "15m", "alertname": "IpeHostNotInSync",
             "exp_alerts": [fired("IpeHostNotInSync", "rejected"), fired("IpeHostNotInSync", "starting")]},
            {"eval_time": "5m", "alertname": "IpeHostNotInSync", "exp_alerts": []},  # not for 10 minutes yet
            {"eval_time": "15m", "alertname": "IpeDeclaredStateRejected",
             "exp_alerts": [fired("IpeDeclaredStateRejected", "rejected", "1")]},
            {"eval_time": "20m", "alertname": "IpeDaemonNotReady",
             "exp_alerts": [fired("IpeDaemonNotReady", "starting")]},
            {"eval_time": "10m", "alertname": "IpeDaemonNotReady", "exp_alerts": []},  # not for 15 minutes yet
            {"eval_time": "1700m", "alertname": "IpeDenialsRisingAfterRollout",
             "exp_alerts": [fired("IpeDenialsRisingAfterRollout", "wave1")]},
            {"eval_time": "1670m", "alertname": "IpeDenialsRisingAfterRollout", "exp_alerts": []},
        ],
    }]}
    (tmp_path / "iped-alerts.test.yml").write_text(yaml.safe_dump(tests))
    out = promtool("test", "rules", str(tmp_path / "iped-alerts.test.yml"), cwd=tmp_path)
    assert "SUCCESS" in out, out
