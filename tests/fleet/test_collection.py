"""The collection's own checks, run in place: ansible-test sanity (the offline subset), units, ansible-doc."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fleet.conftest import COLLECTION, require_ok, run_ansible

#: The sanity tests that need no pip install: every other test (ansible-doc, changelog, import, pep8,
#: pylint, runtime-metadata, validate-modules, yamllint) creates a virtualenv and installs pinned
#: requirements from PyPI, which an offline run cannot; pslint and shellcheck need pwsh/shellcheck.
#: docs/fleet.md lists the same set.
OFFLINE_SANITY = (
    "action-plugin-docs", "compile", "empty-init", "ignores", "line-endings", "no-assert", "no-get-exception",
    "no-illegal-filenames", "no-smart-quotes", "replace-urlopen", "shebang", "symlinks", "use-argspec-type-path",
    "use-compat-six",
)


def test_sanity_offline_subset(home: Path) -> None:
    args = [arg for test in OFFLINE_SANITY for arg in ("--test", test)]
    out = require_ok(run_ansible("ansible-test", "sanity", "--local", "--python", "3.11", *args,
                                 home=home, cwd=COLLECTION))
    for test in OFFLINE_SANITY:
        assert f'Running sanity test "{test}"' in out


def test_units(home: Path) -> None:
    out = require_ok(run_ansible("ansible-test", "units", "--local", "--python", "3.11", home=home, cwd=COLLECTION))
    assert " passed" in out and "failed" not in out.split("=====")[-2]


def test_ansible_doc_states_check_and_diff_support(home: Path) -> None:
    out = require_ok(run_ansible("ansible-doc", "--json", "iped.ipe.ipe_state", "iped.ipe.ipe_facts", home=home))
    docs = json.loads(out)
    state = docs["iped.ipe.ipe_state"]["doc"]
    assert state["attributes"]["check_mode"]["support"] == "full"
    assert state["attributes"]["diff_mode"]["support"] == "full"
    assert state["options"]["config"]["default"] == "/etc/iped/iped.toml"
    assert state["options"]["method"]["choices"] == ["auto", "daemon", "once"]
    assert docs["iped.ipe.ipe_facts"]["doc"]["attributes"]["facts"]["support"] == "full"
    role = json.loads(require_ok(run_ansible("ansible-doc", "--json", "-t", "role", "iped.ipe.iped", home=home)))
    assert "iped_policies" in role["iped.ipe.iped"]["entry_points"]["main"]["options"]


def test_no_changed_when_true_anywhere() -> None:
    offenders = [str(p) for p in COLLECTION.rglob("*.yml") if "changed_when: true" in p.read_text().lower()]
    assert offenders == []
