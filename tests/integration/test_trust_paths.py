"""Issue 24 items 2 and 3 and the general rule: every path iped reads with authority (the config,
the drop-in dir and its files, the state_dir, the signing key and certificate, the trust anchors,
the Prometheus textfile dir) is checked for owner and mode before use; the signing key under one
rule in ``iped sign``, ``check-config``, the daemon and ``rollback`` (issue 20 defect 6)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from iped.cli import main
from iped.config import ConfigError, load_settings
from iped.daemon import runtime, service
from iped.daemon.devkey import ensure_dev_key
from iped.daemon.reconcile import Reconciler
from iped.daemon.rollback import RollbackError
from iped.errors import UserError
from tests.helpers.daemon import RecordingReporter, Site, make_site
from tests.helpers.policies import policy_text

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root (to hand paths to another user) and setpriv")


@pytest.fixture
def own_site(tmp_path: Path) -> Site:
    """A site with its own signing key (the tests change the key's mode)."""
    (tmp_path / "site").mkdir()
    return make_site(tmp_path / "site", ensure_dev_key(tmp_path / "keys"))


@pytest.fixture
def reachable_site(tmp_path: Path) -> Iterator[Site]:
    """A site under a root-owned 1777 directory (as /tmp is), so that nobody can reach it."""
    top = Path(tempfile.mkdtemp(prefix="iped-trust-", dir="/tmp"))
    top.chmod(0o1777)
    root = top / "site"
    root.mkdir(mode=0o755)
    try:
        yield make_site(root, ensure_dev_key(tmp_path / "keys"))
    finally:
        shutil.rmtree(top, ignore_errors=True)


def reconciler(site: Site) -> Reconciler:
    return runtime.make_reconciler(load_settings(site.config), RecordingReporter())


def check_config(site: Site, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["check-config", "--config", str(site.config)])
    return code, capsys.readouterr().err


# -- the signing key: one rule everywhere (issue 24 item 3, issue 20 defect 6) --------------

def test_check_config_refuses_a_signing_key_others_can_read(own_site: Site,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    own_site.key.chmod(0o644)
    code, err = check_config(own_site, capsys)
    assert code == 1
    assert (f"{own_site.config}:5: policies.signing_key: {own_site.key}: private key is accessible by group or "
            f"others (mode 0644); refusing to use it (hint: chmod 600 {own_site.key})") in err


def test_the_daemon_does_not_sign_with_a_key_others_can_read(own_site: Site) -> None:
    rec = reconciler(own_site)
    own_site.key.chmod(0o644)
    record = rec.reconcile("startup")
    assert record.outcome == "rejected" and record.active_after is None
    assert [str(e) for e in record.errors] == [
        f"{own_site.key}: EPERM (Operation not permitted): private key is accessible by group or others (mode "
        f"0644); refusing to use it (hint: chmod 600 {own_site.key})"]


def test_rollback_does_not_resign_with_a_key_others_can_read(own_site: Site) -> None:
    rec = reconciler(own_site)
    assert rec.reconcile("startup").outcome == "applied"
    own_site.put("base.pol", policy_text("base", "1.0.1", "# second"))
    assert rec.reconcile("inotify").outcome == "applied"
    own_site.key.chmod(0o666)
    with pytest.raises(RollbackError, match=f"^{own_site.key}: private key is accessible by group or others "
                                            r"\(mode 0666\)"):
        service.rollback(rec, dry_run=False)
    assert not rec.plan_log.rolled_forward.exists() or not any(rec.plan_log.rolled_forward.iterdir())


def test_sign_refuses_a_key_another_user_owns(own_site: Site, tmp_path: Path) -> None:
    os.chown(own_site.key, NOBODY, -1)
    pol = tmp_path / "p.pol"
    pol.write_bytes(policy_text("p", "0.0.1"))
    code = main(["sign", "--key", str(own_site.key), "--cert", str(own_site.cert), str(pol)])
    assert code == 1 and not pol.with_name("p.pol.p7s").exists()


# -- the state_dir (issue 24 item 2) ----------------------------------------------------------

#: as nobody: move the daemon's root-owned rolled-forward/ away and plant a weaker policy there
PLANT = r"""
import os, sys
state = sys.argv[1]
os.rename(state + "/rolled-forward", state + "/old")
os.mkdir(state + "/rolled-forward")
with open(state + "/rolled-forward/base.pol", "w") as f:
    f.write("policy_name=base policy_version=9.0.0\nDEFAULT action=ALLOW\n")
"""


def test_a_state_dir_another_user_owns_cannot_weaken_the_policy(reachable_site: Site) -> None:
    rec = reconciler(reachable_site)
    assert rec.reconcile("startup").outcome == "applied"
    state = rec.plan_log.root
    rec.plan_log.rolled_forward.mkdir(mode=0o700)
    os.chown(state, NOBODY, -1)  # a hand-made state_dir handed to the wrong user
    subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c",
                    PLANT, str(state)], check=True, timeout=120)
    record = rec.reconcile("inotify")
    assert record.outcome == "rejected", record.as_dict()
    assert record.active_after is not None and str(record.active_after.version) == "1.0.0"
    assert [str(e) for e in record.errors] == [
        f"{state}: EPERM (Operation not permitted): owned by uid 65534 (nobody), who is not root: that user can "
        f"change what iped would take as declared (rolled-forward) policies (hint: chown root {state}, or remove "
        "it if you did not create it)"]
    with pytest.raises(UserError, match=f"^{state}: owned by uid 65534 \\(nobody\\)"):
        reconciler(reachable_site)  # and a daemon does not start on it


