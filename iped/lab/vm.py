"""Boot one lab kernel under QEMU and run one command in a chroot of the host root.

The guest sees the host's ``/`` read-only at the same paths, so the command can be the
checkout's own venv python running the checkout's own code: no guest image to build or keep
in sync.  A host directory (``outdir``) is shared read-write at :data:`iped.lab.GUEST_OUT`
for results.  OVMF runs with the lab signers enrolled in ``db`` (see :mod:`iped.lab.firmware`).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from iped.lab import (
    GUEST_ENV_FLAG,
    GUEST_HOME,
    GUEST_LAB,
    GUEST_OUT,
    GUEST_TMP,
    LabError,
    LabTimeoutError,
    run,
)
from iped.lab.firmware import enrolled_firmware
from iped.lab.guest import CHECKOUT, GuestOutput
from iped.lab.initramfs import COMMAND_SCRIPT
from iped.lab.initramfs import build as build_initramfs
from iped.lab.kernels import Kernel, get_kernel

#: Always on the kernel command line: serial console, reboot (= QEMU exit) on panic, audit on.
BASE_CMDLINE = "console=ttyS0 panic=-1 audit=1 quiet"
_ANSI = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")


class GuestTimeoutError(LabTimeoutError):
    """The guest did not power off in time; QEMU was killed."""


@dataclass(frozen=True)
class GuestResult:
    """What one boot left behind. ``returncode`` is the guest command's exit status."""

    release: str
    returncode: int
    guest_log: str
    console_log: str
    outdir: Path
    #: Wall-clock seconds from QEMU start to exit (informational; never asserted on).
    seconds: float

    def tail(self, lines: int = 40) -> str:
        """The end of both logs, for assertion messages."""
        return _tails(self.release, self.guest_log, self.console_log, lines)

    @property
    def output(self) -> GuestOutput:
        """Reader for what ``python -m iped.lab.guest`` wrote (facts, steps, junit)."""
        return GuestOutput(self.outdir)


#: Type of the ``lab_guest_run`` pytest fixture (tests/lab/conftest.py): series -> result.
LabGuestRun = Callable[[str], GuestResult]


