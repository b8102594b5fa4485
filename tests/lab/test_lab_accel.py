"""The lab never hangs on an accelerator failure.

On nested-KVM machines the KVM probe can pass while OVMF then dies at its first FPU
instruction: QEMU prints "KVM internal error" and *pauses*. A QEMU wrapper reproduces that
here: it answers the probe as a working KVM would, and for a boot under ``-accel kvm`` prints
the error (or nothing) and sleeps forever; under ``-accel tcg`` it runs the real QEMU. Each
boot is real (the 6.12 kernel runs a short command), so a fallback that does not really
boot the guest fails here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.lab import LabError
from tests.lab.accel import ACCEL_ENV, KVM_DEVICE_ENV, SILENCE_ENV, AccelChoice
from tests.lab.vm import GuestResult, GuestTimeoutError, boot, describe_accel

SERIES = "6.12"
BOOT_TIMEOUT = 900.0
#: What QEMU 8 prints when KVM cannot emulate an instruction (then it pauses the VM).
KVM_ERROR_TEXT = """KVM internal error. Suberror: 1
extra data[0]: 0x0000000000000000
emulation failure
RAX=0000000000000000 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000
"""


def _fake_qemu(tmp_path: Path, kvm_boot_prints: str) -> tuple[Path, Path]:
    """A ``qemu-system-x86_64`` whose KVM passes the probe and then hangs; returns (script, call log)."""
    real = shutil.which("qemu-system-x86_64")
    assert real is not None, "qemu-system-x86_64 is needed for the lab"
    calls = tmp_path / "qemu-calls.log"
    message = tmp_path / "kvm-console.txt"
    message.write_text(kvm_boot_prints)
    script = tmp_path / "bin" / "qemu-system-x86_64"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case " $* " in\n'
        "  *isa-debug-exit*) exit 1 ;;  # the probe: a vCPU under KVM reached the exit port\n"
        f'  *" -accel kvm "*) cat {message}; exec sleep infinity ;;  # paused, like QEMU after the error\n'
        f'  *) exec {real} "$@" ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return script, calls


def _choice(tmp_path: Path, script: Path, **env: str) -> AccelChoice:
    device = tmp_path / "kvm"  # openable read-write, as /dev/kvm is on a KVM machine
    device.touch()
    return AccelChoice(qemu=str(script), env={KVM_DEVICE_ENV: str(device), **env})


def _accels(calls: Path) -> list[str]:
    """The accelerator of each boot the wrapper saw, in order (the probe as "probe")."""
    seen = []
    for line in calls.read_text().splitlines():
        if "isa-debug-exit" in line:
            seen.append("probe")
        else:
            seen.append("kvm" if " -accel kvm " in f" {line} " else "tcg")
    return seen


def _boot(choice: AccelChoice, outdir: Path, word: str) -> GuestResult:
    return boot(SERIES, f"echo {word}", timeout=BOOT_TIMEOUT, outdir=outdir, accel=choice)


def _assert_ran_under_tcg(result: GuestResult, word: str) -> None:
    assert result.returncode == 0, result.tail()
    assert word in result.guest_log, result.tail()
    assert result.accel.name == "tcg", result.accel


def test_kvm_internal_error_falls_back_to_tcg_and_stays_there(tmp_path: Path) -> None:
    script, calls = _fake_qemu(tmp_path, KVM_ERROR_TEXT)
    choice = _choice(tmp_path, script)

    first = _boot(choice, tmp_path / "first", "first-guest-ran")
    _assert_ran_under_tcg(first, "first-guest-ran")
    assert "fell back from KVM" in first.accel.why and "KVM internal error" in first.accel.why, first.accel
    assert "KVM internal error" in (first.outdir / "console-kvm.log").read_text()
    assert "fell back from KVM" in describe_accel(first) and "KVM internal error" in describe_accel(first)

    second = _boot(choice, tmp_path / "second", "second-guest-ran")
    _assert_ran_under_tcg(second, "second-guest-ran")
    assert second.accel.why.startswith("KVM failed earlier this session"), second.accel
    assert _accels(calls) == ["probe", "kvm", "tcg", "tcg"]


def test_silent_kvm_boot_falls_back_to_tcg(tmp_path: Path) -> None:
    script, calls = _fake_qemu(tmp_path, "")
    choice = _choice(tmp_path, script, **{SILENCE_ENV: "3"})

    result = _boot(choice, tmp_path / "out", "silent-fallback-ran")
    _assert_ran_under_tcg(result, "silent-fallback-ran")
    assert "no firmware or kernel output within 3 s" in result.accel.why, result.accel
    assert _accels(calls) == ["probe", "kvm", "tcg"]


def test_forced_kvm_never_falls_back(tmp_path: Path) -> None:
    script, calls = _fake_qemu(tmp_path, KVM_ERROR_TEXT)
    choice = _choice(tmp_path, script, **{ACCEL_ENV: "kvm"})

    with pytest.raises(GuestTimeoutError, match="under kvm"):
        boot(SERIES, "echo never", timeout=10, outdir=tmp_path / "out", accel=choice)
    assert _accels(calls) == ["kvm"]


def test_unknown_accel_setting_is_refused(tmp_path: Path) -> None:
    choice = AccelChoice(env={ACCEL_ENV: "hvf"})
    with pytest.raises(LabError, match="IPED_LAB_ACCEL='hvf' is not one of tcg, kvm, auto"):
        choice.current()
