"""The fake securityfs tree has the kernel's file names and formats."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.securityfs import fake_securityfs


def test_fake_securityfs_has_the_kernels_files(tmp_path: Path) -> None:
    ipe = fake_securityfs(tmp_path, {"a": ("1.2.3", True, b"blob-a"), "b": ("0.0.1", False, b"blob-b")}, enforce=False)
    assert (ipe / "enforce").read_text() == "0\n"
    assert sorted(p.name for p in (ipe / "policies").iterdir()) == ["a", "b"]
    a = ipe / "policies" / "a"
    assert (a / "version").read_text() == "1.2.3\n" and (a / "active").read_text() == "1\n"
    assert (a / "pkcs7").read_bytes() == b"blob-a" == (a / "policy").read_bytes()
    assert (ipe / "policies" / "b" / "active").read_text() == "0\n"
