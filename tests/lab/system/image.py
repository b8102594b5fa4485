"""The trixie root filesystem with iped installed from its package, and per-boot disk images.

:func:`build_rootfs` runs ``mmdebstrap --variant=apt`` once per input hash (packages to
include, the built ``.deb`` files, the hook script) and keeps the result as a tarball under
``<lab cache>/system``.  The ``.deb`` files go in through a customize hook and are installed
with ``apt-get install ./iped_*.deb ./python3-inotify-simple_*.deb``, so apt pulls iped's
runtime dependencies from Debian exactly as on a user's machine; they also stay in the image
(:data:`GUEST_DEBS`) for the upgrade and purge checks.

:func:`disk_image` makes one ext4 image per boot: the rootfs, the kernel's modules (with a
``modules.dep`` written by ``depmod``), the checks, and whatever the caller adds
(configuration, signed policies), via ``mkfs.ext4 -d`` (no root mount, no loop device).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests.lab import LabError, run
from tests.lab.kernels import Kernel
from tests.lab.system import MIRROR, SUITE, build_failed, system_cache, tree_digest
from tests.lab.system.packages import Debs

#: What the image has besides Essential + apt: systemd as PID 1 and what iped's checks use
#: (auditd stays disabled but for its own check; ansible-core and python3-apt run the collection's
#: role, whose package task goes through ansible's apt module; man-db, bash-completion and zsh read
#: the man pages and completions the package ships).
INCLUDE = ("systemd", "systemd-sysv", "udev", "dbus", "kmod", "python3", "openssl", "auditd", "ansible-core",
           "python3-apt", "man-db", "bash-completion", "zsh", "initramfs-tools")
#: Where the built packages live inside the image.
GUEST_DEBS = "/var/lib/iped-lab/debs"
#: Where the checks, their inputs and their results live inside the image.
GUEST_LAB_DIR = "/var/lib/iped-lab"
GUEST_RESULTS = f"{GUEST_LAB_DIR}/results.json"
#: which checks the next boot runs (guest_checks.PHASE_FILE)
GUEST_PHASE = f"{GUEST_LAB_DIR}/phase"
CHECKS_UNIT = "iped-lab-checks.service"
#: records the kernel's IPE state at boot before iped-boot and iped run, in shell (no iped code)
EARLY_UNIT = "iped-lab-early.service"
EARLY_SCRIPT = f"{GUEST_LAB_DIR}/early.sh"
EARLY_SCRIPT_TEXT = """#!/bin/sh
# each loaded policy: name version active=0|1 sha256=<of its pkcs7>, then the uptime
for d in /sys/kernel/security/ipe/policies/*/; do
  [ -d "$d" ] || continue
  echo "$(cat "$d/name") $(cat "$d/version") active=$(cat "$d/active") sha256=$(sha256sum < "$d/pkcs7" | cut -d' ' -f1)"
done > /run/iped-lab-early.txt
echo "uptime $(cut -d' ' -f1 /proc/uptime)" >> /run/iped-lab-early.txt
# [boot] initramfs boot: the initramfs's policy denies this one (guest_checks.setup_initramfs)
if [ -f /var/lib/iped-lab/denied-true ]; then
  out=$(/var/lib/iped-lab/denied-true 2>&1); rc=$?
  echo "denied-true exit $rc enforce $(cat /sys/kernel/security/ipe/enforce) $out" >> /run/iped-lab-early.txt
fi
"""
EARLY_UNIT_TEXT = f"""[Unit]
Description=iped system-image lab: the IPE state before iped-boot.service and iped.service
DefaultDependencies=no
Before=iped-boot.service iped.service sysinit.target
[Service]
Type=oneshot
ExecStart=/bin/sh {EARLY_SCRIPT}
[Install]
WantedBy=sysinit.target
"""
JOURNAL_AUDIT_SOCKET = "systemd-journald-audit.socket"
IMAGE_SIZE = "2G"

_INSTALL_HOOK = (
    'chroot "$1" sh -ec "export DEBIAN_FRONTEND=noninteractive; cd {debs}; '
    "apt-get install -y -q --no-install-recommends ./{iped} ./{inotify} >/dev/null; "
    'apt-get clean; systemctl disable auditd.service"'
)

#: The lab's one change to iped.service: under TCG, niced beside the rest of the suite
#: (tests/lab/system/background.py), a daemon start took 70-95 s in CI, and the unit's 90 s
#: TimeoutStartSec then killed the start sigkill_mid_plan had paused on purpose (restarted without
#: the pause: its wait never ended). Its 30 s WatchdogSec did the same to a paused daemon's
#: reconcile that took longer than that between two loop turns (CI, round 4, both kernels: "Failed
#: with result 'watchdog'"). The shipped values are for real machines; nothing checks them here.
TCG_DROP_IN = "[Service]\nTimeoutStartSec=600\nWatchdogSec=600\n"

CHECKS_UNIT_TEXT = f"""[Unit]
Description=iped system-image lab checks (tests/lab/system/guest_checks.py)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 {GUEST_LAB_DIR}/guest_checks.py
ExecStopPost=/bin/systemctl poweroff --no-block
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
"""


def build_rootfs(debs: Debs) -> Path:
    """``rootfs-<hash>.tar``: trixie + systemd + iped installed from ``debs`` (cached)."""
    hook = _INSTALL_HOOK.format(debs=GUEST_DEBS, iped=debs.iped.name, inotify=debs.inotify_simple.name)
    files = [debs.iped, debs.iped_upgrade, debs.inotify_simple]
    key = tree_digest(files, debs.iped.parent, "rootfs-1", SUITE, MIRROR, ",".join(INCLUDE), hook)[:16]
    target = system_cache() / f"rootfs-{key}.tar"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="iped-lab-rootfs-", dir=target.parent) as tmp:
        staged = Path(tmp) / "debs"
        staged.mkdir()
        for f in files:
            shutil.copy2(f, staged / f.name)
        partial = Path(tmp) / "rootfs.tar"
        log = Path(tmp) / "mmdebstrap.log"
        result = run(
            ["mmdebstrap", "--variant=apt", "--quiet", f"--include={','.join(INCLUDE)}",
             f'--customize-hook=mkdir -p "$1"{GUEST_LAB_DIR}',
             f"--customize-hook=copy-in {staged} {GUEST_LAB_DIR}",
             f"--customize-hook={hook}",
             SUITE, partial, MIRROR],
            check=False, timeout=1800, output=log, what="building the trixie root filesystem",
        )
        if result.returncode != 0:
            raise build_failed(log, target.parent / "rootfs-failed.log", "mmdebstrap", result.returncode)
        partial.replace(target)
    for old in target.parent.glob("rootfs-*.tar"):
        if old != target:
            old.unlink()
    return target


def disk_image(rootfs: Path, kernel: Kernel, dest: Path, files: Mapping[str, bytes]) -> Path:
    """An ext4 image at ``dest``: ``rootfs`` + ``kernel``'s modules + ``files`` (guest path -> bytes).

    The checks unit and journald's audit socket are enabled, ``serial-getty@ttyS0`` masked (it would hang up the console
    the checks write to) and first-boot prompts avoided with a fixed machine-id.
    """
    with tempfile.TemporaryDirectory(prefix="iped-lab-tree-", dir=dest.parent) as tmp:
        tree = Path(tmp) / "root"
        tree.mkdir()
        run(["tar", "-x", "-p", "--numeric-owner", "-f", rootfs, "-C", tree], what="unpacking the root filesystem")
        modules = tree / "usr/lib/modules" / kernel.release
        shutil.copytree(kernel.modules_dir, modules, symlinks=True)
        # the image's own kmod writes modules.dep (Debian's kernel packages ship none)
        run(["chroot", tree, "depmod", "-a", kernel.release], what=f"depmod for {kernel.release}")
        etc = tree / "etc"
        (etc / "fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 0\n")
        (etc / "hostname").write_text("iped-lab\n")
        (etc / "machine-id").write_text("6b2a7f1e3c1d4b7e9a521ab0c0ffee01\n")
        _mask(etc, "serial-getty@ttyS0.service", "getty@tty1.service", "systemd-firstboot.service",
              "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer")
        wants = etc / "systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (etc / "systemd/system" / CHECKS_UNIT).write_text(CHECKS_UNIT_TEXT)
        (wants / CHECKS_UNIT).symlink_to(f"/etc/systemd/system/{CHECKS_UNIT}")
        (etc / "systemd/system" / EARLY_UNIT).write_text(EARLY_UNIT_TEXT)
        drop_in = etc / "systemd/system/iped.service.d"
        drop_in.mkdir(parents=True, exist_ok=True)
        (drop_in / "lab-tcg.conf").write_text(TCG_DROP_IN)
        early_script = tree / EARLY_SCRIPT.lstrip("/")
        early_script.parent.mkdir(parents=True, exist_ok=True)
        early_script.write_text(EARLY_SCRIPT_TEXT)
        early_wants = etc / "systemd/system/sysinit.target.wants"
        early_wants.mkdir(parents=True, exist_ok=True)
        (early_wants / EARLY_UNIT).symlink_to(f"/etc/systemd/system/{EARLY_UNIT}")
        # journald collects audit records (the journal audit source's input) only through this
        # socket, which Debian does not enable and which cannot start while journald runs
        sockets = etc / "systemd/system/sockets.target.wants"
        sockets.mkdir(parents=True, exist_ok=True)
        (sockets / JOURNAL_AUDIT_SOCKET).symlink_to(f"/usr/lib/systemd/system/{JOURNAL_AUDIT_SOCKET}")
        for guest_path, data in files.items():
            path = tree / guest_path.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if guest_path.endswith(".key"):  # iped takes a signing key only when it is private
                path.chmod(0o600)
        _initramfs(tree, kernel)
        dest.unlink(missing_ok=True)
        # verity: guest_checks.setup_initramfs enables fs-verity on the binary the policy denies
        run(["mkfs.ext4", "-q", "-F", "-O", "verity", "-L", "iped-lab", "-d", tree, dest, IMAGE_SIZE],
            what="making the ext4 disk image")
    return dest


#: the image's initramfs-tools: only the root disk's modules, fast compression (every build under
#: TCG is guest time: the one in-guest rebuild, iped-initramfs.path's, is the one that counts)
INITRAMFS_CONF = "MODULES=list\nCOMPRESS=gzip\nCOMPRESSLEVEL=1\n"
INITRAMFS_MODULES = "virtio_blk\next4\n"


def guest_initrd(release: str) -> str:
    return f"/boot/initrd.img-{release}"


def _initramfs(tree: Path, kernel: Kernel) -> None:
    """The image's own initramfs for ``kernel``, built here in a chroot (host time, not guest time):
    the guest's ``update-initramfs -u -k all`` (iped-initramfs.service) then has one to update.
    mkinitramfs checks the compressor against /boot/config-<release>."""
    conf = tree / "etc/initramfs-tools"
    (conf / "conf.d").mkdir(parents=True, exist_ok=True)
    (conf / "conf.d/iped-lab.conf").write_text(INITRAMFS_CONF)
    (conf / "modules").write_text(INITRAMFS_MODULES)
    boot = tree / "boot"
    boot.mkdir(exist_ok=True)
    # update-initramfs -u -k all updates the kernels linux-version lists: /boot/vmlinu[xz]-*
    shutil.copyfile(kernel.vmlinuz, boot / f"vmlinuz-{kernel.release}")
    for config in (kernel.root / "boot" / f"config-{kernel.release}", kernel.modules_dir / "config"):
        if config.is_file():
            shutil.copyfile(config, boot / f"config-{kernel.release}")
            break
    run(["chroot", tree, "update-initramfs", "-c", "-k", kernel.release], timeout=600,
        what=f"update-initramfs -c -k {kernel.release} in the image")
    # no rebuild on the checks' dpkg runs (the upgrade, the purge, the reinstall: iped's hook is
    # under /usr/share/initramfs-tools, so each fires initramfs-tools' trigger, a full mkinitramfs
    # of 70-200 s under TCG); guest_checks.setup_initramfs turns it on for the rebuild under test
    conf_file = conf / "update-initramfs.conf"
    kept = [ln for ln in conf_file.read_text().splitlines() if not ln.startswith("update_initramfs=")]
    conf_file.write_text("\n".join([*kept, "update_initramfs=no"]) + "\n")


def read_file(image: Path, guest_path: str) -> str | None:
    """A file's text from an ext4 image (``debugfs``), ``None`` when it is absent."""
    result = run(["debugfs", "-R", f"cat {guest_path}", image], check=False, what="reading the disk image")
    if result.returncode != 0 or "File not found" in result.stderr:
        return None
    return result.stdout


def dump_file(image: Path, guest_path: str, local: Path) -> Path:
    """A (binary) file out of an ext4 image (``debugfs dump``)."""
    local.unlink(missing_ok=True)
    run(["debugfs", "-R", f"dump {guest_path} {local}", image], what=f"reading {guest_path} from the disk image")
    if not local.is_file() or local.stat().st_size == 0:
        raise LabError(f"{guest_path}: not in the disk image {image}")
    return local


def _mask(etc: Path, *units: str) -> None:
    for unit in units:
        link = etc / "systemd/system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
