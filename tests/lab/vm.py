"""Boot one lab kernel under QEMU and run one command in a chroot of the host root.

The guest sees the host's ``/`` read-only at the same paths, so the command can be the
checkout's own venv python running the checkout's own code: no guest image to build or keep
in sync.  A host directory (``outdir``) is shared read-write at :data:`tests.lab.GUEST_OUT`
for results.  OVMF runs with the lab signers enrolled in ``db`` (see :mod:`tests.lab.firmware`).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.lab import (
    GUEST_ENV_FLAG,
    GUEST_HOME,
    GUEST_LAB,
    GUEST_OUT,
    GUEST_TMP,
    LabError,
    LabTimeoutError,
)
from tests.lab.accel import SESSION, Accel, AccelChoice
from tests.lab.firmware import enrolled_firmware
from tests.lab.guest import CHECKOUT, GuestOutput
from tests.lab.initramfs import COMMAND_SCRIPT
from tests.lab.initramfs import build as build_initramfs
from tests.lab.kernels import Kernel, get_kernel

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
    #: The accelerator the guest ran under, and why (a KVM fallback says so).
    accel: Accel

    def tail(self, lines: int = 40) -> str:
        """The end of both logs, for assertion messages."""
        return _tails(self.release, self.guest_log, self.console_log, lines)

    @property
    def output(self) -> GuestOutput:
        """Reader for what ``python -m tests.lab.guest`` wrote (facts, steps, junit)."""
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
    accel: AccelChoice | None = None,
) -> GuestResult:
    """Boot ``kernel`` (a :class:`Kernel` or a series name), run ``command``, power off.

    ``command`` is an argv list or a shell string, run by the host's ``/bin/sh`` inside the
    chroot from ``cwd`` (default: the current directory) with the venv's bin first on PATH.
    Its output lands in ``outdir/guest.log``; the serial console in ``outdir/console.log``.

    The accelerator comes from ``accel`` (default: the session's, :data:`tests.lab.accel.SESSION`).
    A KVM boot the console shows to be failing is killed and run again under TCG; the failed
    console is kept as ``outdir/console-kvm.log``.

    Raises :class:`GuestTimeoutError` after ``timeout`` seconds (per QEMU run) and
    :class:`LabError` when the guest never got to run the command (panic, 9p failure), both
    with the console tail.
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
    choice = accel or SESSION
    chosen = choice.current()
    with tempfile.TemporaryDirectory(prefix="iped-lab-vars-") as tmp:
        while True:
            vars_fd = firmware.fresh_vars(Path(tmp) / "vars.fd")
            argv = [
                *die_with_parent(),
                choice.qemu, "-machine", "q35", *chosen.qemu_args(smp), "-smp", str(smp), "-m", str(memory_mb),
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
                returncode = _run_qemu(argv, console, timeout=timeout, accel=chosen, what=f"booting {kernel.release}")
                break
            except _AccelFailedError as failure:
                # Keep the failed console for the record; the retry writes a fresh one.
                console.replace(outdir / "console-kvm.log")
                chosen = choice.fall_back(kernel.release, str(failure))
            except LabTimeoutError:
                raise GuestTimeoutError(
                    f"guest {kernel.release} timed out after {timeout:g} s under {chosen.name} "
                    f"({chosen.why}; QEMU killed)\n"
                    + _tails(kernel.release, _read(outdir / "guest.log"), _read(console), 40)
                ) from None
        seconds = time.monotonic() - start
    guest_log, console_log = _read(outdir / "guest.log"), _read(console)
    rc_text = _read(outdir / "guest-rc").strip()
    if not rc_text.lstrip("-").isdigit():
        raise LabError(
            f"guest {kernel.release} never finished the command (QEMU exit {returncode} under {chosen.name})\n"
            + _tails(kernel.release, guest_log, console_log, 60)
        )
    return GuestResult(kernel.release, int(rc_text), guest_log, console_log, outdir, seconds, chosen)


def describe_accel(result: GuestResult) -> str:
    """One line for the lab summary: the accelerator a guest ran under and why."""
    return f"ran under {result.accel.name.upper()} ({result.accel.why})"


def run_guest(kernel: Kernel | str, outdir: Path, *, timeout: float, smp: int = 1) -> GuestResult:
    """Boot ``kernel`` and run the whole guest side (``python -m tests.lab.guest``) once.

    The guest uses this very interpreter (``sys.executable``): the host root is shared at the
    same paths, so the venv and the checkout are the ones under test.
    """
    command = [sys.executable, "-m", "tests.lab.guest", "--out", GUEST_OUT]
    return boot(kernel, command, timeout=timeout, outdir=outdir, cwd=CHECKOUT, smp=smp)


class _AccelFailedError(Exception):
    """A watched KVM boot is failing (the message says how): run it again under TCG."""


#: How often a running QEMU is checked (exit, timeout, console).
_POLL_SECONDS = 0.5


def _run_qemu(argv: Sequence[str], console: Path, *, timeout: float, accel: Accel, what: str) -> int:
    """Run QEMU with both streams to ``console`` until it exits; return its exit status.

    While it runs, new console output is handed to :meth:`Accel.failure`; a failure kills QEMU
    and raises :class:`_AccelFailedError`.  Past ``timeout`` QEMU is killed and
    :class:`LabTimeoutError` raised.
    """
    start = time.monotonic()
    with console.open("wb") as sink:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:
            raise LabError(f"{what} failed: {argv[0]} is not installed ({exc})") from exc
    try:
        with console.open("rb") as reader:
            size, tail = 0, b""
            while True:
                try:
                    return proc.wait(timeout=_POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
                seconds = time.monotonic() - start
                if seconds > timeout:
                    raise LabTimeoutError(f"{what} timed out after {timeout:g} s")
                new = reader.read()
                size += len(new)
                tail = (tail + new)[-4096:]
                if failure := accel.failure(tail, size, seconds):
                    raise _AccelFailedError(failure)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def die_with_parent() -> list[str]:
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
        f"# written by tests.lab.vm; run by the guest's init in a chroot of the host root ({GUEST_LAB})\n"
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
