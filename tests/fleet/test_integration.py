"""ansible-test integration (connection local) and the role, against a real ``iped daemon`` on the emulator."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.helpers.ansible import COLLECTION, IPED, require_ok, run_ansible
from tests.helpers.daemon import SLOW_DEBOUNCE_MS, DaemonProc, Site, tampered_signature
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text


def test_ipe_state_target(quiet_daemon: DaemonProc, home: Path, tmp_path: Path) -> None:
    site = quiet_daemon.site
    assert quiet_daemon.status()["active"]["version"] == "1.0.0"
    bad = tmp_path / "tampered.p7s"
    bad.write_bytes(tampered_signature(site))
    home.mkdir()
    # iped through the tests' entry point: the kernel error is injected with its IPED_EMULATOR_FAULT
    hooked = home / "iped-with-hooks"
    hooked.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT}/tests/helpers/iped_with_hooks.py" "$@"\n')
    hooked.chmod(0o755)
    (home / "iped-integration.yml").write_text(
        f'iped_command: "{IPED}"\niped_config: "{site.config}"\niped_policies_dir: "{site.policies}"\n'
        f'iped_socket: "{site.socket}"\niped_bad_signature: "{bad}"\niped_hooked_command: "{hooked}"\n')
    out = require_ok(run_ansible("ansible-test", "integration", "--local", "--python", "3.11", "ipe_state",
                                 home=home, cwd=COLLECTION))
    assert re.search(r"ok=\d+\s+changed=\d+\s+unreachable=0\s+failed=0", out), out[-3000:]
    assert not (site.policies / "tampered.p7s").exists()


def write_playbook(path: Path, site: Site, policy_src: Path) -> Path:
    path.write_text(f"""---
- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: iped.ipe.iped
      vars:
        iped_install_package: false
        iped_manage_service: false
        iped_command: "{IPED}"
        iped_config_path: "{site.config}"
        iped_policies_dir: "{site.policies}"
        iped_active: app
        iped_enforce: true
        iped_signing_key: "{site.key}"
        iped_signing_cert: "{site.cert}"
        iped_policies:
          - src: "{policy_src}"
        iped_purge_undeclared: true
        iped_daemon_settings:
          backend: emulator
          state_dir: "{site.state}"
          control_socket: "{site.socket}"
          control_group: nogroup
          debounce_ms: {SLOW_DEBOUNCE_MS}
""")
    return path


def recap(out: str) -> dict[str, int]:
    m = re.search(r"localhost\s+:\s+(.*)", out)
    assert m, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def test_role_converges_then_changes_nothing(quiet_daemon: DaemonProc, home: Path, tmp_path: Path) -> None:
    site = quiet_daemon.site
    src = tmp_path / "app.pol"
    src.write_bytes(policy_text("app", "2.0.0"))
    playbook = write_playbook(tmp_path / "site.yml", site, src)
    check = recap(require_ok(run_ansible("ansible-playbook", "--check", "--diff", str(playbook), home=home)))
    assert check["changed"] > 0 and check["failed"] == 0
    assert quiet_daemon.status()["active"]["name"] == "base"  # check mode wrote nothing
    assert not (site.policies / "app.pol").exists()

    first = require_ok(run_ansible("ansible-playbook", str(playbook), home=home))
    assert recap(first)["changed"] > 0 and recap(first)["failed"] == 0
    assert "TASK [iped.ipe.iped : Converge now" in first
    status = quiet_daemon.status()
    assert status["active"]["name"] == "app" and status["in_sync"]
    assert not (site.policies / "base.pol").exists()  # undeclared: purged, and the daemon deleted it
    assert [p["name"] for p in status["policies"]] == ["app"]

    second = recap(require_ok(run_ansible("ansible-playbook", str(playbook), home=home)))
    assert second["changed"] == 0 and second["failed"] == 0
