"""iped.fsutil.write_atomically: the one atomic writer (Prometheus textfiles, journal cursor, state dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from iped.fsutil import write_atomically


def test_replaces_the_file_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "iped.prom"
    target.write_text("old\n")
    write_atomically(target, "new 1\n")
    write_atomically(str(target), "newer 2\n")
    assert target.read_text() == "newer 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iped.prom"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "iped.prom"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(target, "lone surrogate \udc80\n")  # cannot be encoded: fails mid-write
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iped.prom"]


def test_a_missing_directory_is_an_oserror_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        write_atomically(tmp_path / "absent" / "iped.prom", "x\n")
    assert str(tmp_path / "absent") in str(err.value)
