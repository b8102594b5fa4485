"""Plan records and rollback history in the state dir, written atomically (temp file, fsync,
rename, fsync dir).

Each reconcile leaves one JSON record in ``<state_dir>/plans/``; only the newest ``keep`` stay.
The rollback chain, ``<state_dir>/chain.json``, is apart from them: per policy name, the text
digests that were deployed, oldest first, the newest ``keep`` kept; only a deployment extends
it, so no-op reloads cannot push history out. The texts themselves are content-addressed in
``<state_dir>/texts/``, pruned to what the chain and the kept plans reference. Records are
history, not truth: the daemon always re-derives the plan from the kernel and the declared files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from iped.fsutil import write_atomically

#: the daemon's own drop-in dir under its state_dir: policies ``iped rollback`` rolled forward
ROLLED_FORWARD = "rolled-forward"

_RECORD = re.compile(r"^(\d{10})\.json$")
_TEXT = re.compile(r"^([0-9a-f]{64})\.pol$")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_TEMP = re.compile(r"^\..+\.(\d+)\.tmp$")  # fsutil.write_atomically's temp names: .<name>.<pid>.tmp


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """A state-dir file replaced atomically and durably: private by default, the directory fsynced."""
    write_atomically(path, data, mode, sync_dir=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def _parse_chains(raw: bytes) -> dict[str, list[str]] | str:
    """``chain.json``'s content, or why it is not a chain (a torn or garbled file)."""
    try:
        data = json.loads(raw)
    except ValueError as e:
        return f"not JSON: {e}"
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for name, links in data.items():
        if not isinstance(links, list) or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in links):
            return f"the links of {name!r} are not a list of SHA-256 digests"
    return data


