"""iped.fsutil.write_atomically: the one atomic writer (textfiles, journal cursor, state dir, `iped sign`)."""

from __future__ import annotations

import os
import stat
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


def test_a_symlink_planted_at_the_temporary_name_is_never_written_through(tmp_path: Path) -> None:
    """In a directory others can write (a textfile collector's), a symlink waiting at the
    predictable temporary name must not redirect the write."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "iped.prom"
    (tmp_path / f".iped.prom.{os.getpid()}.tmp").symlink_to(victim)
    write_atomically(target, "metrics\n")
    assert victim.read_text() == "precious\n" and not victim.is_symlink()
    assert target.read_text() == "metrics\n" and not target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iped.prom", "victim"]


def test_mode_is_less_the_umask_unless_exact(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomically(tmp_path / "private", b"x", 0o644)
        write_atomically(tmp_path / "public", b"x", 0o644, exact_mode=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "public").stat().st_mode) == 0o644
