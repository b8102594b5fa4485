"""The collection's own checks, run in place: ansible-test sanity (the full default set), units, ansible-doc."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.ansible import ANSIBLE_PYTHON, COLLECTION, SANITY_TESTS, require_ok, run_ansible

#: a cold cache installs pylint, yamllint, voluptuous, ... into a virtualenv per test
SANITY_TIMEOUT = 1200


def test_sanity_full_default_set(sanity_home: Path) -> None:
    listed = require_ok(run_ansible("ansible-test", "sanity", "--list-tests", home=sanity_home, cwd=COLLECTION))
    assert tuple(listed.split()) == SANITY_TESTS
    proc = run_ansible("ansible-test", "sanity", "--local", "--python", ANSIBLE_PYTHON, home=sanity_home,
                       cwd=COLLECTION, timeout=SANITY_TIMEOUT)
    out = require_ok(proc) + proc.stderr
    for test in SANITY_TESTS:
        assert f'Running sanity test "{test}"' in out
    # a test skipped for a missing tool or virtualenv says so; pslint and shellcheck have nothing to check
    # (no .ps1 or .sh in the collection) and say nothing
    assert "Skipping sanity test" not in out and "Unable to find" not in out, out
    assert not [p for p in COLLECTION.rglob("*") if p.suffix in (".ps1", ".psm1", ".sh")
                and "tests/output" not in str(p)]


def test_units(home: Path) -> None:
    out = require_ok(run_ansible("ansible-test", "units", "--local", "--python", ANSIBLE_PYTHON, home=home,
                                 cwd=COLLECTION))
    assert " passed" in out and "failed" not in out.split("=====")[-2]


def test_ansible_doc_states_check_and_diff_support(home: Path) -> None:
    out = require_ok(run_ansible("ansible-doc", "--json", "iped.ipe.ipe_state", "iped.ipe.ipe_facts", home=home))
    docs = json.loads(out)
    state = docs["iped.ipe.ipe_state"]["doc"]
    assert state["attributes"]["check_mode"]["support"] == "full"
    assert state["attributes"]["diff_mode"]["support"] == "full"
    assert state["options"]["config"]["default"] == "/etc/iped/iped.toml"
    assert state["options"]["method"]["choices"] == ["auto", "daemon", "once"]
    # a "V(x): y" line parses as a YAML mapping, which ansible-doc --json passes on and the text view rejects
    assert all(isinstance(line, str) for line in state["options"]["method"]["description"])
    assert docs["iped.ipe.ipe_facts"]["doc"]["attributes"]["facts"]["support"] == "full"
    role = json.loads(require_ok(run_ansible("ansible-doc", "--json", "-t", "role", "iped.ipe.iped", home=home)))
    assert "iped_policies" in role["iped.ipe.iped"]["entry_points"]["main"]["options"]


def test_no_changed_when_true_anywhere() -> None:
    offenders = [str(p) for p in COLLECTION.rglob("*.yml") if "changed_when: true" in p.read_text().lower()]
    assert offenders == []
