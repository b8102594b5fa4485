"""iped.trustpath: the one owner/mode rule for every path iped reads with authority."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from iped.trustpath import UntrustedPathError, check_path, read_trusted

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")


@pytest.fixture
def sticky_tmp() -> Iterator[Path]:
    """A root-owned 1777 directory, as /tmp is: reachable and writable by every user."""
    d = Path(tempfile.mkdtemp(prefix="iped-trust-", dir="/tmp"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_root_owned_chain_passes(tmp_path: Path) -> None:
    f = tmp_path / "iped.toml"
    f.write_text("x")
    f.chmod(0o644)
    assert check_path(f, "the configuration").st_ino == f.stat().st_ino
    assert read_trusted(f, "the configuration") == b"x"


def test_a_file_owned_by_another_user_is_refused_naming_the_owner(tmp_path: Path) -> None:
    f = tmp_path / "iped.toml"
    f.write_text("x")
    os.chown(f, NOBODY, -1)
    with pytest.raises(UntrustedPathError) as e:
        check_path(f, "the configuration")
    assert str(e.value).startswith(f"{f}: owned by uid 65534 (nobody), who is not root")
    assert e.value.errno == 1 and "\n" not in str(e.value)


@pytest.mark.parametrize(("mode", "who"), [(0o666, "every user"), (0o664, "group 0 (root)")])
def test_a_file_writable_by_others_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(mode)
    with pytest.raises(UntrustedPathError, match=re.escape(f"writable by {who} (mode 0{mode:o})")):
        check_path(f, "the configuration")


def test_a_directory_on_the_way_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "iped.toml").write_text("x")
    os.chown(d, NOBODY, -1)  # nobody can rename the root-owned file away and plant another
    with pytest.raises(UntrustedPathError, match=f"^{d}: owned by uid 65534"):
        check_path(d / "iped.toml", "the configuration")


def test_a_sticky_root_directory_is_fine_as_an_ancestor_only(sticky_tmp: Path) -> None:
    mine = sticky_tmp / "mine"
    mine.mkdir(mode=0o755)
    assert check_path(mine, "the state_dir")
    with pytest.raises(UntrustedPathError, match="writable by every user"):
        check_path(sticky_tmp, "the state_dir")  # as the path itself: refused


def test_an_entry_of_another_user_in_a_sticky_directory_is_refused(sticky_tmp: Path) -> None:
    theirs = sticky_tmp / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, -1)
    with pytest.raises(UntrustedPathError, match="owned by uid 65534"):
        check_path(theirs / "control.sock", "the daemon's replies")


def test_a_symlink_is_followed_and_its_target_checked(tmp_path: Path, sticky_tmp: Path) -> None:
    target = tmp_path / "real.key"
    target.write_text("k")
    target.chmod(0o600)
    link = tmp_path / "current.key"
    link.symlink_to(target)
    assert check_path(link, "the signing key", private=True).st_ino == target.stat().st_ino
    # a link another user owns in a sticky directory: they can point it elsewhere at will
    planted = sticky_tmp / "key"
    planted.symlink_to(target)
    os.chown(planted, NOBODY, -1, follow_symlinks=False)
    with pytest.raises(UntrustedPathError, match=f"^{planted}: owned by uid 65534"):
        check_path(planted, "the signing key", private=True)
    # a root link into a directory nobody owns: the target's directory is checked
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "k").write_text("k")
    (theirs / "k").chmod(0o600)
    os.chown(theirs, NOBODY, -1)
    (tmp_path / "via").symlink_to(theirs / "k")
    with pytest.raises(UntrustedPathError, match=f"^{theirs}: owned by uid 65534"):
        check_path(tmp_path / "via", "the signing key", private=True)


def test_private_refuses_any_group_or_other_access(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("k")
    key.chmod(0o640)
    with pytest.raises(UntrustedPathError, match=r"accessible by group or others \(mode 0640\)"):
        check_path(key, "the signing key", private=True)
    key.chmod(0o600)
    check_path(key, "the signing key", private=True)


def test_a_missing_component_is_the_plain_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check_path(tmp_path / "nope" / "iped.toml", "the configuration")


def test_any_owner_still_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    d = tmp_path / "textfile"
    d.mkdir(mode=0o755)
    os.chown(d, NOBODY, -1)
    check_path(d, "the Prometheus textfile dir", any_owner=True)
    d.chmod(0o777)
    with pytest.raises(UntrustedPathError, match="writable by every user"):
        check_path(d, "the Prometheus textfile dir", any_owner=True)


def test_a_link_to_dotdot_checks_the_directory_it_lands_in(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    (open_dir / "sub").mkdir(parents=True)
    open_dir.chmod(0o1777)  # fine on the way (sticky, root's), not as the path itself
    (tmp_path / "up").symlink_to("open/sub/..")  # lands in open/
    with pytest.raises(UntrustedPathError, match=f"^{open_dir}: writable by every user"):
        check_path(tmp_path / "up", "the state_dir")
