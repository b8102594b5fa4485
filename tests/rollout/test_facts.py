"""Resolvers: a record's file, looked up on this host (checked against s_id and inode) or in facts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iped.rollout.engine import device_facts
from iped.rollout.facts import LiveResolver, load_facts


def test_live_file_is_resolved_with_this_hosts_facts(tmp_path: Path) -> None:
    f = tmp_path / "prog"
    f.write_bytes(b"#!/bin/sh\n")
    st = f.stat()
    dev = device_facts(st.st_dev).dev
    got = LiveResolver().resolve(str(f), dev, st.st_ino)
    assert got.problem is None and got.info is not None
    assert (got.info.path, got.info.dev, got.info.ino) == (str(f), dev, st.st_ino)
    assert not got.info.boot_verified and got.info.fsverity_digest is None


def test_replaced_or_gone_file_is_a_problem_not_a_guess(tmp_path: Path) -> None:
    f = tmp_path / "prog"
    f.write_bytes(b"x")
    st = f.stat()
    dev = device_facts(st.st_dev).dev
    resolver = LiveResolver()
    assert "now inode" in (resolver.resolve(str(f), dev, st.st_ino + 1).problem or "")
    assert "now on" in (resolver.resolve(str(f), "dm-7", st.st_ino).problem or "")
    os.unlink(f)
    assert "No such file" in (resolver.resolve(str(f), dev, st.st_ino).problem or "")


def test_initramfs_and_no_file() -> None:
    resolver = LiveResolver()
    init = resolver.resolve("/bin/busybox", "rootfs", 15)
    assert init.info is not None and init.info.boot_verified and init.problem is None
    anon = resolver.resolve(None, None, None)
    assert anon.info is None and anon.problem is None


def test_facts_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "f.json"
    bad.write_text('{"/x": {"fsverity_digest": "sha256"}}')
    with pytest.raises(ValueError, match=r"f\.json: /x: fsverity_digest: expected ALG:HEX"):
        load_facts(str(bad))
    bad.write_text("[1]")
    with pytest.raises(ValueError, match="expected an object"):
        load_facts(str(bad))
