"""The role's stage, judge, then swap (issue 21): against a real ``iped daemon`` on the emulator.

Each test is one of the role's defects of issue 21, driven through ``ansible-playbook`` as a fleet
admin runs it. A play that fails leaves the declared state (the configuration file and the drop-in
dir, compared by digest) exactly as it was; check mode reports the plan the real run carries out.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from iped.daemon.devkey import ensure_dev_key
from iped.pkcs7 import sign_policy
from tests.helpers.ansible import BIN, IPED, ansible_env
from tests.helpers.daemon import SLOW_DEBOUNCE_MS, DaemonProc, Site, iped
from tests.helpers.iped_with_hooks import STATE_ENV
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text, unparsable

#: the suite's JSON stdout callback (ansible-core has none)
CALLBACKS = Path(__file__).with_name("callback_plugins")


def tree_digest(*roots: Path) -> str:
    """sha256 over every file under ``roots`` (path, mode, bytes): the host's declared state."""
    h = hashlib.sha256()
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            h.update(f"{f}\0{f.stat().st_mode:o}\0".encode() + f.read_bytes() + b"\0")
    return h.hexdigest()


def playbook(path: Path, site: Site, policies: list[dict[str, str]], *, active: str = "base",
             enforce: bool = True, purge: bool = True, method: str = "auto", config: Path | None = None,
             policies_dir: Path | None = None, command: Path | str = IPED) -> Path:
    items = "".join(f'\n          - src: "{p["src"]}"' + (f'\n            dest: "{p["dest"]}"' if "dest" in p else "")
                    for p in policies)
    path.write_text(f"""---
- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: iped.ipe.iped
      vars:
        iped_install_package: false
        iped_manage_service: false
        iped_command: "{command}"
        iped_config_path: "{config or site.config}"
        iped_policies_dir: "{policies_dir or site.policies}"
        iped_active: {active}
        iped_enforce: {str(enforce).lower()}
        iped_signing_key: "{site.key}"
        iped_signing_cert: "{site.cert}"
        iped_converge_method: {method}
        iped_policies:{items}
        iped_purge_undeclared: {str(purge).lower()}
        iped_daemon_settings:
          backend: emulator
          state_dir: "{site.state}"
          control_socket: "{site.socket}"
          control_group: nogroup
          debounce_ms: {SLOW_DEBOUNCE_MS}
""")
    return path


def play(book: Path, home: Path, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    """ansible-playbook with the json callback: (exit code, the run's document)."""
    proc = subprocess.run([str(BIN / "ansible-playbook"), *args, str(book)], cwd=ROOT, capture_output=True, text=True,
                          env=ansible_env(home, ANSIBLE_STDOUT_CALLBACK="json_results",
                                          ANSIBLE_CALLBACK_PLUGINS=str(CALLBACKS), **env),
                          timeout=240, check=False)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}") from None
    return proc.returncode, doc


def task_result(doc: dict[str, Any], name_starts: str) -> dict[str, Any]:
    for task in doc["plays"][0]["tasks"]:
        if task["task"]["name"].split(" : ", 1)[-1].startswith(name_starts):
            result: dict[str, Any] = task["hosts"]["localhost"]
            return result
    raise AssertionError(f"no task {name_starts!r} ran: {[t['task']['name'] for t in doc['plays'][0]['tasks']]}")


