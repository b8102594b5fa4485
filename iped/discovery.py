"""What the kernel would know about a real file on this host, and dm devices coming and going.

Host I/O with no kernel counterpart to emulate (ioctls, sysfs, mountinfo, udev), so it lives
outside :mod:`iped.emulator`: it reads back from userspace the state IPE's LSM blobs hold
(hooks.c ipe_bdev_setintegrity / ipe_inode_setintegrity, eval.c build_ipe_*_ctx) and hands it to
the emulator as an :class:`~iped.emulator.types.FileInfo` (:func:`file_info_from_path`, used by
``iped explain``). :class:`DmMonitor` follows device-mapper devices through udev for the daemon's
loop (a verity device appearing can change what the active policy allows).

* ``dev`` (the superblock's s_id): the block device's kernel name (``vda1``, ``dm-0``,
  ``loop0``) via ``/sys/dev/block/MAJ:MIN``; otherwise the filesystem type from
  ``/proc/self/mountinfo`` (alloc_super() copies ``type->name``: ``tmpfs``, ``overlay``, ``9p``).
* dm-verity: when ``/sys/dev/block/MAJ:MIN/dm/name`` exists, the table is read with the
  DM_TABLE_STATUS ioctl on ``/dev/mapper/control`` (root only) and the ``verity`` target line gives
  the algorithm (argument 8) and root hash (argument 9); ``root_hash_sig_key_desc`` among the
  optional arguments means dm-verity verified a root-hash signature (the table loads only then).
* fs-verity: FS_IOC_MEASURE_VERITY gives the file digest (ENODATA: not a verity file; ENOTTY /
  EOPNOTSUPP: no fs-verity here); a built-in signature is present when FS_IOC_READ_VERITY_METADATA
  can read FS_VERITY_METADATA_TYPE_SIGNATURE (the open already verified it).
* ``boot_verified``: the caller names the initramfs superblocks by ``st_dev``.

Overlayfs is not unwrapped: the kernel evaluates the real inode (d_real_inode), this module
sees the overlay's.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iped.emulator.types import FileInfo


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


# include/uapi/linux/fsverity.h
FS_IOC_MEASURE_VERITY = _iowr(ord("f"), 134, 4)
FS_IOC_READ_VERITY_METADATA = _iowr(ord("f"), 135, 40)
FS_VERITY_METADATA_TYPE_SIGNATURE = 3
FS_VERITY_MAX_DIGEST_SIZE = 64
#: enum hash_algo names for the fs-verity algorithm numbers (FS_VERITY_HASH_ALG_*)
FSVERITY_ALGS = {1: "sha256", 2: "sha512"}

# include/uapi/linux/dm-ioctl.h
DM_IOCTL_SIZE = 312
DM_TABLE_STATUS = _iowr(0xFD, 12, DM_IOCTL_SIZE)
DM_STATUS_TABLE_FLAG = 1 << 4
DM_BUFFER_FULL_FLAG = 1 << 8
DM_VERSION = (4, 0, 0)
_DM_HEADER = struct.Struct("=3IIIIiIII Q128s129s7x")
_DM_TARGET_SPEC = struct.Struct("=QQiI16s")


@dataclass(frozen=True, slots=True)
class VerityTarget:
    """The parts of a dm-verity table line IPE sees: algorithm, root hash, signature flag."""

    algorithm: str
    root_hash: bytes
    signed: bool


def parse_verity_params(params: str) -> VerityTarget | None:
    """Parse the parameters of a ``verity`` target; None if they are not a verity table."""
    args = params.split()
    if len(args) < 10:
        return None
    try:
        root = bytes.fromhex(args[8])
    except ValueError:
        return None
    return VerityTarget(args[7], root, "root_hash_sig_key_desc" in args[10:])


def _new_encode_dev(major: int, minor: int) -> int:
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def dm_table(major: int, minor: int) -> list[tuple[str, str]]:
    """``(target_type, params)`` of each target of a device-mapper device (DM_TABLE_STATUS).

    The reply is ``struct dm_ioctl`` then, from ``data_start``, one ``struct dm_target_spec``
    per target followed by its NUL-terminated parameters; ``spec.next`` is the offset of the
    next spec from ``data_start``. A too-small buffer comes back with DM_BUFFER_FULL_FLAG.

    Raises OSError: EACCES/EPERM without CAP_SYS_ADMIN; ENOENT no /dev/mapper/control; ENXIO no
    such device.
    """
    size = 16384
    fd = os.open("/dev/mapper/control", os.O_RDWR | os.O_CLOEXEC)
    try:
        while True:
            buf = bytearray(size)
            _DM_HEADER.pack_into(
                buf, 0, *DM_VERSION, size, DM_IOCTL_SIZE, 0, 0, DM_STATUS_TABLE_FLAG, 0, 0,
                _new_encode_dev(major, minor), b"", b"",
            )  # fmt: skip
            fcntl.ioctl(fd, DM_TABLE_STATUS, buf)
            fields = _DM_HEADER.unpack_from(buf, 0)
            if not fields[7] & DM_BUFFER_FULL_FLAG or size >= 1 << 24:
                break
            size *= 4
    finally:
        os.close(fd)
    data_start, target_count = fields[4], fields[5]
    out = []
    pos = data_start
    for _ in range(target_count):
        _start, _len, _status, nxt, ttype = _DM_TARGET_SPEC.unpack_from(buf, pos)
        pstart = pos + _DM_TARGET_SPEC.size
        pend = buf.index(0, pstart)
        out.append((ttype.rstrip(b"\0").decode(), buf[pstart:pend].decode()))
        pos = data_start + nxt
    return out


def dm_verity_of(major: int, minor: int, sysfs: str = "/sys") -> VerityTarget | None:
    """The verity target backing device MAJ:MIN, or None (not dm, not verity, or unreadable)."""
    if not os.path.exists(f"{sysfs}/dev/block/{major}:{minor}/dm/name"):
        return None
    try:
        table = dm_table(major, minor)
    except OSError:
        return None
    for ttype, params in table:
        if ttype == "verity":
            return parse_verity_params(params)
    return None


def fsverity_measure(fd: int) -> tuple[str, bytes] | None:
    """FS_IOC_MEASURE_VERITY: ``(algorithm, digest)``, or None when the file is not verity here."""
    buf = bytearray(struct.pack("=HH", 0, FS_VERITY_MAX_DIGEST_SIZE) + bytes(FS_VERITY_MAX_DIGEST_SIZE))
    try:
        fcntl.ioctl(fd, FS_IOC_MEASURE_VERITY, buf)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    alg, size = struct.unpack_from("=HH", buf)
    return FSVERITY_ALGS.get(alg, f"alg{alg}"), bytes(buf[4 : 4 + size])


def fsverity_has_signature(fd: int) -> bool:
    """FS_IOC_READ_VERITY_METADATA(SIGNATURE) returns bytes: a built-in signature is attached."""
    out = ctypes.create_string_buffer(1)
    arg = bytearray(struct.pack("=QQQQQ", FS_VERITY_METADATA_TYPE_SIGNATURE, 0, 1, ctypes.addressof(out), 0))
    try:
        n = fcntl.ioctl(fd, FS_IOC_READ_VERITY_METADATA, arg)
    except OSError:
        return False
    return isinstance(n, int) and n > 0


def _mount_fstype(major: int, minor: int, mountinfo: str) -> str | None:
    want = f"{major}:{minor}"
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if left.split()[2:3] == [want] and right:
                    return right.split()[0].split(".", 1)[0]  # fuse.sshfs -> fuse
    except OSError:
        return None
    return None


def superblock_id(st_dev: int, *, sysfs: str = "/sys", mountinfo: str = "/proc/self/mountinfo") -> str:
    """The s_id the kernel prints as ``dev=``: block device name, else the filesystem type."""
    major, minor = os.major(st_dev), os.minor(st_dev)
    link = f"{sysfs}/dev/block/{major}:{minor}"
    if os.path.exists(link):
        return os.path.basename(os.path.realpath(link))
    return _mount_fstype(major, minor, mountinfo) or "?"


def file_info_from_path(path: str, *, boot_superblocks: frozenset[int] = frozenset()) -> FileInfo:
    """Build a :class:`FileInfo` for a real file. Raises OSError if it cannot be opened."""
    # here, not at the top: the daemon's udev monitor imports this module before READY, and
    # emulator.types (seven dataclasses) is none of its business
    from iped.emulator.types import FileInfo

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        fsv = fsverity_measure(fd)
        fsv_signed = fsv is not None and fsverity_has_signature(fd)
    finally:
        os.close(fd)
    verity = dm_verity_of(os.major(st.st_dev), os.minor(st.st_dev))
    return FileInfo(
        path=os.path.abspath(path),
        dev=superblock_id(st.st_dev),
        ino=st.st_ino,
        boot_verified=st.st_dev in boot_superblocks,
        dmverity_roothash=(verity.algorithm, verity.root_hash) if verity else None,
        dmverity_signature=bool(verity and verity.signed),
        fsverity_digest=fsv,
        fsverity_signature=fsv_signed,
    )


@dataclass(frozen=True, slots=True)
class DmEvent:
    """A device-mapper block device appearing, changing or going."""

    action: str
    name: str | None
    devnum: tuple[int, int]


class DmMonitor:
    """Follow dm block devices through udev without threads: put :meth:`fileno` in a selector
    and call :meth:`poll` when it is readable (or any time; it never blocks).

    Raises ImportError without pyudev, OSError without a netlink socket (unprivileged, no udev).
    """

    def __init__(self) -> None:
        import pyudev

        self._ctx = pyudev.Context()
        self._mon: Any = pyudev.Monitor.from_netlink(self._ctx, source="udev")
        self._mon.filter_by("block")
        self._mon.start()

    def fileno(self) -> int:
        return int(self._mon.fileno())

    def poll(self) -> list[DmEvent]:
        """Every queued dm event, oldest first; empty when none is waiting."""
        out = []
        while (dev := self._mon.poll(timeout=0)) is not None:
            ev = self._event(dev.action or "change", dev)
            if ev is not None:
                out.append(ev)
        return out

    @staticmethod
    def _event(action: str, dev: Any) -> DmEvent | None:
        """A DmEvent for a dm device (kernel name ``dm-N``, or udev's DM_NAME set), else None."""
        if not str(dev.sys_name or "").startswith("dm-") and "DM_NAME" not in dev.properties:
            return None
        num = dev.device_number
        return DmEvent(action, dev.properties.get("DM_NAME"), (os.major(num), os.minor(num)))

    def close(self) -> None:
        """Drop the monitor; pyudev closes the netlink socket when the Monitor is freed."""
        self._mon = None
