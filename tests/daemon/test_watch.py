"""Which inotify events ask for a reconcile (iped.daemon.watch): the rules alone, no inotify fd.

The watches themselves, on real directories, are tested through the loop in test_loop.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from inotify_simple import flags

from iped.daemon.watch import Change, classify, watched_dirs
from iped.settings import PolicySettings, Settings

CONFIG = Path("/etc/iped/iped.toml")
SETTINGS = Settings(policies=PolicySettings(dir=Path("/etc/iped/policies.d")), path=CONFIG)


def never_written(path: Path) -> bool:
    return False


def still_written(path: Path) -> bool:
    return True


def test_watched_dirs_are_the_dropin_dir_and_the_config_files_dir() -> None:
    assert watched_dirs(SETTINGS) == {"policies": Path("/etc/iped/policies.d"), "config": Path("/etc/iped")}
    assert watched_dirs(Settings()) == {"policies": Path("/etc/iped/policies.d")}  # built-in defaults: no file


@pytest.mark.parametrize(("mask", "name", "role", "expected"), [
    (flags.CLOSE_WRITE, "a.pol", "policies", Change("inotify", "inotify")),
    (flags.MOVED_TO, "a.p7s", "policies", Change("inotify", "inotify")),
    (flags.DELETE, "a.pol", "policies", Change("inotify", "inotify")),
    (flags.DELETE_SELF, "", "policies", Change("inotify", "inotify")),  # the directory itself
    (flags.CLOSE_WRITE, ".a.pol.swp", "policies", None),  # an editor's temporary
    (flags.CLOSE_WRITE, "a.pol.dpkg-new", "policies", None),
    (flags.CLOSE_WRITE, "iped.toml", "config", Change("config", "inotify")),
    (flags.MOVED_TO, "policies.d", "config", Change("config", "inotify")),  # the drop-in dir replaced
    (flags.CLOSE_WRITE, "other.conf", "config", None),  # a neighbour of iped.toml
    (flags.Q_OVERFLOW, "", None, Change("inotify-overflow", "overflows")),  # events lost: rescan all
    (flags.IGNORED, "", "policies", Change("inotify", None)),  # the watch went with its directory
    (flags.CLOSE_WRITE, "a.pol", None, None),  # a watch already removed
], ids=repr)
def test_classify(mask: int, name: str, role: str | None, expected: Change | None) -> None:
    directory = watched_dirs(SETTINGS).get(role or "")
    assert classify(mask, name, role, directory=directory, settings=SETTINGS, being_written=never_written) == expected


def test_a_created_file_counts_only_once_its_writer_is_done() -> None:
    """IN_CREATE of a file someone still writes waits for its IN_CLOSE_WRITE; a symlink or hard
    link (never written after creation) counts at once."""
    d = SETTINGS.policies.dir
    seen: list[Path] = []

    def written(path: Path) -> bool:
        seen.append(path)
        return True

    assert classify(flags.CREATE, "a.pol", "policies", directory=d, settings=SETTINGS, being_written=written) is None
    assert seen == [d / "a.pol"]
    assert classify(flags.CREATE, "a.pol", "policies", directory=d, settings=SETTINGS,
                    being_written=never_written) == Change("inotify", "inotify")
    assert classify(flags.CLOSE_WRITE, "a.pol", "policies", directory=d, settings=SETTINGS,
                    being_written=still_written) == Change("inotify", "inotify")  # only IN_CREATE asks


def test_without_a_config_file_no_config_event_counts() -> None:
    no_file = Settings(policies=SETTINGS.policies)
    assert classify(flags.CLOSE_WRITE, "iped.toml", "config", directory=None, settings=no_file) is None