def results(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [t["hosts"]["localhost"] for t in doc["plays"][0]["tasks"] if "localhost" in t["hosts"]]


def failures(doc: dict[str, Any]) -> list[str]:
    return [f"{t['task']['name']}: {t['hosts']['localhost'].get('msg')}" for t in doc["plays"][0]["tasks"]
            if t["hosts"].get("localhost", {}).get("failed")]


def kernel_view(policies: list[dict[str, Any]], active: str | None, enforce: bool) -> dict[str, Any]:
    return {"active": active, "enforce": enforce,
            "policies": sorted((p["name"], p["version"], p["text_digest"]) for p in policies)}


def test_untrusted_signer_fails_before_any_file_changes(quiet_daemon: DaemonProc, home: Path,
                                                        tmp_path: Path) -> None:
    """Item 1: a .p7s from a signer the host does not trust passed `validate` (no --trust), then the
    purge deleted the good file before the converge failed (ENOKEY)."""
    site = quiet_daemon.site
    before = tree_digest(site.config, site.policies)
    rogue_key, rogue_cert = ensure_dev_key(tmp_path / "rogue")
    src = tmp_path / "fleet.p7s"
    src.write_bytes(sign_policy(policy_text("base", "1.0.1"), rogue_key.read_bytes(), rogue_cert.read_bytes()))
    rc, doc = play(playbook(tmp_path / "site.yml", site, [{"src": str(src)}]), home)
    assert rc != 0 and failures(doc), doc["stats"]
    assert tree_digest(site.config, site.policies) == before
    st = quiet_daemon.status()
    assert st["active"]["version"] == "1.0.0" and st["in_sync"]


def test_rejected_plan_fails_before_any_file_changes(quiet_daemon: DaemonProc, home: Path, tmp_path: Path) -> None:
    """Item 1, the judge itself: a policy each file check accepts but the kernel refuses as a whole
    (a lower version than the loaded one: ESTALE) fails the play with the files as they were."""
    site = quiet_daemon.site
    before = tree_digest(site.config, site.policies)
    src = tmp_path / "base.pol"
    src.write_bytes(policy_text("base", "0.9.0"))
    rc, doc = play(playbook(tmp_path / "site.yml", site, [{"src": str(src)}]), home)
    assert rc != 0
    assert tree_digest(site.config, site.policies) == before
    judged = task_result(doc, "Judge the staged state")
    assert judged.get("failed") and any("ESTALE" in r for r in judged["reasons"]), judged
    assert quiet_daemon.status()["active"]["version"] == "1.0.0"


def test_check_mode_diff_is_what_the_run_does(quiet_daemon: DaemonProc, home: Path, tmp_path: Path) -> None:
    """Item 2: check mode planned the files on disk, not the ones the play writes: a flip of
    enforce and a new active policy were reported `ok`. Now check mode's plan is the run's."""
    site = quiet_daemon.site
    src = tmp_path / "app.pol"
    src.write_bytes(policy_text("app", "2.0.0"))
    book = playbook(tmp_path / "site.yml", site, [{"src": str(src)}], active="app", enforce=False)
    before = tree_digest(site.config, site.policies)
    rc, check = play(book, home, "--check", "--diff")
    assert rc == 0, failures(check)
    assert tree_digest(site.config, site.policies) == before
    reported = [r["plan"] for r in results(check) if r.get("plan") and r.get("changed")]
    assert len(reported) == 1, reported  # one plan, the one of the files the play writes
    plan = reported[0]
    assert (plan["before"]["enforce"], plan["after"]["enforce"]) == (True, False)
    assert (plan["before"]["active"], plan["after"]["active"]) == ("base", "app")
    assert task_result(check, "Judge the staged state")["diff"]["after"] == plan["after"]

    rc, real = play(book, home)
    assert rc == 0, failures(real)
    st = quiet_daemon.status()
    assert kernel_view(st["policies"], st["active"]["name"], st["enforce"]) == \
        kernel_view(plan["after"]["policies"], plan["after"]["active"], plan["after"]["enforce"])
    rc, again = play(book, home, "--check", "--diff")
    assert rc == 0 and not task_result(again, "Judge the staged state")["changed"]


def test_once_without_a_daemon_reads_the_state_directly(quiet_daemon: DaemonProc, home: Path,
                                                        tmp_path: Path) -> None:
    """Item 3: `iped_converge_method: once` converged, then always failed at "Read IPE state"
    (`iped status` needs the daemon, exit 3)."""
    site = quiet_daemon.site
    quiet_daemon.stop()
    emulated = tmp_path / "emulated-kernel.jsonl"  # the emulator's state between processes
    src = tmp_path / "app.pol"
    src.write_bytes(policy_text("app", "2.0.0"))
    hooked = tmp_path / "iped-with-hooks"  # the tests' entry point, which keeps the emulator's state
    hooked.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT}/tests/helpers/iped_with_hooks.py" "$@"\n')
    hooked.chmod(0o755)
    book = playbook(tmp_path / "site.yml", site, [{"src": str(src)}], active="app", method="once", command=hooked)
    rc, doc = play(book, home, **{STATE_ENV: str(emulated)})
    assert rc == 0, failures(doc)
    facts = task_result(doc, "Read IPE state")["ansible_facts"]["ipe"]
    assert facts["daemon"] is False and "no daemon" in facts["status_line"]
    assert facts["active"]["name"] == "app" and facts["in_sync"]
    rc, again = play(book, home, **{STATE_ENV: str(emulated)})
    assert rc == 0 and again["stats"]["localhost"]["changed"] == 0, failures(again)


