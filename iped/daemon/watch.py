"""The daemon's inotify watches: the drop-in directory and the config file's directory, and
which of their events ask for a reconcile.

:func:`watched_dirs` and :func:`classify` are the rules, pure; :class:`Watcher` holds the
inotify fd the loop selects on, moves a watch when a config reload moved its directory, and
reads events through :func:`classify`. ``IN_Q_OVERFLOW`` (events lost) asks for a full rescan.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from iped.daemon.dropin import is_being_written, is_ignored
from iped.daemon.log import Reporter
from iped.settings import Settings


class flags:  # noqa: N801 -- inotify(7)'s IN_* bits, named as inotify_simple.flags names them
    CLOSE_WRITE = 0x8
    MOVED_FROM = 0x40
    MOVED_TO = 0x80
    CREATE = 0x100
    DELETE = 0x200
    DELETE_SELF = 0x400
    MOVE_SELF = 0x800
    Q_OVERFLOW = 0x4000
    IGNORED = 0x8000


class Event(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: str


_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


class INotify:
    """inotify(7) through libc, non-blocking and close-on-exec: what inotify_simple did here, whose
    import (ctypes.util's find_library: shutil, subprocess, tempfile, and an ``ldconfig -p`` run at
    every start) cost the daemon's start more than the rest of its watching."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc: nothing to look up
        self.fd = self._check(self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))

    def _check(self, rc: int) -> int:
        if rc == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return rc

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        return self._check(self._libc.inotify_add_watch(self.fd, os.fsencode(path), ctypes.c_uint32(mask)))

    def rm_watch(self, wd: int) -> None:
        self._check(self._libc.inotify_rm_watch(self.fd, wd))

    def read(self) -> list[Event]:
        """Every event queued now; BlockingIOError when there is none."""
        data = os.read(self.fd, 65536)
        while True:  # the rest of a queue longer than one read
            try:
                more = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            data += more
        events = []
        pos = 0
        while pos + _EVENT.size <= len(data):
            wd, mask, cookie, size = _EVENT.unpack_from(data, pos)
            pos += _EVENT.size
            name = os.fsdecode(data[pos : pos + size].rstrip(b"\0"))
            pos += size
            events.append(Event(wd, mask, cookie, name))
        return events

    def close(self) -> None:
        os.close(self.fd)


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
        self.inotify = INotify()
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
            events = self.inotify.read()
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
