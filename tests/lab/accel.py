"""Which accelerator a lab guest runs under: KVM when it really works, else TCG.

The decision is made once per process (:data:`SESSION`) and shared by the threads that boot
the kernels side by side.  KVM chosen by the probe is only provisional: the boot watches the
console (:meth:`Accel.failure`), and a KVM failure there makes this boot, and every later one,
run under TCG.  Seen on nested-KVM machines: the probe passes, then OVMF dies at its first FPU
instruction ("KVM internal error. Suberror: 1 ... emulation failure") and QEMU *pauses*
instead of exiting, so without the watch every guest waits out its whole timeout.

``IPED_LAB_ACCEL=tcg|kvm`` overrides the decision; a forced ``kvm`` is never watched.
``IPED_LAB_KVM_SILENCE`` (seconds, default 30) bounds how long a KVM boot may stay silent;
``IPED_LAB_KVM_DEVICE`` (default ``/dev/kvm``) is the device the probe opens.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.lab import LabError, run

ACCEL_ENV = "IPED_LAB_ACCEL"
SILENCE_ENV = "IPED_LAB_KVM_SILENCE"
KVM_DEVICE_ENV = "IPED_LAB_KVM_DEVICE"
DEFAULT_SILENCE = 30.0
DEFAULT_KVM_DEVICE = Path("/dev/kvm")
#: What QEMU prints (then pauses the VM) when KVM cannot run an instruction.
KVM_INTERNAL_ERROR = b"KVM internal error"


@dataclass(frozen=True)
class Accel:
    """One boot's accelerator and why it was chosen.

    ``watched`` is set for KVM chosen by the probe: that boot falls back to TCG when
    :meth:`failure` reports a problem.
    """

    name: str
    why: str
    watched: bool = False
    silence_limit: float = DEFAULT_SILENCE

    def qemu_args(self, smp: int) -> list[str]:
        """QEMU's ``-accel``/``-cpu`` options.

        Multi-vCPU TCG runs single-threaded: with MTTCG (one host thread per vCPU) the 6.12
        kernel sometimes dies at boot with "Oops: int3" in sched_clock_cpu, a vCPU executing
        code another vCPU is live-patching (text_poke_bp). One vCPU per guest is the default;
        the lab gets its parallelism from booting the two kernels side by side instead.
        """
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg" if smp == 1 else "tcg,thread=single", "-cpu", "max"]

    def failure(self, console_tail: bytes, console_size: int, seconds: float) -> str:
        """Why this (watched) boot must be abandoned, or "" while it looks healthy.

        ``console_tail`` is the newest console output (long enough to hold the marker),
        ``console_size`` all output so far, ``seconds`` the time since QEMU started.
        """
        if not self.watched:
            return ""
        if KVM_INTERNAL_ERROR in console_tail:
            return f"the console showed {KVM_INTERNAL_ERROR.decode()!r} after {seconds:.0f} s"
        if console_size == 0 and seconds >= self.silence_limit:
            return f"no firmware or kernel output within {self.silence_limit:g} s"
        return ""


class AccelChoice:
    """The session's accelerator decision: probe once, fall back once, remember it.

    ``qemu`` and ``env`` (where the ``IPED_LAB_*`` settings are read) exist for tests: a QEMU
    wrapper, a fake KVM device, without touching the process environment that lab boots
    running beside them read.
    """

    def __init__(self, *, qemu: str = "qemu-system-x86_64", env: Mapping[str, str] = os.environ) -> None:
        self.qemu = qemu
        self._env = env
        self._lock = threading.Lock()
        self._probed: bool | None = None
        self._fallback = ""

    def current(self) -> Accel:
        """The accelerator for the next boot."""
        forced = self._env.get(ACCEL_ENV, "")
        if forced == "tcg":
            return Accel("tcg", f"{ACCEL_ENV}=tcg")
        if forced == "kvm":
            return Accel("kvm", f"{ACCEL_ENV}=kvm (no fallback)")
        if forced not in ("", "auto"):
            raise LabError(f"{ACCEL_ENV}={forced!r} is not one of tcg, kvm, auto")
        with self._lock:
            if self._fallback:
                return Accel("tcg", f"KVM failed earlier this session: {self._fallback}")
            if self._probed is None:
                self._probed = kvm_usable(self._kvm_device_path(), self.qemu)
            probed = self._probed
        if not probed:
            return Accel("tcg", "KVM probe failed")
        return Accel("kvm", "KVM probe passed", watched=True, silence_limit=self._silence_limit())

    def fall_back(self, release: str, reason: str) -> Accel:
        """Record that KVM failed booting ``release``; TCG from now on."""
        with self._lock:
            if not self._fallback:
                self._fallback = f"{release}: {reason}"
        return Accel("tcg", f"fell back from KVM: {reason}")

    def _kvm_device_path(self) -> Path:
        return Path(self._env.get(KVM_DEVICE_ENV) or DEFAULT_KVM_DEVICE)

    def _silence_limit(self) -> float:
        text = self._env.get(SILENCE_ENV) or str(DEFAULT_SILENCE)
        try:
            limit = float(text)
        except ValueError:
            raise LabError(f"{SILENCE_ENV}={text!r} is not a number of seconds") from None
        if limit <= 0:
            raise LabError(f"{SILENCE_ENV}={text!r} must be positive")
        return limit


def kvm_usable(device: Path, qemu: str) -> bool:
    """True only if KVM really runs a guest here.

    An openable ``device`` is not enough: under nested virtualisation KVM may create VMs and
    then abort on the first vCPU reset (seen here: "failed to set MSR 0x10a").  So boot a
    64 KiB firmware whose reset vector writes 0 to QEMU's isa-debug-exit port: exit status
    1 means a vCPU under KVM executed it.  (It can still lie: see the module docstring.)
    """
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    rom = bytearray(b"\xf4" * 0x10000)  # hlt everywhere
    rom[0xFFF0:0xFFF7] = bytes([0xB0, 0x00, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE])  # mov al,0; out 0xf4,al; hlt
    with tempfile.TemporaryDirectory(prefix="iped-lab-kvm-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(bytes(rom))
        try:
            probe = run([qemu, "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "64",
                         "-nodefaults", "-display", "none", "-bios", bios,
                         "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"], check=False, timeout=30)
        except LabError:
            return False
    return probe.returncode == 1


#: The decision shared by every boot of this process.
SESSION = AccelChoice()
