"""The loop's wiring, in process: real inotify, a real netlink socket, a counting backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from iped.backend import Backend
from iped.config import load_settings
from iped.daemon import runtime, service
from iped.daemon.control import OPS, ControlServer
from iped.daemon.log import NullReporter
from iped.daemon.loop import Daemon, SettingsLoader
from iped.daemon.notify import Notifier
from iped.settings import AuditSource, Settings
from tests.helpers.backends import PosingAsKernel
from tests.helpers.daemon import Site
from tests.helpers.policies import policy_text


def make_daemon(settings: Settings, backend: Backend | None = None,
                reload_settings: SettingsLoader | None = None) -> Daemon:
    rec = runtime.make_reconciler(settings, NullReporter(), backend)
    return Daemon(rec, Notifier(), NullReporter(), reload_settings)


@pytest.fixture
def daemon_of(site: Site) -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        if d.watcher is not None:
            d.watcher.close()
        if d.follower is not None:
            d.follower.close()  # type: ignore[attr-defined]


def test_netlink_follower_uses_configured_receive_buffer(site: Site, daemon_of: list[Daemon]) -> None:
    base = load_settings(site.config)
    size = 256 * 1024
    settings = dataclasses.replace(base, audit=dataclasses.replace(base.audit, source=AuditSource.NETLINK,
                                                                   receive_buffer=size))
    d = make_daemon(settings)
    daemon_of.append(d)
    d._setup_follower()
    if d.follower is None:
        pytest.skip(f"no netlink audit socket here: {d.follower_error}")
    # Linux doubles SO_RCVBUF(FORCE) for its bookkeeping and reports the doubled size
    assert d.follower.source._src.rcvbuf == 2 * size  # type: ignore[attr-defined]


def test_changing_policies_dir_moves_the_watch(site: Site, daemon_of: list[Daemon]) -> None:
    settings = load_settings(site.config)
    new_dir = site.root / "elsewhere"
    new_dir.mkdir()
    moved = dataclasses.replace(settings, policies=dataclasses.replace(settings.policies, dir=new_dir))
    d = make_daemon(settings, reload_settings=lambda: moved)
    daemon_of.append(d)
    d._setup_inotify()
    d._refresh_settings()
    assert d.settings.policies.dir == new_dir
    d._on_inotify()  # nothing pending yet
    d.pending = None
    (site.policies / "old.pol").write_bytes(policy_text("old", "1.0.0"))
    d._on_inotify()
    assert d.pending is None, "the old directory is still watched"
    (new_dir / "new.pol").write_bytes(policy_text("new", "1.0.0"))
    d._on_inotify()
    assert d.pending == "inotify", "the new directory is not watched"


def test_one_securityfs_snapshot_per_reconcile(site: Site, daemon_of: list[Daemon]) -> None:
    settings = load_settings(site.config)
    backend = PosingAsKernel(runtime.make_backend(settings))
    d = make_daemon(settings, backend)
    daemon_of.append(d)
    record = d.reload("test", record_unchanged=True).as_dict()
    assert record["outcome"] == "applied" and record["active_after"]["name"] == "base"
    assert backend.listings == 1
    assert d.ready, "the declared policy is active: ready without reading securityfs again"
    # the after-state the record claims is what securityfs holds
    assert service.status(d.rec)["active"] == record["active_after"]
    backend.listings = 0
    assert d.reload("test", record_unchanged=True).as_dict()["outcome"] == "unchanged"
    assert backend.listings == 1


def test_the_daemon_serves_every_declared_control_op_and_no_other(site: Site, daemon_of: list[Daemon]) -> None:
    d = make_daemon(load_settings(site.config))
    daemon_of.append(d)
    assert sorted(d.server.handlers) == sorted(OPS)
    with pytest.raises(ValueError, match=r"control\.OPS.*'shutdown'"):
        ControlServer(None, {**d.server.handlers, "shutdown": d.server.handlers["ping"]}, d.server.access)
