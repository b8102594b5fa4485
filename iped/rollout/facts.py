"""Which IPE properties does the file an audit record names have? Resolvers answer per record.

A 1420 record names a file by ``path``, ``dev`` (the superblock's s_id) and ``ino``; the
properties IPE evaluated (initramfs, dm-verity, fs-verity) are not in it. A resolver finds them:

* :class:`LiveResolver` reads them on this host with the discovery code, and refuses a file that
  is gone or was replaced since (other s_id or inode): the record is about a file that no longer
  exists, and evaluating whatever now sits at that path would be a guess. ``dev=rootfs`` is the
  initramfs superblock (IPE flags it at ``initramfs_populated``), gone after switch_root: such a
  file is boot_verified and has no other property.
* :class:`FactsResolver` serves recorded facts (the lab corpus, tests, a shadow run elsewhere).

A record without a file (``path=? dev=? ino=?``: anonymous memory, kernel_load_data) resolves
to ``None`` facts and no problem: the kernel evaluates such an access with no file either.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from iped.rollout import engine
from iped.rollout.engine import FileInfo

#: the s_id of the initramfs superblock (the rootfs IPE marks as boot_verified)
INITRAMFS_DEV = "rootfs"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A file's facts, or why they cannot be had (``problem``); both None: no file (anonymous)."""

    info: FileInfo | None
    problem: str | None = None


class Resolver(Protocol):
    def resolve(self, path: str | None, dev: str | None, ino: int | None) -> Resolved: ...


def file_info_of_fd(fd: int, path: str, devices: dict[int, engine.DeviceFacts]) -> tuple[FileInfo, int]:
    """The FileInfo of an open file (``devices`` caches the per-superblock facts) and its st_dev."""
    st = os.fstat(fd)
    dev = devices.get(st.st_dev)
    if dev is None:
        dev = devices[st.st_dev] = engine.device_facts(st.st_dev)
    fsv, fsv_signed = engine.fsverity_of(fd)
    info = engine.FileInfo(
        path, dev.dev, st.st_ino, dmverity_roothash=dev.dmverity_roothash,
        dmverity_signature=dev.dmverity_signature, fsverity_digest=fsv, fsverity_signature=fsv_signed,
    )  # fmt: skip
    return info, st.st_dev


class LiveResolver:
    """Facts from this host, checked against the record's s_id and inode (cached per file)."""

    def __init__(self) -> None:
        self._devices: dict[int, engine.DeviceFacts] = {}
        self._cache: dict[tuple[str | None, str | None, int | None], Resolved] = {}

    def resolve(self, path: str | None, dev: str | None, ino: int | None) -> Resolved:
        key = (path, dev, ino)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._resolve(path, dev, ino)
        return hit

    def _resolve(self, path: str | None, dev: str | None, ino: int | None) -> Resolved:
        if path is None:
            return Resolved(None)
        if dev == INITRAMFS_DEV:
            return Resolved(engine.FileInfo(path, dev, ino or 0, boot_verified=True))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            return Resolved(None, f"cannot open it now: {os.strerror(e.errno or 0)}")
        try:
            info, _ = file_info_of_fd(fd, path, self._devices)
        except OSError as e:
            return Resolved(None, f"cannot read its properties: {os.strerror(e.errno or 0)}")
        finally:
            os.close(fd)
        if dev is not None and info.dev != dev:
            return Resolved(None, f"replaced since: now on {info.dev}, the record says {dev}")
        if ino is not None and info.ino != ino:
            return Resolved(None, f"replaced since: now inode {info.ino}, the record says {ino}")
        return Resolved(info)


class FactsResolver:
    """Facts recorded elsewhere, by path; a path it does not know is a problem, not a guess."""

    def __init__(self, files: Mapping[str, FileInfo]) -> None:
        self.files = dict(files)

    def resolve(self, path: str | None, dev: str | None, ino: int | None) -> Resolved:
        if path is None:
            return Resolved(None)
        info = self.files.get(path)
        if info is None:
            return Resolved(None, "no recorded facts for this path")
        return Resolved(info)


def _digest(value: object, where: str) -> tuple[str, bytes] | None:
    if value is None:
        return None
    alg, sep, hexd = str(value).partition(":")
    try:
        if not sep:
            raise ValueError
        return alg, bytes.fromhex(hexd)
    except ValueError:
        raise ValueError(f"{where}: expected ALG:HEX, got {value!r}") from None


def load_facts(path: str) -> FactsResolver:
    """A :class:`FactsResolver` from a JSON file ``{PATH: {dev, ino, boot_verified,
    dmverity_roothash: "ALG:HEX", dmverity_signature, fsverity_digest: "ALG:HEX",
    fsverity_signature}}`` (facts recorded on another host, or by the lab).

    Raises OSError (unreadable), ValueError (not such a JSON object; names the path and key).
    """
    import json

    with open(path, encoding="utf-8") as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected an object mapping file paths to their facts")
    files = {}
    for file, f in doc.items():
        if not isinstance(f, dict):
            raise ValueError(f"{path}: {file}: expected an object of facts")
        files[file] = engine.FileInfo(
            file, str(f.get("dev", "?")), int(f.get("ino", 0)),
            boot_verified=bool(f.get("boot_verified", False)),
            dmverity_roothash=_digest(f.get("dmverity_roothash"), f"{path}: {file}: dmverity_roothash"),
            dmverity_signature=bool(f.get("dmverity_signature", False)),
            fsverity_digest=_digest(f.get("fsverity_digest"), f"{path}: {file}: fsverity_digest"),
            fsverity_signature=bool(f.get("fsverity_signature", False)),
        )  # fmt: skip
    return FactsResolver(files)