def _digests(value: Any) -> set[str]:
    """Every ``text_digest`` in a plan record, at any depth."""
    if isinstance(value, dict):
        own = value.get("text_digest")
        found = {own} if isinstance(own, str) else set()
        return found.union(*(_digests(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_digests(v) for v in value))
    return set()


class PlanLog:
    """The plan records, the rollback chain and deployed policy texts in the daemon's ``state_dir``."""

    def __init__(self, state_dir: Path, keep: int = 20) -> None:
        self.root = state_dir
        self.plans = state_dir / "plans"
        self.texts = state_dir / "texts"
        self.chain_file = state_dir / "chain.json"
        #: policies 'iped rollback' rolled forward: the daemon's own drop-in dir, overlaid on the
        #: configured one (iped.daemon.declared.overlay_rolled_forward)
        self.rolled_forward = state_dir / ROLLED_FORWARD
        self.keep = keep
        #: ``flock`` on this file serialises writers of the state dir: concurrent ``apply --once``
        #: runs (and a daemon) each take the next sequence number and extend the chain in turn
        self.lock_file = state_dir / ".lock"
        self._lock_fd = -1
        self._lock_depth = 0
        #: what went wrong with the history and what was done about it (newest last; ``iped status``)
        self.problems: list[str] = []
        #: told each problem as it is found (the reconciler's reporter: a log line)
        self.on_problem: Callable[[str], None] | None = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the state dir's writer lock (re-entrant within this object: a second ``flock`` on
        a new descriptor of the same file would wait for the first forever)."""
        if self._lock_depth == 0:
            self.ensure()
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd = fd
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = -1

    def ensure(self) -> None:
        for d in (self.root, self.plans, self.texts):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)

    def prepare(self) -> None:
        """At start: the state dir exists and takes writes (a probe file, written as every record
        is), temp files of writers that died are gone, texts/ holds only what is referenced.
        Raises OSError, with the reason, when the dir cannot be used."""
        self.ensure()
        with self.locked():  # (concurrent starts: one writer's unlink of .probe is not another's ENOENT)
            probe = self.root / ".probe"
            atomic_write(probe, b"")
            os.unlink(probe)
            for d in (self.root, self.plans, self.texts, self.rolled_forward):
                if not d.is_dir():
                    continue
                for name in os.listdir(d):
                    m = _TEMP.match(name)
                    if m and not _pid_alive(int(m.group(1))):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(d / name)
            self.prune_texts()

    def _ids(self) -> list[int]:
        try:
            return sorted(int(m.group(1)) for n in os.listdir(self.plans) if (m := _RECORD.match(n)))
        except FileNotFoundError:
            return []

    def record(self, record: dict[str, Any]) -> int:
        """Keep one plan record; returns its sequence number. Prunes to the newest ``keep``.

        Under :meth:`locked`: without it two writers read the same last number and the second
        rename replaced the first one's record."""
        with self.locked():
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

    def save_text(self, digest: str, text: bytes) -> bool:
        """Keep a deployed policy text (content-addressed by its SHA-256); True if it was new."""
        path = self.texts / f"{digest}.pol"
        if path.exists():
            return False
        self.ensure()
        atomic_write(path, text)
        return True

    def _chains(self) -> dict[str, list[str]]:
        """The rollback chain; a corrupt ``chain.json`` is kept aside and rebuilt (:meth:`_repair_chain`).
        Raises OSError when it cannot be read (EACCES, EIO): never taken for "no history"."""
        try:
            raw = self.chain_file.read_bytes()
        except FileNotFoundError:
            return {}
        chains = _parse_chains(raw)
        return chains if isinstance(chains, dict) else self._repair_chain()

    def _repair_chain(self) -> dict[str, list[str]]:
        """Move the corrupt ``chain.json`` aside (never deleted) and rebuild the chain from the
        deployed texts in ``texts/``: each policy's texts in the order of their versions (the
        kernel only ever updates to a higher one), the newest ``keep``. Reported as a problem."""
        with self.locked():
            try:  # another writer may have repaired it meanwhile
                raw = self.chain_file.read_bytes()
            except FileNotFoundError:
                return {}
            why = _parse_chains(raw)
            if isinstance(why, dict):
                return why
            aside = self.root / f"chain.json.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
            os.replace(self.chain_file, aside)
            chains = self._chains_from_texts()
            atomic_write(self.chain_file, json.dumps(chains, indent=1, sort_keys=True).encode())
        links = sum(map(len, chains.values()))
        self._problem(f"rollback history {self.chain_file} was corrupt ({why}): kept aside as {aside}, rebuilt "
                      f"from {self.texts} ({links} texts of {len(chains)} policies, ordered by version)")
        return chains

    def _chains_from_texts(self) -> dict[str, list[str]]:
        from iped.emulator.policy_parser import PolicyError, name_str, parse_policy

        found: dict[str, list[tuple[int, float, str]]] = {}
        try:
            names = os.listdir(self.texts)
        except FileNotFoundError:
            return {}
        for entry in names:
            m = _TEXT.match(entry)
            if not m:
                continue
            path = self.texts / entry
            try:
                policy = parse_policy(path.read_bytes())
                mtime = path.stat().st_mtime
            except (OSError, PolicyError):
                continue  # unreadable: it cannot be rolled back to anyway
            name = name_str(policy.name)
            found.setdefault(name, []).append((policy.version.as_u64(), mtime, m.group(1)))
        return {name: [d for _, _, d in sorted(texts)][-self.keep :] for name, texts in found.items()}

    def _problem(self, message: str) -> None:
        self.problems = [*self.problems[-4:], message]
        if self.on_problem is not None:
            self.on_problem(message)

    def chain(self, name: str) -> list[str]:
        """The text digests deployed as policy ``name``, oldest first (the newest ``keep``)."""
        return self._chains().get(name, [])

    def extend_chain(self, deployed: list[tuple[str, str]]) -> None:
        """Append (name, text digest) deployments; a digest equal to the name's last is no change."""
        with self.locked():
            chains = self._chains()
            changed = False
            for name, digest in deployed:
                links = chains.setdefault(name, [])
                if not links or links[-1] != digest:
                    links.append(digest)
                    del links[: -self.keep]
                    changed = True
            if changed:
                atomic_write(self.chain_file, json.dumps(chains, indent=1, sort_keys=True).encode())

    def prune_texts(self) -> None:
        """Remove texts neither the rollback chain nor a kept plan record references."""
        with self.locked():  # (a text another writer saved is referenced once its chain is extended)
            keep = {d for links in self._chains().values() for d in links}.union(*map(_digests, self.recent()))
            try:
                names = os.listdir(self.texts)
            except FileNotFoundError:
                return
            for name in names:
                m = _TEXT.match(name)
                if m and m.group(1) not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.texts / name)

    def load_text(self, digest: str) -> bytes | None:
        try:
            return (self.texts / f"{digest}.pol").read_bytes()
        except FileNotFoundError:
            return None
