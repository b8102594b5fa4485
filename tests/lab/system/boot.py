"""Boot a system image: busybox initramfs -> ``switch_root`` to systemd -> checks -> poweroff.

``virtio_blk`` and ``ext4`` are modules in Debian's kernels, so a tiny initramfs (the lab's
static busybox, those modules and their dependencies from ``.modinfo``, decompressed) loads
them, mounts ``/dev/vda`` and hands over to ``/lib/systemd/systemd``.  QEMU runs the lab's
OVMF with the lab signers enrolled in ``db`` (:mod:`tests.lab.firmware`): the kernel then
trusts policies signed by them through its ``.platform`` keyring.

The checks unit powers the guest off when it is done; the host reads the results back from
the disk image with ``debugfs`` (:func:`tests.lab.system.image.read_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.lab import LabError, LabTimeoutError, run
from tests.lab.firmware import enrolled_firmware
from tests.lab.initramfs import BUSYBOX, Cpio, ModuleIndex, decompress
from tests.lab.kernels import Kernel
from tests.lab.system import CHECKOUT, system_cache
from tests.lab.system.image import GUEST_LAB_DIR, GUEST_PHASE, GUEST_RESULTS, read_file
from tests.lab.vm import die_with_parent

#: "1": the first boot runs only guest_checks.PHASES["quick"] (start, a refused start, fleet
#: declared, the boot copy), then the boot phases; select their tests with -k (the others never run)
QUICK_ENV = "IPED_LAB_SYSTEM_QUICK"
#: Loaded by the initramfs (their dependencies are added from .modinfo).
ROOT_MODULES = ("virtio_blk", "ext4")
CMDLINE = "console=ttyS0 panic=-1 audit=1 quiet systemd.show_status=error"

INIT_SCRIPT = """#!/bin/busybox sh
# iped system-image lab init: load the root disk's modules, mount it, hand over to systemd.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/lib/modules/$m.ko" || echo "iped-lab: insmod $m failed"; done < /lib/modules.order
for _ in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 -o rw /dev/vda /newroot || { echo "iped-lab: FATAL: cannot mount /dev/vda"; poweroff -f; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /lib/systemd/systemd
"""


@dataclass(frozen=True)
class SystemRun:
    """What the boots of a system image left: per-check results (accumulated over the boots that
    run checks), the serial console of the last of them, and the boots that must stop early.

    ``stops``: name -> :class:`StoppedBoot` of the boots after the checks (:data:`STOP_BOOTS`),
    missing when an earlier boot did not finish its checks.
    """

    release: str
    image: Path
    console_log: str
    seconds: float
    results: dict[str, dict[str, Any]]
    stops: dict[str, StoppedBoot] = field(default_factory=dict)
    #: phase -> seconds its boot took (QEMU start to power-off)
    phases: dict[str, float] = field(default_factory=dict)

    def tail(self, lines: int = 60) -> str:
        text = "\n".join(self.console_log.rstrip().splitlines()[-lines:]) or "(empty)"
        return f"--- console ({self.release}), last {lines} lines ---\n{text}"


def initramfs(kernel: Kernel) -> Path:
    """The initramfs for ``kernel`` (cached by kernel, modules, init script and busybox)."""
    index = ModuleIndex(kernel.modules_dir)
    order = index.resolve(ROOT_MODULES)
    key = hashlib.sha256("\0".join([kernel.release, kernel.version, INIT_SCRIPT, *order]).encode())
    key.update(BUSYBOX.read_bytes())
    target = system_cache() / f"initramfs-{kernel.release}-{key.hexdigest()[:16]}.cpio"
    if not target.is_file():
        files = {"bin/busybox": (BUSYBOX.read_bytes(), 0o755), "init": (INIT_SCRIPT.encode(), 0o755),
                 "lib/modules.order": ("".join(f"{m}\n" for m in order).encode(), 0o644)}
        files.update({f"lib/modules/{m}.ko": (decompress(index.path(m)), 0o644) for m in order})
        archive = Cpio()
        for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
            archive.directory(d)
        archive.device("dev/console", 5, 1)
        for path, (data, mode) in files.items():
            archive.file(path, data, mode)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # builds may race
        partial.write_bytes(archive.finish())
        partial.replace(target)
    return target


@dataclass(frozen=True)
class StoppedBoot:
    """A boot that must stop before the checks: did ``marker`` reach the console, and after how long."""

    name: str
    marker: str
    seen: bool
    seconds: float
    console_log: str

    def tail(self, lines: int = 40) -> str:
        text = "\n".join(self.console_log.rstrip().splitlines()[-lines:]) or "(empty)"
        return f"--- console of the {self.name} boot, last {lines} lines ---\n{text}"


#: The boots after the checks' boots, in order: name, the console line that shows the boot stopped
#: (a halted or frozen guest never exits QEMU: it is killed once this is seen), and the guest file
#: the host replaces before it (debugfs), None for none. docs/boot.md.
STOP_BOOTS: tuple[tuple[str, str, str | None], ...] = (
    # fail_closed on, boot copy removed (setup_fail_closed): iped-boot.service fails, the drop-in halts
    ("fail_closed", "System halted", None),
    # a boot copy the kernel refuses (EBADMSG): systemd 257's PID 1 itself stops ("freeze")
    ("corrupted_copy", "Failed to load IPE policy", "/etc/ipe/fleet.p7b"),
)


#: the phases booted with the image's own initramfs-tools initramfs (read back from its /boot)
#: instead of the lab's busybox one; PID 1's loader has nothing to load then (/etc/ipe empty)
GUEST_INITRAMFS_PHASES = frozenset({"initramfs"})
# fsck.mode=skip: the lab image has no fsck.ext4 in the initramfs (MODULES=list) and needs none
GUEST_INITRAMFS_CMDLINE = f"{CMDLINE} root=/dev/vda rw fsck.mode=skip"


def qemu_argv(kernel: Kernel, image: Path, memory_mb: int = 2048, *, initrd: Path | None = None,
              cmdline: str = CMDLINE) -> list[str]:
    firmware = enrolled_firmware()
    vars_fd = firmware.fresh_vars(image.with_suffix(".vars.fd"))
    return [
        *die_with_parent(),
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1",
        "-m", str(memory_mb), "-nographic", "-no-reboot", "-nic", "none",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={firmware.code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd or initramfs(kernel)),
        "-drive", f"if=virtio,format=raw,file={image}",
        "-append", cmdline,
    ]


def boot_until_stopped(kernel: Kernel, image: Path, name: str, marker: str, *, timeout: float) -> StoppedBoot:
    """Boot ``image`` until ``marker`` is on the console (then 3 s more for the rest of the
    message, and QEMU is killed), QEMU exits, or ``timeout``."""
    import subprocess

    console = image.with_name(f"{image.stem}.{name}.console.log")
    start = time.monotonic()
    seen_at: float | None = None
    with console.open("wb") as sink:
        proc = subprocess.Popen(qemu_argv(kernel, image), stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None and time.monotonic() - start < timeout:
                if seen_at is None and marker.encode() in console.read_bytes():
                    seen_at = time.monotonic()
                if seen_at is not None and time.monotonic() - seen_at > 3:
                    break
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    text = console.read_text(errors="replace")
    kept = system_cache() / "last-run" / kernel.release
    kept.mkdir(parents=True, exist_ok=True)
    (kept / f"console.{name}.log").write_text(text)
    return StoppedBoot(name, marker, marker in text, round(time.monotonic() - start, 1), text)


def boot_image(kernel: Kernel, image: Path, *, timeout: float, memory_mb: int = 2048, tag: str = "",
               guest_initramfs: bool = False) -> SystemRun:
    """Boot ``image`` on ``kernel`` until the guest powers off; read the checks' results.

    ``guest_initramfs``: boot the image's own ``/boot/initrd.img-<release>`` (what its
    update-initramfs last built), not the lab's busybox initramfs.

    Raises :class:`LabError` (with the console tail) on a timeout or when the checks never
    wrote their results file.
    """
    console = image.with_name(f"{image.stem}{'.' + tag if tag else ''}.console.log")
    if guest_initramfs:
        from tests.lab.system.image import dump_file, guest_initrd

        initrd = dump_file(image, guest_initrd(kernel.release), image.with_name(f"{image.stem}.initrd.img"))
        argv = qemu_argv(kernel, image, memory_mb, initrd=initrd, cmdline=GUEST_INITRAMFS_CMDLINE)
    else:
        argv = qemu_argv(kernel, image, memory_mb)
    start = time.monotonic()
    try:
        run(argv, check=False, timeout=timeout, output=console, what=f"booting the system image on {kernel.release}")
    except LabTimeoutError:
        timed_out = True
    else:
        timed_out = False
    seconds = time.monotonic() - start
    console_text = console.read_text(errors="replace") if console.is_file() else ""
    raw = read_file(image, GUEST_RESULTS)
    partial = SystemRun(kernel.release, image, console_text, seconds, {})
    if raw is None:
        why = f"timed out after {timeout:g} s (QEMU killed)" if timed_out else "powered off"
        raise LabError(f"system image on {kernel.release} {why} without writing {GUEST_RESULTS}\n{partial.tail()}")
    # kept beside the cache: pytest's temp dirs rotate away while other sessions run
    kept = system_cache() / "last-run" / kernel.release
    kept.mkdir(parents=True, exist_ok=True)
    (kept / "results.json").write_text(raw)
    (kept / f"console{'.' + tag if tag else ''}.log").write_text(console_text)
    try:
        results = {r["name"]: r for r in json.loads(raw)["checks"]}
    except (ValueError, KeyError):  # QEMU killed while the guest rewrote it
        raise LabError(f"system image on {kernel.release}: {GUEST_RESULTS} unreadable ({len(raw)} bytes)"
                       f"{' after a timeout' if timed_out else ''}\n{partial.tail()}") from None
    if timed_out:
        results["(boot)"] = {"name": "(boot)", "ok": False, "seconds": seconds,
                             "detail": f"timed out after {timeout:g} s; checks not reached are missing"}
    return SystemRun(kernel.release, image, console_text, seconds, results)


def image_files() -> dict[str, bytes]:
    """What the checks need in the image besides the rootfs: themselves, certificates, policies.

    Policies are signed here on the host with the lab signers (:mod:`tests.lab.keys`): the RSA
    signer is enrolled in OVMF's db (the kernel trusts it), the "untrusted" one is not (the
    kernel answers ENOKEY) although the checks' iped.toml lists it as a trust anchor.
    """
    from tests.lab.keys import RSA_SIGNER, UNTRUSTED_SIGNER, sign_policy

    def policy(name: str, version: str) -> bytes:
        return f"policy_name={name} policy_version={version}\nDEFAULT action=ALLOW\n".encode()

    store = f"{GUEST_LAB_DIR}/policies"
    return {
        **collection_files(),
        f"{GUEST_LAB_DIR}/guest_checks.py": (Path(__file__).parent / "guest_checks.py").read_bytes(),
        # sigkill_mid_plan runs the installed iped through the tests' entry point (its pause hook)
        f"{GUEST_LAB_DIR}/hooked/iped": (CHECKOUT / "tests" / "helpers" / "iped_with_hooks.py").read_bytes(),
        "/etc/iped/lab/rsa-signer.crt": RSA_SIGNER.cert.read_bytes(),
        "/etc/iped/lab/rsa-signer.key": RSA_SIGNER.key.read_bytes(),
        "/etc/iped/lab/untrusted-signer.crt": UNTRUSTED_SIGNER.cert.read_bytes(),
        f"{store}/lab_a-1.0.0.p7s": sign_policy(policy("lab_a", "1.0.0"), RSA_SIGNER),
        f"{store}/lab_a-1.0.1.p7s": sign_policy(policy("lab_a", "1.0.1"), RSA_SIGNER),
        f"{store}/lab_b-2.0.0-untrusted.p7s": sign_policy(policy("lab_b", "2.0.0"), UNTRUSTED_SIGNER),
        f"{store}/fleet-60001.0.0.p7s": sign_policy(policy("fleet", "60001.0.0"), RSA_SIGNER),
        # setup_initramfs: a change the kernel refuses (ENOKEY) never reaches the initramfs
        f"{store}/fleet-60003.0.0-untrusted.p7s": sign_policy(policy("fleet", "60003.0.0"), UNTRUSTED_SIGNER),
    }


def collection_files() -> dict[str, bytes]:
    """The Ansible collection iped.ipe (``ansible/ansible_collections``) under ``<lab>/ansible``."""
    root = CHECKOUT / "ansible"
    return {f"{GUEST_LAB_DIR}/ansible/{p.relative_to(root)}": p.read_bytes()
            for p in sorted(root.joinpath("ansible_collections").rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")}


def boot_checks(rootfs: Path, series: str, workdir: Path, *, timeout: float) -> SystemRun:
    """Make an image of ``rootfs`` for the newest kernel of ``series`` and boot it."""
    from tests.lab.kernels import get_kernel
    from tests.lab.system.guest_checks import PHASE_ORDER, QUICK_PHASE
    from tests.lab.system.image import disk_image

    kernel = get_kernel(series)
    workdir.mkdir(parents=True, exist_ok=True)
    files = image_files()
    first = PHASE_ORDER[0]
    if os.environ.get(QUICK_ENV) == "1":  # only what the boot phases need before them
        first = QUICK_PHASE
        files[GUEST_PHASE] = f"{QUICK_PHASE}\n".encode()
    image = disk_image(rootfs, kernel, workdir / f"system-{series}.ext4", files)
    # one boot per phase of checks, each rebooting what the one before left (docs/boot.md)
    started = time.monotonic()
    run = boot_image(kernel, image, timeout=timeout, tag=first)
    phases = {first: round(run.seconds, 1)}
    for phase in PHASE_ORDER[1:]:
        if (read_file(image, GUEST_PHASE) or "").strip() != phase:
            return replace(run, phases=phases)
        run = boot_image(kernel, image, timeout=timeout, tag=phase, guest_initramfs=phase in GUEST_INITRAMFS_PHASES)
        phases[phase] = round(run.seconds, 1)
    if (read_file(image, GUEST_PHASE) or "").strip() != "done":
        return replace(run, phases=phases)
    stops = {}
    for name, marker, replaced in STOP_BOOTS:
        if replaced is not None:  # the fleet blob cut short: the kernel answers EBADMSG
            write_file(image, replaced, files[f"{GUEST_LAB_DIR}/policies/fleet-60001.0.0.p7s"][:300])
        stops[name] = boot_until_stopped(kernel, image, name, marker, timeout=min(timeout, 300))
    return SystemRun(run.release, image, run.console_log, time.monotonic() - started, run.results, stops, phases)


def write_file(image: Path, guest_path: str, data: bytes) -> None:
    """Replace ``guest_path`` in the (unmounted) ext4 ``image`` with ``data`` (``debugfs -w``)."""
    local = image.with_name(f"{image.stem}.write.tmp")
    local.write_bytes(data)
    try:
        run(["debugfs", "-w", "-R", f"rm {guest_path}", image], check=False, what="debugfs rm")
        run(["debugfs", "-w", "-R", f"write {local} {guest_path}", image], what=f"writing {guest_path} into the image")
    finally:
        local.unlink(missing_ok=True)
