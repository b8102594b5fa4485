"""The daemon's state in the Prometheus textfile, read back with prometheus_client's own parser."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from iped.daemon.metrics import StateMetrics, prometheus_text, state_textfile
from tests.helpers.daemon import SLOW_DEBOUNCE_MS, Site, start_daemon, wait_for
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_metric_parses_with_its_labels() -> None:
    m = StateMetrics()
    m.observe({"trigger": "startup", "outcome": "applied", "errors": [],
               "active_after": {"name": 'we"ird', "version": "1.2.3", "blob_digest": "ab" * 32}},
              enforce=True, success_audit=False, ready=True, now=1700000000.5)
    m.observe({"trigger": "reload", "outcome": "rejected", "errors": [{}, {}],
               "active_after": {"name": 'we"ird', "version": "1.2.3", "blob_digest": "ab" * 32}},
              enforce=True, success_audit=False, ready=True, now=1700000060.0)
    got = samples(prometheus_text(m))
    assert got[("iped_in_sync", ())] == 0
    assert got[("iped_active_policy_info", (("digest", "ab" * 32), ("name", 'we"ird'), ("version", "1.2.3")))] == 1
    assert got[("iped_enforce", ())] == 1 and got[("iped_success_audit", ())] == 0
    assert got[("iped_reconciles_total", (("outcome", "applied"), ("trigger", "startup")))] == 1
    assert got[("iped_reconciles_total", (("outcome", "rejected"), ("trigger", "reload")))] == 1
    assert got[("iped_last_reconcile_timestamp_seconds", ())] == 1700000060.0
    assert got[("iped_declared_errors", ())] == 2
    assert got[("iped_ready", ())] == 1


@pytest.mark.parametrize(("outcome", "in_sync"), [("applied", 1), ("unchanged", 1), ("rejected", 0), ("failed", 0)])
def test_in_sync_after_applied_or_unchanged_only(outcome: str, in_sync: int) -> None:
    """A reconcile with nothing to change leaves the kernel as declared: in sync, as after an applied one."""
    m = StateMetrics()
    m.observe({"trigger": "reload", "outcome": outcome, "errors": []}, enforce=True, success_audit=False,
              ready=True, now=1700000000.0)
    assert samples(prometheus_text(m))[("iped_in_sync", ())] == in_sync


def reload(site: Site) -> int:
    return subprocess.run([sys.executable, "-m", "iped", "reload", "--config", str(site.config)], cwd=ROOT,
                          capture_output=True, check=False, timeout=60).returncode


def test_daemon_writes_its_state_after_every_reconcile(site: Site) -> None:
    textfile = site.root / "collector" / "iped.prom"
    textfile.parent.mkdir()
    site.extra = f'prometheus_textfile = "{textfile}"\n'
    site.debounce_ms = SLOW_DEBOUNCE_MS  # every reconcile below is an explicit reload
    site.write_config()
    state = state_textfile(textfile)
    assert state.name == "iped_state.prom"
    d = start_daemon(site)
    try:
        got = samples(wait_for(lambda: state.exists() and state.read_text(), what="the state textfile"))
        assert got[("iped_in_sync", ())] == 1
        assert got[("iped_ready", ())] == 1
        assert got[("iped_enforce", ())] == 1
        assert got[("iped_declared_errors", ())] == 0
        assert got[("iped_reconciles_total", (("outcome", "applied"), ("trigger", "startup")))] == 1
        [(_, labels)] = [k for k in got if k[0] == "iped_active_policy_info"]
        assert dict(labels)["name"] == "base" and dict(labels)["version"] == "1.0.0"
        assert len(dict(labels)["digest"]) == 64
        assert abs(got[("iped_last_reconcile_timestamp_seconds", ())] - time.time()) < 120

        site.put("broken.pol", policy_text("broken", "1.0.0", default="DEFAULT action=MAYBE"))
        assert reload(site) == 1
        got = samples(state.read_text())
        assert got[("iped_in_sync", ())] == 0
        assert got[("iped_declared_errors", ())] == 1
        assert got[("iped_reconciles_total", (("outcome", "rejected"), ("trigger", "reload")))] == 1

        (site.policies / "broken.pol").unlink()
        site.put("base.pol", policy_text("base", "1.0.1"))
        assert reload(site) == 0
        got = samples(state.read_text())
        assert got[("iped_in_sync", ())] == 1
        assert [dict(k[1])["version"] for k in got if k[0] == "iped_active_policy_info"] == ["1.0.1"]
        assert sorted(p.name for p in textfile.parent.iterdir() if p.name.startswith(".")) == []  # no temp left
    finally:
        d.stop()
