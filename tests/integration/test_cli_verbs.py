"""The one-shot verbs without a daemon (plan, apply) and the light import path of status."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.daemon import Site, iped
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text


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
    r = iped("apply", "--config", str(site.config), "--json")
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


@pytest.mark.parametrize("verb", ["status", "reload", "plan", "rollback"])


def test_bad_config_is_said_not_daemon_unreachable(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: ``--config`` naming a directory or a missing file was reported as "daemon
    unreachable: /run/iped/control.sock" (exit 3)."""
    from iped.cli import main

    for config, why in ((tmp_path, "EISDIR"), (tmp_path / "missing.toml", "ENOENT")):
        assert main([verb, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err == f"iped: error: --config {config}: {why}: {os.strerror(getattr(errno, why))}\n"


def test_no_configuration_on_the_host_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20: with no /etc/iped every verb said ``/etc/iped/iped.toml:1: (file): No such file or
    directory``, and status "daemon unreachable", with no word of --config or --dev."""
    from iped import paths
    from iped.cli import main
    from iped.commands import remote
    from iped.daemon import client, runtime

    absent = str(tmp_path / "etc" / "iped.toml")  # this host's /etc/iped, as on a fresh machine
    for module in (paths, client, runtime, remote):  # the declaration, and each module's binding of it
        monkeypatch.setattr(module, "DEFAULT_CONFIG", absent)
    assert main(["check-config"]) == 1  # its default --config, as on a fresh machine
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give --config FILE" in err and "--dev" in err
    for module in (paths, client, remote):
        monkeypatch.setattr(module, "DEFAULT_SOCKET", str(tmp_path / "control.sock"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no dev daemon's socket either
    assert main(["status"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no {absent}" in err and "--config FILE" in err and "--dev" in err
    for argv in (["plan"], ["apply"], ["rollback"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        if argv != ["apply"]:  # no daemon listening: the verb says it computes locally (README), then fails
            note, err = err.split("\n", 1)
            assert note.startswith(f"iped: no daemon listening on {tmp_path}/control.sock"), note
        assert err.startswith(f"iped: error: {absent}: ENOENT: no configuration file"), err
        assert "(file)" not in err and "--config FILE" in err and "--dev" in err and err.count("\n") == 1


def test_rollback_json_error_is_a_json_object_on_stdout(site: Site) -> None:
    # nothing applied yet: nothing is active (--no-daemon: no note that no daemon listens, only the error)
    r = iped("rollback", "--no-daemon", "--config", str(site.config), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"ok": False, "errno": 2, "errno_name": "ENOENT",
                                    "error": "no policy is active; nothing to roll back"}
    assert r.stderr == "iped: error: ENOENT: no policy is active; nothing to roll back\n"
    site.config.write_text(site.config.read_text().replace('backend = "emulator"', 'backend = "emu"'))
    r = iped("rollback", "--config", str(site.config), "--json")  # refused before any rollback: still JSON
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["ok"] is False and doc["errno_name"] is None
    assert f"{site.config}:8: daemon.backend:" in doc["error"]


def test_daemon_help_and_docs_say_how_the_backend_is_chosen(capsys: pytest.CaptureFixture[str]) -> None:
    from iped.cli import main

    assert main(["daemon", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[daemon] backend: kernel, emulator, or auto" in text and "there is no --backend option" in text
    assert main(["daemon", "--backend", "emulator"]) == 2
    assert "unrecognized arguments: --backend" in capsys.readouterr().err
    doc = " ".join((ROOT / "docs" / "daemon.md").read_text().split())
    assert "The backend is chosen by `[daemon] backend` in iped.toml" in doc and "no `--backend` option" in doc