def test_a_state_dir_subdirectory_others_can_write_is_refused_at_start(own_site: Site) -> None:
    reconciler(own_site)
    texts = own_site.state / "texts"
    texts.chmod(0o777)
    with pytest.raises(UserError, match=f"^{texts}: writable by every user \\(mode 0777\\): they can change what iped "
                                       "would take as the policy texts rollback re-signs"):
        reconciler(own_site)


def test_check_config_names_a_state_dir_others_can_write(own_site: Site,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    own_site.state.mkdir(mode=0o777)
    own_site.state.chmod(0o777)
    code, err = check_config(own_site, capsys)
    assert code == 1 and f"daemon.state_dir: {own_site.state}: writable by every user (mode 0777)" in err


# -- the other authority paths ----------------------------------------------------------------

def test_a_config_file_another_user_owns_is_refused(own_site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    os.chown(own_site.config, NOBODY, -1)
    with pytest.raises(ConfigError, match=f"^{own_site.config}:1: \\(file\\): owned by uid 65534"):
        load_settings(own_site.config)
    code, err = check_config(own_site, capsys)
    assert code == 1 and f"{own_site.config}:1: (file): {own_site.config}: owned by uid 65534 (nobody)" in err


def test_a_config_in_a_directory_others_can_write_is_refused(own_site: Site) -> None:
    own_site.root.chmod(0o777)  # anyone may replace iped.toml by a file of theirs
    with pytest.raises(ConfigError, match=f":1: \\(file\\): {own_site.root}: writable by every user"):
        load_settings(own_site.config)


def test_a_drop_in_dir_another_user_owns_declares_nothing(reachable_site: Site) -> None:
    rec = reconciler(reachable_site)
    os.chown(reachable_site.policies, NOBODY, -1)
    record = rec.reconcile("startup")
    assert record.outcome == "rejected" and record.active_after is None
    assert str(record.errors[0]) == (
        f"{reachable_site.policies}: EPERM (Operation not permitted): owned by uid 65534 (nobody), who is not root: "
        f"that user can change what iped would take as declared policies (hint: chown root "
        f"{reachable_site.policies}, or remove it if you did not create it)")


@pytest.mark.parametrize("change", ["chown", "chmod"])
def test_a_drop_in_file_another_user_can_change_is_not_a_declaration(own_site: Site, change: str) -> None:
    rec = reconciler(own_site)
    path = own_site.policies / "base.pol"
    if change == "chown":
        os.chown(path, NOBODY, -1)
    else:
        path.chmod(0o646)
    record = rec.reconcile("startup")
    assert record.outcome == "rejected" and record.active_after is None
    said = "owned by uid 65534 (nobody)" if change == "chown" else "writable by every user (mode 0646)"
    assert str(record.errors[0]).startswith(f"{path}: EPERM (Operation not permitted): {said}")


def test_a_trust_anchor_others_can_write_is_refused(own_site: Site, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    anchor = tmp_path / "anchor.crt"
    anchor.write_bytes(own_site.cert.read_bytes())
    anchor.chmod(0o666)
    own_site.extra = ""
    own_site.config.write_text(own_site.config.read_text().replace(
        "[policies]\n", f'[policies]\ntrust_anchors = ["{anchor}"]\n'))
    code, err = check_config(own_site, capsys)
    assert code == 1 and f"policies.trust_anchors: {anchor}: writable by every user (mode 0666)" in err
    with pytest.raises(UserError, match=f"^{anchor}: writable by every user"):
        reconciler(own_site)  # the emulator's keyring is built from the anchors at start


def test_a_prometheus_textfile_dir_others_can_write_is_refused(own_site: Site, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    prom = tmp_path / "textfile"
    prom.mkdir()
    os.chown(prom, NOBODY, -1)  # the collector's own user may own it ...
    own_site.config.write_text(own_site.config.read_text() + f'prometheus_textfile = "{prom}/iped.prom"\n')
    reconciler(own_site)
    prom.chmod(0o777)  # ... but no one else may write there
    code, err = check_config(own_site, capsys)
    assert code == 1 and f"audit.prometheus_textfile: {prom}: writable by every user (mode 0777)" in err
    with pytest.raises(UserError, match=f"^{prom}: writable by every user"):
        reconciler(own_site)


def test_the_daemon_does_not_start_on_a_state_dir_others_can_write(own_site: Site) -> None:
    from tests.helpers.daemon import iped

    own_site.state.mkdir()
    own_site.state.chmod(0o777)
    r = iped("daemon", "--config", str(own_site.config), timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr == (f"iped: error: {own_site.state}: writable by every user (mode 0777): they can change what "
                        f"iped would take as the state_dir (hint: chmod go-w {own_site.state})\n")
    assert not own_site.socket.exists() and not any((own_site.state / "plans").iterdir())
