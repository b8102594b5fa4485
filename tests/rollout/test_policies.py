"""The declared active policy a survey or suggestion starts from: the one the daemon puts in effect."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from iped.daemon.devkey import ensure_dev_key
from iped.daemon.log import NullReporter
from iped.daemon.runtime import make_reconciler
from iped.rollout.policies import PolicySourceError, declared_active
from iped.settings import BackendKind, DaemonSettings, PolicySettings, Settings

from .streams import ALLOW_ALL, BASE


def _settings(tmp_path: Path) -> tuple[Settings, Path, Path]:
    policies, state = tmp_path / "policies.d", tmp_path / "state"
    policies.mkdir()
    settings = Settings(policies=PolicySettings(dir=policies, active="site"), daemon=DaemonSettings(state_dir=state))
    return settings, policies, state / "rolled-forward"


def test_a_policy_rolled_forward_to_a_higher_version_is_the_one_in_effect(tmp_path: Path) -> None:
    """`iped rollback` writes the rolled-forward policy to the daemon's state dir, never to the
    drop-in dir; the daemon overlays it while the drop-in dir declares a lower version."""
    settings, policies, rolled = _settings(tmp_path)
    (policies / "site.pol").write_bytes(BASE)
    assert declared_active(settings).origin == str(policies / "site.pol")  # type: ignore[union-attr]
    rolled.mkdir(parents=True)
    higher = ALLOW_ALL.replace(b"1.0.0", b"1.0.1")
    (rolled / "site.pol").write_bytes(higher)
    found = declared_active(settings)
    assert found is not None and found.origin == str(rolled / "site.pol") and found.text == higher
    # the drop-in dir catches up: its own file is in effect again
    (policies / "site.pol").write_bytes(BASE.replace(b"1.0.0", b"1.0.1"))
    assert declared_active(settings).origin == str(policies / "site.pol")  # type: ignore[union-attr]


def test_the_drop_in_dir_is_read_as_the_daemon_reads_it(tmp_path: Path) -> None:
    """A symlink is never followed and a file still open for writing is not read: neither declares
    the active policy (the daemon would refuse both too)."""
    settings, policies, _ = _settings(tmp_path)
    elsewhere = tmp_path / "elsewhere.pol"
    elsewhere.write_bytes(BASE)
    os.symlink(elsewhere, policies / "site.pol")
    with pytest.raises(PolicySourceError, match=r"no valid file .* declares policy_name=site"):
        declared_active(settings)
    os.unlink(policies / "site.pol")
    with (policies / "site.pol").open("wb") as being_written:
        being_written.write(BASE)
        being_written.flush()
        with pytest.raises(PolicySourceError, match="declares policy_name=site"):
            declared_active(settings)
    assert declared_active(settings).origin == str(policies / "site.pol")  # type: ignore[union-attr]


def _signed_settings(tmp_path: Path) -> tuple[Settings, Path, Path]:
    """Settings the daemon can act on too: a local key signs the plain-text files."""
    settings, policies, rolled = _settings(tmp_path)
    key, cert = ensure_dev_key(tmp_path / "keys")
    pol = dataclasses.replace(settings.policies, signing_key=key, signing_cert=cert)
    daemon = dataclasses.replace(settings.daemon, backend=BackendKind.EMULATOR)
    return dataclasses.replace(settings, policies=pol, daemon=daemon), policies, rolled


def _daemon_active(settings: Settings) -> Path | None:
    """The file of the active policy in the reconciler's declared state (what it plans from)."""
    found = make_reconciler(settings, NullReporter(), writes_state=False).scan().find_active()
    return None if found is None else found.source


@pytest.mark.parametrize("rolled_version", ["1.0.1", "0.9.0"])
def test_survey_and_daemon_name_one_active_file_whatever_the_rolled_forward_version(
        tmp_path: Path, rolled_version: str) -> None:
    """One answer to "which file is the active policy": a rolled-forward policy above the drop-in
    file's version is in effect for both, one below it is superseded for both."""
    settings, policies, rolled = _signed_settings(tmp_path)
    (policies / "site.pol").write_bytes(BASE)
    rolled.mkdir(parents=True)
    (rolled / "site.pol").write_bytes(ALLOW_ALL.replace(b"1.0.0", rolled_version.encode()))
    expected = rolled / "site.pol" if rolled_version == "1.0.1" else policies / "site.pol"
    assert _daemon_active(settings) == expected
    assert declared_active(settings).origin == str(expected)  # type: ignore[union-attr]


def test_a_drop_in_dir_others_can_write_declares_nothing_for_the_survey_either(tmp_path: Path) -> None:
    """The daemon takes no declaration from a directory anyone may write to (iped.trustpath); the
    survey used to read its files all the same and evaluate a policy the daemon refuses."""
    settings, policies, _ = _signed_settings(tmp_path)
    (policies / "site.pol").write_bytes(BASE)
    policies.chmod(0o777)
    assert _daemon_active(settings) is None
    with pytest.raises(PolicySourceError, match=r"declares policy_name=site; .*policies\.d: EPERM"):
        declared_active(settings)


def test_a_rolled_forward_dir_others_can_write_is_not_overlaid_for_the_survey_either(tmp_path: Path) -> None:
    """A rollback written where anyone could have written it is not taken by the daemon: the
    drop-in file stays in effect, for the survey too (it used to take the rolled-forward file)."""
    settings, policies, rolled = _signed_settings(tmp_path)
    (policies / "site.pol").write_bytes(BASE)
    rolled.mkdir(parents=True)
    (rolled / "site.pol").write_bytes(ALLOW_ALL.replace(b"1.0.0", b"1.0.1"))
    rolled.chmod(0o777)
    assert _daemon_active(settings) == policies / "site.pol"
    assert declared_active(settings).origin == str(policies / "site.pol")  # type: ignore[union-attr]
