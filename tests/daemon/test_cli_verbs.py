"""The one-shot verbs without a daemon (plan, apply --once) and the light import path of status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.conftest import ROOT, Site, iped, policy_text


def test_status_imports_nothing_heavy(tmp_path: Path) -> None:
    code = ("import sys; from iped.cli import main; rc = main(['status', '--socket', sys.argv[1]]);"
            "heavy = [m for m in ('pydantic', 'cryptography', 'iped.emulator', 'systemd', 'pyudev', "
            "'iped.config', 'iped.daemon.loop') if m in sys.modules]; print(rc, heavy)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none.sock")], capture_output=True, text=True,
                       cwd=ROOT, check=False, timeout=120)
    assert r.stdout.strip() == "3 []", r.stdout + r.stderr


def test_plan_without_daemon_and_apply_once(site: Site) -> None:
    r = iped("plan", "--config", str(site.config), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    plan = json.loads(r.stdout)
    assert plan["daemon"] is False and plan["outcome"] == "would-apply"
    assert [s["kind"] for s in plan["steps"]] == ["load", "activate"]
    r = iped("apply", "--once", "--config", str(site.config), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outcome"] == "applied"
    (site.policies / "bad.pol").write_bytes(policy_text("bad", "1.0"))
    r = iped("apply", "--once", "--config", str(site.config))
    assert r.returncode == 1 and "bad.pol:1: EBADMSG" in r.stdout and "nothing was written" in r.stdout
    r = iped("plan", "--config", str(site.config))
    assert r.returncode == 1 and "rejected" in r.stdout


def test_invalid_config_fails_daemon_start_with_location(site: Site) -> None:
    site.config.write_text(site.config.read_text().replace('backend = "emulator"', 'backend = "emu"'))
    r = iped("daemon", "--config", str(site.config))
    assert r.returncode == 1
    assert f"{site.config}:8: daemon.backend:" in r.stderr


@pytest.mark.skipif(Path("/sys/kernel/security/ipe").exists(), reason="this host has IPE: kernel backend works")
def test_forced_kernel_backend_without_ipe_explains(site: Site) -> None:
    site.config.write_text(site.config.read_text().replace('backend = "emulator"', 'backend = "kernel"'))
    r = iped("apply", "--once", "--config", str(site.config))
    assert r.returncode == 1 and "backend = kernel, but /sys/kernel/security/ipe does not exist" in r.stderr
