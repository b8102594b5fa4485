"""The initramfs copy: which blob the initramfs-tools hook may carry, and what the initramfs did.

Where PID 1 has no IPE loader (systemd < 257, Debian 12), the initramfs activates the policy
before ``switch_root`` (docs/boot.md). The daemon keeps ``[boot] initramfs_dir/<active>.p7b``
equal to the kernel's active blob (:func:`iped.daemon.bootcopy.sync`, the same writer as PID 1's
copy); ``iped-initramfs.path`` then runs ``update-initramfs``, whose hook
(``initramfs-tools/hooks/iped``) asks :func:`blobs_to_ship` what to put into the image. The
script in the image (``scripts/init-bottom/iped``) writes :data:`iped.paths.INITRAMFS_RECORD`,
which :func:`read_record` parses for ``iped boot-check``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from iped.backend import Backend
from iped.daemon.actual import read_actual
from iped.daemon.bootcopy import SUFFIX, copy_path
from iped.settings import BootSettings

#: the init-bottom script writes a blob with one ``dd bs=4194304 count=1`` (klibc's dd: one read,
#: one write, and the kernel parses each write as a whole policy): a larger blob would reach the
#: kernel cut short, so it is refused here, before it is shipped
MAX_BLOB = 4194304


class RefusedError(Exception):
    """The initramfs copy is not safe to ship; the hook fails and the old initramfs stays."""


@dataclass(frozen=True, slots=True)
class Blob:
    """One blob the hook copies into the initramfs: policy name, file, sha256."""

    name: str
    path: Path
    sha256: str


def blobs_to_ship(settings: BootSettings, backend: Backend | None) -> tuple[list[Blob], str]:
    """The blobs of ``initramfs_dir`` the initramfs may activate, and a note for the hook's output.

    ``backend``: the running kernel's IPE (None: no IPE here, e.g. an image built in a chroot).
    Raises :class:`RefusedError` for anything that could make the next boot weaker or lower: a
    setting combination that freezes PID 1, more than one ``*.p7b``, a symlink or a file others can
    write, or, when the kernel has IPE, a blob that is not exactly the one it holds active.
    """
    if not settings.initramfs:
        return [], "[boot] initramfs is off: no policy in the initramfs"
    if problems := settings.problems():  # iped.toml refuses these already; a hand-made Settings may not
        raise RefusedError("; ".join(f"[boot] {key}: {problem}" for key, problem in problems))
    directory = settings.initramfs_dir
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX) and not n.startswith("."))
    except FileNotFoundError:
        return [], f"{directory}: missing: no policy in the initramfs (iped has not deployed one)"
    if not names:
        return [], f"{directory}: no *{SUFFIX}: no policy in the initramfs (iped has not deployed one)"
    if len(names) > 1:  # the daemon keeps exactly one: each would be activated in turn
        raise RefusedError(f"{directory}: {len(names)} *{SUFFIX} files ({', '.join(names)}); iped keeps one")
    name = names[0][: -len(SUFFIX)]
    try:
        path = copy_path(directory, name)
    except ValueError as e:
        raise RefusedError(str(e)) from None
    blob = _read_safely(path)
    if len(blob) > MAX_BLOB:
        raise RefusedError(f"{path}: {len(blob)} bytes, over the {MAX_BLOB} the initramfs script writes in one "
                           "write(): the kernel would get it cut short")
    digest = hashlib.sha256(blob).hexdigest()
    shipped = Blob(name, path, digest)
    if backend is None:
        return [shipped], f"{path}: shipped unchecked (no IPE in the running kernel to compare with)"
    active = read_actual(backend).active
    if active is None or active.name != name or active.blob_digest != digest:
        now = f"{active.name} {active.version} sha256:{(active.blob_digest or '-')[:16]}" if active else "none"
        raise RefusedError(f"{path} (sha256:{digest[:16]}) is not the blob the kernel holds active ({now}): "
                           "not shipped; the initramfs keeps its policy")
    return [shipped], f"{path}: {name} {active.version} sha256:{digest[:16]}, the kernel's active blob"


def _read_safely(path: Path) -> bytes:
    """The file's bytes: a regular file, not a symlink, not writable by group or others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise RefusedError(f"{path}: {e.strerror or e}" + (" (a symlink)" if os.path.islink(path) else "")) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RefusedError(f"{path}: not a regular file")
        if st.st_mode & 0o022 or st.st_uid not in (0, os.geteuid()):
            raise RefusedError(f"{path}: mode {stat.S_IMODE(st.st_mode):04o} uid {st.st_uid}: others could "
                               "replace what the initramfs activates")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Activation:
    """One line of the initramfs record: what the script wrote and what the kernel answered."""

    name: str
    sha256: str
    load: str
    active: str

    @property
    def ok(self) -> bool:
        return self.load == "ok" and self.active == "ok"


def read_record(path: Path) -> list[Activation] | None:
    """The initramfs script's record of this boot (None: no such file, the initramfs did nothing).

    Its lines: ``policy NAME sha256=HEX load=ok|failed active=ok|failed`` and ``uptime SECONDS``.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) != 5 or words[0] != "policy":
            continue
        fields = dict(w.partition("=")[::2] for w in words[2:])
        out.append(Activation(words[1], fields.get("sha256", ""), fields.get("load", ""), fields.get("active", "")))
    return out
