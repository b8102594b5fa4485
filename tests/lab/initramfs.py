"""The lab's initramfs: static busybox, a few decompressed modules and an init script.

The guest does not boot a distribution: init mounts the *host's* root read-only over 9p and
chroots into it, so the guest runs the checkout's own venv and tests with no image to build.
Only what is needed before that mount (9p) or by tests that build block devices (loop,
dm-verity, ext4) is shipped, decompressed so busybox ``insmod`` can load it without kmod.

Debian's packages carry no ``modules.dep`` (depmod runs at install time), so dependencies
come from each module's own ``.modinfo`` (``depends=`` and ``softdep=pre:``), which is what
depmod writes there too; nothing about the order is hard-coded.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import lzma
import os
import stat
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.lab import (
    GUEST_HOME,
    GUEST_INITRAMFS,
    GUEST_OUT,
    GUEST_TMP,
    LabError,
    cache_dir,
    run,
)
from tests.lab.kernels import Kernel

BUSYBOX = Path("/bin/busybox")
#: Modules the guest needs; their dependencies are added automatically.
REQUIRED_MODULES: tuple[str, ...] = (
    "netfs", "9pnet", "9pnet_virtio", "9p", "dm-mod", "dm-bufio", "dm-verity", "ext4", "loop",
)
#: Name of the guest command script in the results dir, written by :mod:`tests.lab.vm`.
COMMAND_SCRIPT = ".guest-cmd.sh"
#: Bump when the layout or init script changes, to invalidate cached images.
_FORMAT = "4"

INIT_SCRIPT = f"""#!/bin/busybox sh
# iped lab init: mount the host root (9p, ro) and the results dir (9p, rw), chroot, run
# the command written by the host, power off. Progress goes to the serial console.
/bin/busybox --install -s /bin
export PATH=/bin
say() {{ echo "iped-lab: $*"; }}
die() {{ say "FATAL: $*"; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
while read -r m; do
    insmod "/lib/iped-lab/modules/$m.ko" || say "insmod $m failed"
done < /lib/iped-lab/modules.order
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro,cache=loose" host /host || die "cannot mount the host root over 9p"
mount -t 9p -o "$opts" out /out || die "cannot mount the results dir over 9p"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts
mount -t tmpfs tmpfs /host/dev/shm
mount -t securityfs securityfs /host/sys/kernel/security
mount -t tmpfs -o mode=0755 tmpfs /host/run
mkdir -p /host{GUEST_OUT} /host{GUEST_INITRAMFS} /host{GUEST_TMP} /host{GUEST_HOME}
chmod 1777 /host{GUEST_TMP}
mount --bind /out /host{GUEST_OUT}
mount --bind / /host{GUEST_INITRAMFS}
say "running the guest command (kernel uptime $(cut -d' ' -f1 /proc/uptime) s)"
chroot /host /bin/sh {GUEST_OUT}/{COMMAND_SCRIPT} > /out/guest.log 2>&1
echo $? > /out/guest-rc
sync
say "guest command exited with $(cat /out/guest-rc)"
poweroff -f
"""


@dataclass(frozen=True)
class Initramfs:
    """A built image and the modules it loads, in load order."""

    path: Path
    modules: tuple[str, ...]


def build(kernel: Kernel, extra_modules: Sequence[str] = ()) -> Initramfs:
    """The initramfs for ``kernel`` (cached: same kernel + modules + script = same file)."""
    if not BUSYBOX.is_file():
        raise LabError(f"{BUSYBOX} is missing: install busybox-static (packaging/dev.sh setup)")
    index = ModuleIndex(kernel.modules_dir)
    order = index.resolve([*REQUIRED_MODULES, *extra_modules])
    key = hashlib.sha256("\0".join([_FORMAT, kernel.release, kernel.version, INIT_SCRIPT, *order]).encode())
    key.update(BUSYBOX.read_bytes())
    out_dir = cache_dir() / "initramfs"
    out_dir.mkdir(exist_ok=True)
    target = out_dir / f"{kernel.release}-{key.hexdigest()[:16]}.cpio"
    if not target.is_file():
        for old in out_dir.glob(f"{kernel.release}-*.cpio"):
            old.unlink()
        archive = Cpio()
        for d in ("bin", "dev", "proc", "sys", "host", "out", "run", "tmp", "lib",
                  "lib/iped-lab", "lib/iped-lab/modules"):
            archive.directory(d)
        archive.device("dev/console", 5, 1)
        archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        archive.file("init", INIT_SCRIPT.encode(), 0o755)
        archive.file("lib/iped-lab/modules.order", "".join(f"{m}\n" for m in order).encode(), 0o644)
        for name in order:
            archive.file(f"lib/iped-lab/modules/{name}.ko", decompress(index.path(name)), 0o644)
        fd, name = tempfile.mkstemp(dir=out_dir, suffix=".tmp")  # private: builds may race
        with os.fdopen(fd, "wb") as fh:
            fh.write(archive.finish())
        os.chmod(name, 0o644)
        Path(name).replace(target)
    return Initramfs(path=target, modules=tuple(order))


# --------------------------------------------------------------------------- modules


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _module_name(path: Path) -> str:
    return _norm(path.name.split(".ko")[0])


class ModuleIndex:
    """Modules of one kernel tree by name, plus what is built in."""

    def __init__(self, modules_dir: Path) -> None:
        self._files = {_module_name(p): p for p in sorted((modules_dir / "kernel").rglob("*.ko*"))}
        builtin_list = modules_dir / "modules.builtin"
        self._builtin = (
            {_module_name(Path(ln)) for ln in builtin_list.read_text().split()} if builtin_list.is_file() else set()
        )
        self._builtin_aliases: set[str] = set()
        builtin_info = modules_dir / "modules.builtin.modinfo"
        if builtin_info.is_file():
            for entry in builtin_info.read_bytes().split(b"\0"):
                _, _, rest = entry.decode(errors="replace").partition(".")
                if rest.startswith("alias="):
                    self._builtin_aliases.add(rest[len("alias="):])
        self._info: dict[str, dict[str, list[str]]] = {}

    def path(self, name: str) -> Path:
        return self._files[_norm(name)]

    def resolve(self, wanted: Iterable[str]) -> list[str]:
        """Loadable modules for ``wanted`` in dependency order (built-in ones dropped)."""
        order: list[str] = []
        missing: list[str] = []

        def visit(name: str, stack: tuple[str, ...]) -> None:
            name = _norm(name)
            if name in order or name in self._builtin or name in stack:
                return
            if name not in self._files:
                missing.append(name)
                return
            info = self._modinfo(name)
            for soft in _softdeps_pre(info.get("softdep", [])):
                provider = self._provider(soft)
                if provider is not None:
                    visit(provider, (*stack, name))
            for dep in ",".join(info.get("depends", [])).split(","):
                if dep:
                    visit(dep, (*stack, name))
            order.append(name)

        for name in wanted:
            visit(name, ())
        if missing:
            raise LabError(f"modules not found in {next(iter(self._files.values()), '?')}: {', '.join(missing)}")
        return order

    def _modinfo(self, name: str) -> dict[str, list[str]]:
        if name not in self._info:
            info: dict[str, list[str]] = {}
            for key, value in elf_modinfo(decompress(self._files[name])):
                info.setdefault(key, []).append(value)
            self._info[name] = info
        return self._info[name]

    def _provider(self, wanted: str) -> str | None:
        """Module providing a soft dependency (a module name or an alias such as crypto-crc32c).

        ``None`` when it is built in or absent: soft dependencies are optional by definition.
        """
        if _norm(wanted) in self._files:
            return _norm(wanted)
        if _norm(wanted) in self._builtin or wanted in self._builtin_aliases:
            return None
        # Aliases are only in .modinfo: look where providers usually live before scanning all.
        first = ("/kernel/crypto/", "/kernel/arch/", "/kernel/lib/")
        names = sorted(self._files, key=lambda n: (not any(p in str(self._files[n]) for p in first), n))
        for name in names:
            if any(fnmatch.fnmatchcase(wanted, a) for a in self._modinfo(name).get("alias", [])):
                return name
        return None


def _softdeps_pre(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        section = ""
        for token in value.split():
            if token in ("pre:", "post:"):
                section = token
            elif section == "pre:":
                out.append(token)
    return out


def elf_modinfo(image: bytes) -> list[tuple[str, str]]:
    """``key=value`` pairs of a kernel module's ``.modinfo`` section (ELF64 little-endian)."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise LabError("not a little-endian ELF64 kernel module")
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", image, shoff + i * shentsize) for i in range(shnum)]
    strtab = sections[shstrndx][4]
    for name_off, _type, _flags, _addr, offset, size in sections:
        start = strtab + name_off
        if image[start:image.index(b"\0", start)] == b".modinfo":
            fields = image[offset:offset + size].split(b"\0")
            pairs = (f.decode(errors="replace").partition("=") for f in fields if b"=" in f)
            return [(k, v) for k, _, v in pairs]
    return []


def decompress(path: Path) -> bytes:
    """A module's ELF image, whichever compression Debian used (.ko.xz today, .zst/.gz maybe)."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "module.ko"
            run(["zstd", "-d", "-q", "-o", out, path], what=f"decompressing {path.name}")
            return out.read_bytes()
    if path.name.endswith(".ko"):
        return data
    raise LabError(f"unknown module compression: {path}")


# --------------------------------------------------------------------------- cpio


class Cpio:
    """A minimal ``newc`` archive writer: directories, regular files, one device node."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
                  rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        self._chunks += [header, encoded, _pad(len(header) + len(encoded)), data, _pad(len(data))]

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, perm: int) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._chunks)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)
