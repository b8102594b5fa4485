"""State-dir records: atomic replace, pruning to N, torn records ignored, texts kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iped.daemon.planlog import PlanLog, atomic_write


def test_records_are_numbered_newest_first_and_pruned(tmp_path: Path) -> None:
    store = PlanLog(tmp_path / "state", keep=3)
    for i in range(5):
        assert store.record({"outcome": "applied", "i": i}) == i + 1
    recs = store.recent()
    assert [r["i"] for r in recs] == [4, 3, 2]
    assert sorted(os.listdir(store.plans)) == ["0000000003.json", "0000000004.json", "0000000005.json"]
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"


def test_torn_or_foreign_files_are_skipped(tmp_path: Path) -> None:
    store = PlanLog(tmp_path, keep=5)
    store.record({"i": 1})
    (store.plans / "0000000002.json").write_text("{torn")
    (store.plans / ".0000000003.json.1.tmp").write_text("{}")
    assert [r["i"] for r in store.recent()] == [1]
    assert store.record({"i": 3}) == 3


def test_atomic_write_keeps_old_content_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, b"old")

    class BoomError(Exception):
        pass

    real_replace = os.replace

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise BoomError

    os.replace = failing_replace  # type: ignore[assignment]
    try:
        with pytest.raises(BoomError):
            atomic_write(target, b"new")
    finally:
        os.replace = real_replace
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.json"]  # the temp file was cleaned up
    atomic_write(target, b"new", 0o640)
    assert target.read_bytes() == b"new" and (target.stat().st_mode & 0o777) == 0o640


def test_texts_are_content_addressed(tmp_path: Path) -> None:
    store = PlanLog(tmp_path)
    store.save_text("ab" * 32, b"policy")
    assert store.load_text("ab" * 32) == b"policy"
    assert store.load_text("cd" * 32) is None