def test_check_mode_on_a_host_without_a_configuration(quiet_daemon: DaemonProc, home: Path,
                                                      tmp_path: Path) -> None:
    """Item 4: `--check` failed on a host without iped.toml yet (the handler planned the file the
    template had not written). Now it reports the plan of the staged state and writes nothing."""
    site = quiet_daemon.site
    fresh = tmp_path / "fresh-etc-iped"
    src = tmp_path / "app.pol"
    src.write_bytes(policy_text("app", "2.0.0"))
    book = playbook(tmp_path / "site.yml", site, [{"src": str(src)}], active="app",
                    config=fresh / "iped.toml", policies_dir=fresh / "policies.d")
    rc, doc = play(book, home, "--check", "--diff")
    assert rc == 0, failures(doc)
    assert not fresh.exists()
    plan = task_result(doc, "Judge the staged state")["plan"]
    assert plan["after"]["active"] == "app" and plan["outcome"] == "would-apply"


def test_a_run_after_a_rejection_is_fixed_reports_in_sync(quiet_daemon: DaemonProc, home: Path,
                                                          tmp_path: Path) -> None:
    """Item 5: after a rejected reconcile, a run that restores the declared state got `ok` from
    ipe_state (iped exit 9) and then failed its assert: the daemon still said in_sync false with a
    drift naming a file that was gone."""
    site = quiet_daemon.site
    (site.policies / "broken.pol").write_bytes(unparsable())
    assert iped("reload", "--socket", str(site.socket)).returncode == 1
    src = tmp_path / "base.pol"
    src.write_bytes((site.policies / "base.pol").read_bytes())
    book = playbook(tmp_path / "site.yml", site, [{"src": str(src)}])
    # the configuration the role writes, in place already: the converge then has nothing to change
    rc, doc = play(book, home)
    assert rc == 0, failures(doc)
    assert not (site.policies / "broken.pol").exists()
    facts = task_result(doc, "Read IPE state")["ansible_facts"]["ipe"]
    assert facts["in_sync"] and facts["drift"] == []
    assert os.environ.get(STATE_ENV) is None


def test_a_converge_that_fails_after_the_swap_puts_the_files_back(site: Site, home: Path, tmp_path: Path) -> None:
    """The judge accepts, the files are swapped in, then the kernel refuses a write mid-apply
    (the emulator's second activation fails with EIO): the play fails, the previous files are put
    back (same digest), and the previously active policy stays active."""
    from tests.helpers.daemon import start_daemon

    site.debounce_ms = SLOW_DEBOUNCE_MS
    site.write_config()
    d = start_daemon(site, extra_env={"IPED_EMULATOR_FAULT": "active:2:EIO"})  # the 1st: base at startup
    try:
        before = tree_digest(site.config, site.policies)
        src = tmp_path / "app.pol"
        src.write_bytes(policy_text("app", "2.0.0"))
        rc, doc = play(playbook(tmp_path / "site.yml", site, [{"src": str(src)}], active="app"), home)
        assert rc != 0
        assert tree_digest(site.config, site.policies) == before
        converge = task_result(doc, "Converge now")
        assert converge.get("failed") and converge["kernel_error"], converge
        assert d.status()["active"]["name"] == "base"
    finally:
        d.stop()
