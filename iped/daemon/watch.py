"""The daemon's inotify watches: the drop-in directory and the config file's directory, and
which of their events ask for a reconcile.

:func:`watched_dirs` and :func:`classify` are the rules, pure; :class:`Watcher` holds the
inotify fd the loop selects on, moves a watch when a config reload moved its directory, and
reads events through :func:`classify`. ``IN_Q_OVERFLOW`` (events lost) asks for a full rescan.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inotify_simple import INotify, flags

from iped.daemon.dropin import is_being_written, is_ignored
from iped.daemon.log import Reporter
from iped.settings import Settings

#: A file is declared once it is complete: closed after writing, or renamed in. IN_CREATE (and
#: IN_MODIFY) would reconcile over a file its writer still holds; IN_CREATE is acted on only for
#: names that are not written (symlinks, FIFOs, hard links), see :func:`classify`.
MASK = (flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE | flags.CREATE
        | flags.DELETE_SELF | flags.MOVE_SELF)


def watched_dirs(settings: Settings) -> dict[str, Path]:
    """role -> the directory to watch: ``policies`` (the drop-in dir) and ``config`` (the config
    file's directory, where an edit or a rename of iped.toml shows)."""
    dirs = {"policies": settings.policies.dir}
    if settings.path is not None:
        dirs["config"] = settings.path.parent
    return dirs


@dataclass(frozen=True, slots=True)
class Change:
    """An event that asks for a reconcile: its ``trigger``, and the loop's event counter it counts
    in (``inotify``, ``overflows``; None: counted nowhere)."""

    trigger: str
    counter: str | None


def classify(mask: int, name: str, role: str | None, *, directory: Path | None, settings: Settings,
             being_written: Callable[[Path], bool] = is_being_written) -> Change | None:
    """The reconcile one event of the watch ``role`` (on ``directory``) asks for, or None.

    A just-created regular file someone still writes is not complete (its IN_CLOSE_WRITE
    follows); a symlink, FIFO, directory, a hard link to a closed file or an O_TMPFILE linked in
    is never written after creation, so the scan should see it now (``being_written`` tells).
    """
    if mask & flags.Q_OVERFLOW:
        return Change("inotify-overflow", "overflows")
    if mask & flags.IGNORED:  # the watch is gone (its directory removed or moved): rescan
        return Change("inotify", None)
    if mask & flags.CREATE and directory is not None and name and being_written(directory / name):
        return None
    if role == "policies" and (not name or not is_ignored(name)):
        return Change("inotify", "inotify")
    if role == "config" and settings.path is not None and name in (settings.path.name, settings.policies.dir.name):
        return Change("config", "inotify")
    return None


class Watcher:
    """The inotify fd and its watches (wd -> role, role -> directory)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.inotify = INotify(nonblocking=True)
        self.watches: dict[int, str] = {}
        self.watched: dict[str, Path] = {}

    def fileno(self) -> int:
        return int(self.inotify.fileno())

    def watch(self, settings: Settings) -> None:
        """Watch what ``settings`` names; a directory that moved (config reload) is unwatched
        and its new place watched."""
        for role, d in watched_dirs(settings).items():
            wd = next((w for w, r in self.watches.items() if r == role), None)
            if wd is not None:
                if self.watched.get(role) == d:
                    continue
                self.watches.pop(wd)
                with contextlib.suppress(OSError):  # already gone with its directory
                    self.inotify.rm_watch(wd)
            try:
                self.watches[self.inotify.add_watch(os.fspath(d), MASK)] = role
                self.watched[role] = d
            except OSError as e:
                self.reporter.log("warning", f"cannot watch {d}: {e.strerror}; changes there need 'iped reload'")

    def read(self, settings: Settings) -> list[Change]:
        """The changes among the events pending now (none: nothing to read)."""
        try:
            events = self.inotify.read(timeout=0)
        except BlockingIOError:
            return []
        out = []
        for ev in events:
            role = self.watches.get(ev.wd)
            if ev.mask & flags.IGNORED:
                self.watches.pop(ev.wd, None)
            change = classify(ev.mask, ev.name, role, directory=self.watched.get(role or ""), settings=settings)
            if change is not None:
                out.append(change)
        return out

    def close(self) -> None:
        self.inotify.close()
