"""Plan records in the state dir, written atomically (temp file, fsync, rename, fsync dir).

Each reconcile leaves one JSON record in ``<state_dir>/plans/``; only the newest ``keep`` stay.
The policy texts that were deployed are kept content-addressed in ``<state_dir>/texts/`` so
``iped rollback`` can roll forward to an earlier content. Records are history, not truth: the
daemon always re-derives the plan from the kernel and the declared files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

_RECORD = re.compile(r"^(\d{10})\.json$")


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class PlanLog:
    """The plan records and deployed policy texts in the daemon's ``state_dir``."""

    def __init__(self, state_dir: Path, keep: int = 20) -> None:
        self.root = state_dir
        self.plans = state_dir / "plans"
        self.texts = state_dir / "texts"
        self.keep = keep

    def ensure(self) -> None:
        for d in (self.root, self.plans, self.texts):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _ids(self) -> list[int]:
        try:
            return sorted(int(m.group(1)) for n in os.listdir(self.plans) if (m := _RECORD.match(n)))
        except FileNotFoundError:
            return []

    def record(self, record: dict[str, Any]) -> int:
        """Keep one plan record; returns its sequence number. Prunes to the newest ``keep``."""
        self.ensure()
        ids = self._ids()
        seq = (ids[-1] + 1) if ids else 1
        record = {"seq": seq, **record}
        atomic_write(self.plans / f"{seq:010d}.json", json.dumps(record, indent=1, sort_keys=True).encode())
        for old in [*ids, seq][: -self.keep]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.plans / f"{old:010d}.json")
        return seq

    def recent(self, n: int | None = None) -> list[dict[str, Any]]:
        """Newest first; unreadable or torn records (there should be none) are skipped."""
        out: list[dict[str, Any]] = []
        for seq in reversed(self._ids()):
            if n is not None and len(out) >= n:
                break
            try:
                out.append(json.loads((self.plans / f"{seq:010d}.json").read_bytes()))
            except (OSError, ValueError):
                continue
        return out

    def save_text(self, digest: str, text: bytes) -> None:
        """Keep a deployed policy text (content-addressed by its SHA-256)."""
        path = self.texts / f"{digest}.pol"
        if not path.exists():
            self.ensure()
            atomic_write(path, text)

    def load_text(self, digest: str) -> bytes | None:
        try:
            return (self.texts / f"{digest}.pol").read_bytes()
        except FileNotFoundError:
            return None
