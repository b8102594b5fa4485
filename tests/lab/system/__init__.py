"""The system-image lab: iped installed from its package into a real Debian trixie system.

Beside the 9p lab (the host root shared into a chroot, nothing as PID 1), this one boots what
users run: a root filesystem built with ``mmdebstrap``, systemd as PID 1, and iped installed
with ``apt install ./iped_*.deb`` from a ``.deb`` built in a trixie build chroot.

* :mod:`tests.lab.system.packages` - the ``.deb`` files (iped, an upgrade build of it, and
  python3-inotify-simple from its PyPI sdist), built with ``dpkg-buildpackage`` inside
  ``mmdebstrap``; the RPM with ``rpmbuild``;
* :mod:`tests.lab.system.image`    - the cached trixie root filesystem and, per boot, an ext4
  disk image with the kernel's modules, the checks and their systemd unit;
* :mod:`tests.lab.system.boot`     - a busybox initramfs that mounts ``/dev/vda`` and
  ``switch_root``s to systemd, QEMU with the lab's enrolled OVMF, results read back with
  ``debugfs``;
* :mod:`tests.lab.system.guest_checks` - run inside the image by a oneshot unit (stdlib only).

Everything is cached under ``<lab cache>/system`` keyed by a hash of its inputs.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.lab import LabError, cache_dir

#: per kernel series, the finished system-image run's summary lines (test_system_image fills it,
#: the lab's terminal summary prints it)
SUMMARY_KEY = pytest.StashKey[dict[str, list[str]]]()

#: The Debian release the image and the build chroot are made from.
SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
CHECKOUT = Path(__file__).resolve().parents[3]


def system_cache() -> Path:
    """``<lab cache>/system``: build chroots' output, root filesystems."""
    path = cache_dir() / "system"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tree_digest(paths: Iterable[Path], base: Path, *extra: str) -> str:
    """SHA-256 over the relative names and contents of ``paths`` (files) and ``extra`` strings."""
    digest = hashlib.sha256()
    for text in extra:
        digest.update(text.encode() + b"\0")
    for path in sorted(paths):
        digest.update(str(path.relative_to(base)).encode() + b"\0")
        digest.update(path.read_bytes() if not path.is_symlink() else str(path.readlink()).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def build_failed(log: Path, kept: Path, what: str, returncode: int) -> LabError:
    """An mmdebstrap build that failed: its log kept as ``kept``, the error with the log's tail."""
    shutil.copy2(log, kept)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    return LabError(f"{what} failed (exit {returncode}); log {kept}:\n{tail}")