def boot(
    kernel: Kernel | str,
    command: Sequence[str] | str,
    *,
    timeout: float,
    extra_cmdline: str = "",
    outdir: Path | None = None,
    cwd: Path | None = None,
    smp: int = 1,
    memory_mb: int = 2048,
    extra_modules: Sequence[str] = (),
) -> GuestResult:
    """Boot ``kernel`` (a :class:`Kernel` or a series name), run ``command``, power off.

    ``command`` is an argv list or a shell string, run by the host's ``/bin/sh`` inside the
    chroot from ``cwd`` (default: the current directory) with the venv's bin first on PATH.
    Its output lands in ``outdir/guest.log``; the serial console in ``outdir/console.log``.

    Raises :class:`GuestTimeoutError` after ``timeout`` seconds and :class:`LabError` when the
    guest never got to run the command (panic, 9p failure), both with the console tail.
    """
    if isinstance(kernel, str):
        kernel = get_kernel(kernel)
    cwd = (cwd or Path.cwd()).resolve()
    outdir = Path(tempfile.mkdtemp(prefix=f"iped-lab-{kernel.series}-")) if outdir is None else outdir
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    for hidden in (cwd, Path(sys.executable).parent):
        if hidden.is_relative_to("/run"):
            raise LabError(f"{hidden} is under /run, which the guest covers with a tmpfs")
    for stale in ("guest.log", "guest-rc", "console.log", COMMAND_SCRIPT):
        (outdir / stale).unlink(missing_ok=True)
    (outdir / COMMAND_SCRIPT).write_text(_command_script(command, cwd))

    firmware = enrolled_firmware()
    initrd = build_initramfs(kernel, extra_modules)
    console = outdir / "console.log"
    with tempfile.TemporaryDirectory(prefix="iped-lab-vars-") as tmp:
        vars_fd = firmware.fresh_vars(Path(tmp) / "vars.fd")
        argv = [
            *_die_with_parent(),
            "qemu-system-x86_64", "-machine", "q35", *_accel(smp), "-smp", str(smp), "-m", str(memory_mb),
            "-nographic", "-no-reboot", "-nic", "none",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_q(firmware.code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={_q(vars_fd)}",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd.path),
            "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={_q(outdir)},mount_tag=out,security_model=none,multidevs=remap",
            "-append", f"{BASE_CMDLINE} {extra_cmdline}".strip(),
        ]
        start = time.monotonic()
        try:
            qemu = run(argv, check=False, timeout=timeout, output=console, what=f"booting {kernel.release}")
        except LabTimeoutError:
            raise GuestTimeoutError(
                f"guest {kernel.release} timed out after {timeout:g} s (QEMU killed)\n"
                + _tails(kernel.release, _read(outdir / "guest.log"), _read(console), 40)
            ) from None
        seconds = time.monotonic() - start
    guest_log, console_log = _read(outdir / "guest.log"), _read(console)
    rc_text = _read(outdir / "guest-rc").strip()
    if not rc_text.lstrip("-").isdigit():
        raise LabError(
            f"guest {kernel.release} never finished the command (QEMU exit {qemu.returncode})\n"
            + _tails(kernel.release, guest_log, console_log, 60)
        )
    return GuestResult(kernel.release, int(rc_text), guest_log, console_log, outdir, seconds)


def run_guest(kernel: Kernel | str, outdir: Path, *, timeout: float, smp: int = 1) -> GuestResult:
    """Boot ``kernel`` and run the whole guest side (``python -m iped.lab.guest``) once.

    The guest uses this very interpreter (``sys.executable``): the host root is shared at the
    same paths, so the venv and the checkout are the ones under test.
    """
    command = [sys.executable, "-m", "iped.lab.guest", "--out", GUEST_OUT]
    return boot(kernel, command, timeout=timeout, outdir=outdir, cwd=CHECKOUT, smp=smp)


@functools.cache
def kvm_usable() -> bool:
    """True only if KVM really runs a guest here.

    An openable /dev/kvm is not enough: under nested virtualisation KVM may create VMs and
    then abort on the first vCPU reset (seen here: "failed to set MSR 0x10a").  So boot a
    64 KiB firmware whose reset vector writes 0 to QEMU's isa-debug-exit port: exit status
    1 means a vCPU under KVM executed it.
    """
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    rom = bytearray(b"\xf4" * 0x10000)  # hlt everywhere
    rom[0xFFF0:0xFFF7] = bytes([0xB0, 0x00, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE])  # mov al,0; out 0xf4,al; hlt
    with tempfile.TemporaryDirectory(prefix="iped-lab-kvm-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(bytes(rom))
        try:
            probe = run(["qemu-system-x86_64", "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "64",
                         "-nodefaults", "-display", "none", "-bios", bios,
                         "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"], check=False, timeout=30)
        except LabError:
            return False
    return probe.returncode == 1


def _accel(smp: int) -> list[str]:
    """KVM when it demonstrably works (or ``IPED_LAB_ACCEL=kvm``), else TCG.

    Multi-vCPU TCG runs single-threaded: with MTTCG (one host thread per vCPU) the 6.12
    kernel sometimes dies at boot with "Oops: int3" in sched_clock_cpu, a vCPU executing
    code another vCPU is live-patching (text_poke_bp). One vCPU per guest is the default;
    the lab gets its parallelism from booting the two kernels side by side instead.
    """
    forced = os.environ.get("IPED_LAB_ACCEL", "")
    if forced == "kvm" or (forced != "tcg" and kvm_usable()):
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg" if smp == 1 else "tcg,thread=single", "-cpu", "max"]


def _die_with_parent() -> list[str]:
    """Prefix making QEMU get SIGKILL when the process (thread) that started it dies.

    A pytest killed by ``timeout`` or Ctrl-C twice must not leave guests running: nothing
    else would ever stop a hung one.
    """
    return ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


def _command_script(command: Sequence[str] | str, cwd: Path) -> str:
    shell = command if isinstance(command, str) else "exec " + shlex.join(command)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": GUEST_HOME,
        "TMPDIR": GUEST_TMP,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        GUEST_ENV_FLAG: "1",
        "IPED_LAB_OUT": GUEST_OUT,
    }
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    return (
        f"# written by iped.lab.vm; run by the guest's init in a chroot of the host root ({GUEST_LAB})\n"
        f"{exports}cd {shlex.quote(str(cwd))} || exit 125\n{shell}\n"
    )


def _q(path: Path) -> str:
    """A path inside a QEMU option string (commas are doubled)."""
    return str(path).replace(",", ",,")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tails(release: str, guest_log: str, console_log: str, lines: int) -> str:
    def tail(text: str) -> str:
        text = _ANSI.sub("", text)  # OVMF clears the screen on the serial console
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"

    return (
        f"--- guest log ({release}), last {lines} lines ---\n{tail(guest_log)}\n"
        f"--- console ({release}), last {lines} lines ---\n{tail(console_log)}"
    )
