"""The role's [boot] variables: rendered into iped.toml only when asked, as keys the daemon accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest

from iped.config import load_settings
from tests.helpers.paths import ROOT

ROLE = ROOT / "ansible/ansible_collections/iped/ipe/roles/iped"
TEMPLATE = ROLE / "templates/iped.toml.j2"


def render(**overrides: object) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    env.filters["bool"] = bool
    values: dict[str, object] = {
        "ansible_managed": "managed", "iped_policies_dir": "/etc/iped/policies.d", "iped_active": "base",
        "iped_enforce": True, "iped_success_audit": False, "iped_trust_anchors": [], "iped_signing_key": None,
        "iped_signing_cert": None, "iped_protect": [], "iped_daemon_settings": {}, "iped_audit_settings": {},
        "iped_boot_keep_copy": False, "iped_boot_fail_closed": False, **overrides}
    return env.from_string(TEMPLATE.read_text()).render(**values)


@pytest.mark.parametrize(("keep", "fail_closed"), [(True, False), (True, True), (False, True)])
def test_boot_variables_reach_iped_toml(tmp_path: Path, keep: bool, fail_closed: bool) -> None:
    config = tmp_path / "iped.toml"
    config.write_text(render(iped_boot_keep_copy=keep, iped_boot_fail_closed=fail_closed))
    boot = load_settings(config).boot
    assert (boot.keep_copy, boot.fail_closed) == (keep, fail_closed)


def test_no_boot_section_by_default() -> None:
    assert "[boot]" not in render()
