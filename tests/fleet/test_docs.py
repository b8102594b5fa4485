"""docs/fleet.md: its YAML examples parse, the role example uses only the role's variables, and the
alerts query metrics iped actually writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from iped.audit.counters import AuditCounters
from iped.audit.counters import prometheus_text as audit_text
from iped.daemon.metrics import StateMetrics
from iped.daemon.metrics import prometheus_text as state_text
from tests.helpers.ansible import COLLECTION, SANITY_TESTS
from tests.helpers.paths import ROOT

DOC = (ROOT / "docs" / "fleet.md").read_text()


def yaml_blocks() -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", DOC, re.S)]


def test_yaml_examples_parse() -> None:
    assert len(yaml_blocks()) >= 4


def test_role_example_uses_declared_variables() -> None:
    specs = yaml.safe_load(Path(COLLECTION / "roles/iped/meta/argument_specs.yml").read_text())
    known = set(specs["argument_specs"]["main"]["options"])
    plays = [b for b in yaml_blocks() if isinstance(b, list) and b and "roles" in b[0]]
    assert plays, "the role example is gone"
    for role in plays[0][0]["roles"]:
        assert role["role"] == "iped.ipe.iped"
        assert set(role["vars"]) <= known


def test_alerts_query_metrics_iped_writes() -> None:
    m = StateMetrics()
    m.observe({"trigger": "startup", "outcome": "applied", "active_after": {"name": "a", "version": "1.0.0"}},
              enforce=True, success_audit=False, ready=True, now=1.0)
    written = set(re.findall(r"^# TYPE (\w+) ", state_text(m) + audit_text(AuditCounters()), re.M))
    [rules] = [b for b in yaml_blocks() if isinstance(b, dict) and "groups" in b]
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    used = set(re.findall(r"\biped_\w+", exprs))
    assert used and used <= written, used - written


def test_sanity_set_is_the_one_the_suite_runs() -> None:
    [listed] = re.findall(r"The default set is all \d+ tests: `([^`]+)`", DOC)
    assert tuple(listed.split()) == SANITY_TESTS
    assert f"all {len(SANITY_TESTS)} tests" in DOC
