"""Property discovery on real files of this host, and the dm device monitor (iped/discovery.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import struct
import tempfile
from pathlib import Path

import pytest

from iped.discovery import (
    FS_IOC_MEASURE_VERITY,
    DmMonitor,
    dm_verity_of,
    file_info_from_path,
    fsverity_measure,
    parse_verity_params,
    superblock_id,
)

ROOT_HASH = "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076"


def _mounted_fstypes() -> dict[int, str]:
    out = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts = left.split()
            maj, mnr = map(int, parts[2].split(":"))
            out[os.makedev(maj, mnr)] = right.split()[0]
    return out


def test_regular_file_dev_and_ino_match_stat(tmp_path: Path) -> None:
    f = tmp_path / "prog"
    f.write_bytes(b"\x7fELF")
    st = os.stat(f)
    info = file_info_from_path(str(f))
    assert info.ino == st.st_ino
    assert info.path == str(f)
    link = f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    if os.path.exists(link):
        assert info.dev == os.path.basename(os.path.realpath(link))
        assert Path(f"/dev/{info.dev}").exists() or Path(f"/sys/class/block/{info.dev}").exists()
    else:
        assert info.dev == _mounted_fstypes()[st.st_dev].split(".")[0]
    assert info.boot_verified is False
    assert info.dmverity_roothash is None  # not on a dm device here (checked below)


def test_tmpfs_file_is_named_tmpfs() -> None:
    shm = Path("/dev/shm")
    if _mounted_fstypes().get(os.stat(shm).st_dev) != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs mount on this host")
    with tempfile.NamedTemporaryFile(dir=shm) as t:
        info = file_info_from_path(t.name, boot_superblocks=frozenset({os.stat(shm).st_dev}))
        assert info.dev == "tmpfs"
        assert info.ino == os.stat(t.name).st_ino
        assert info.boot_verified is True


def test_superblock_id_of_proc_is_proc() -> None:
    assert superblock_id(os.stat("/proc/self/status").st_dev) == "proc"


def test_missing_file_raises_enoent(tmp_path: Path) -> None:
    with pytest.raises(OSError) as ei:
        file_info_from_path(str(tmp_path / "nope"))
    assert ei.value.errno == errno.ENOENT


def test_non_verity_file_has_no_fsverity_digest(tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_bytes(b"data")
    fd = os.open(f, os.O_RDONLY)
    try:
        assert fsverity_measure(fd) is None
    finally:
        os.close(fd)


def test_fsverity_digest_of_a_verity_file(tmp_path: Path) -> None:
    """Enable fs-verity on a file and compare with the ioctl's digest; needs fs-verity support."""
    f = tmp_path / "v"
    f.write_bytes(b"verity me" * 1000)
    fd = os.open(f, os.O_RDONLY)
    try:
        # struct fsverity_enable_arg: version=1, hash_algorithm=1 (sha256), block_size=4096, rest 0
        arg = struct.pack("=IIIIQIIQ11Q", 1, 1, 4096, 0, 0, 0, 0, 0, *([0] * 11))
        fs_ioc_enable_verity = (1 << 30) | (128 << 16) | (ord("f") << 8) | 133
        try:
            fcntl.ioctl(fd, fs_ioc_enable_verity, arg)
        except OSError as e:
            pytest.skip(f"fs-verity cannot be enabled on {tmp_path} here: {errno.errorcode.get(e.errno or 0)}")
        got = fsverity_measure(fd)
    finally:
        os.close(fd)
    assert got is not None and got[0] == "sha256" and len(got[1]) == 32
    assert file_info_from_path(str(f)).fsverity_digest == got
    assert FS_IOC_MEASURE_VERITY == 0xC0046686


def test_verity_table_parsing() -> None:
    params = f"1 7:1 7:2 4096 4096 256 1 sha256 {ROOT_HASH} {'00' * 32}"
    assert parse_verity_params(params) == parse_verity_params(params + " 1 ignore_zero_blocks")
    t = parse_verity_params(params)
    assert t is not None and t.algorithm == "sha256" and t.root_hash.hex() == ROOT_HASH and not t.signed
    signed = parse_verity_params(params + " 2 root_hash_sig_key_desc mykey")
    assert signed is not None and signed.signed
    assert parse_verity_params("0 2048 linear 7:0 0") is None
    assert parse_verity_params(f"1 a b 4096 4096 1 1 sha256 nothex {'00' * 32}") is None


def test_non_dm_device_has_no_verity() -> None:
    st = os.stat("/")
    if os.path.exists(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/dm/name"):
        pytest.skip("/ is on a device-mapper device here")
    assert dm_verity_of(os.major(st.st_dev), os.minor(st.st_dev)) is None


def test_dm_monitor_is_pollable_without_blocking() -> None:
    try:
        mon = DmMonitor()
    except OSError as e:
        pytest.skip(f"no udev netlink socket here: {e}")
    try:
        sel = selectors.DefaultSelector()
        sel.register(mon.fileno(), selectors.EVENT_READ)
        assert isinstance(mon.poll(), list)  # returns at once even with nothing queued
        sel.close()
    finally:
        mon.close()


def test_dm_monitor_keeps_device_mapper_devices_only() -> None:
    """The filter on this host's real block devices: dm-N (or udev's DM_NAME) in, loop/vda/zram out."""
    pyudev = pytest.importorskip("pyudev")
    devices = list(pyudev.Context().list_devices(subsystem="block"))
    if not devices:
        pytest.skip("no block devices visible here")
    for dev in devices:
        is_dm = dev.sys_name.startswith("dm-") or "DM_NAME" in dev.properties
        ev = DmMonitor._event("add", dev)
        if is_dm:
            assert ev is not None and ev.devnum == (os.major(dev.device_number), os.minor(dev.device_number))
        else:
            assert ev is None, dev.sys_name


def test_ioctl_numbers_and_struct_sizes_match_the_uapi_headers() -> None:
    from iped import discovery as d

    assert d.DM_TABLE_STATUS == 0xC138FD0C  # _IOWR(0xfd, 12, struct dm_ioctl)
    assert d._DM_HEADER.size == d.DM_IOCTL_SIZE == 312
    assert d._DM_TARGET_SPEC.size == 40
    assert d.FS_IOC_READ_VERITY_METADATA == 0xC0286687
    assert d._new_encode_dev(254, 0) == 0xFE00
    assert d._new_encode_dev(259, 300) == (300 & 0xFF) | (259 << 8) | ((300 & ~0xFF) << 12)


def test_dm_table_error_is_an_oserror_and_closes_the_control_node() -> None:
    from iped.discovery import dm_table

    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as ei:
        dm_table(4095, 1048575)  # no such device
    # with device-mapper: the ioctl's ENXIO; without: opening /dev/mapper/control fails (ENOENT)
    assert ei.value.errno == (errno.ENXIO if os.path.exists("/dev/mapper/control") else errno.ENOENT)
    assert set(os.listdir("/proc/self/fd")) == fds


def test_dm_device_whose_table_cannot_be_read_has_no_verity(tmp_path: Path) -> None:
    # sysfs says 4095:1048575 is a dm device, but DM_TABLE_STATUS fails for it: no verity, no exception
    (tmp_path / "dev/block/4095:1048575/dm").mkdir(parents=True)
    (tmp_path / "dev/block/4095:1048575/dm/name").write_text("gone\n")
    assert dm_verity_of(4095, 1048575, sysfs=str(tmp_path)) is None
