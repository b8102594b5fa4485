"""The declared active policy a survey or suggestion starts from: the one the daemon puts in effect."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iped.rollout.policies import PolicySourceError, declared_active
from iped.settings import DaemonSettings, PolicySettings, Settings

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
