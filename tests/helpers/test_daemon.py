"""The daemon helpers: a site's config loads as written, the bounded waits fail rather than hang,
and a started daemon answers on its socket."""

from __future__ import annotations

import os
import time

import pytest

from iped.config import load_settings
from iped.pkcs7 import SignatureError, verify_policy
from tests.helpers.daemon import DaemonProc, Site, clients, iped, tampered_signature, wait_child, wait_for


def test_a_site_is_a_config_the_daemon_takes(site: Site) -> None:
    settings = load_settings(site.config)
    assert settings.policies.active == "base"
    assert (site.policies / "base.pol").read_bytes().startswith(b"policy_name=base policy_version=1.0.0\n")
    site.put("next.pol", b"x")
    assert sorted(p.name for p in site.policies.iterdir()) == ["base.pol", "next.pol"]
    assert iped("check-config", "--config", os.fspath(site.config)).returncode == 0


def test_wait_for_fails_with_what_it_waited_for() -> None:
    assert wait_for(lambda: 7) == 7
    with pytest.raises(AssertionError, match="the moon"):
        wait_for(lambda: False, timeout=0.2, what="the moon")


def test_wait_child_kills_a_child_that_outlives_its_bound() -> None:
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    with pytest.raises(AssertionError, match="still running"):
        wait_child(pid, timeout=0.2)


def test_a_daemon_answers_status_and_its_clients_are_closed(daemon: DaemonProc) -> None:
    assert daemon.status()["active"]["name"] == "base"
    with clients(daemon.site.socket, 3) as conns:
        assert len(conns) == 3
    assert all(c.fileno() == -1 for c in conns)


def test_a_tampered_signature_does_not_verify(site: Site) -> None:
    with pytest.raises(SignatureError):
        verify_policy(tampered_signature(site), [site.cert.read_bytes()])
