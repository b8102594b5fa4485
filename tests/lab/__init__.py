"""The IPE lab: boot Debian's stock IPE kernels under QEMU and run code on them.

The emulator in :mod:`iped.emulator` is only as good as its agreement with real kernels, so the
lab makes those kernels an ordinary part of pytest (``tests/lab``).  It is test-only code: it
lives beside its tests, is never packaged, and runs from the checkout.  Host side:

* :mod:`tests.lab.kernels`   - find, download (apt) and cache the newest 6.12 and 7.x kernels;
* :mod:`tests.lab.keys`      - the committed TEST-ONLY signing keys and PKCS#7 policy signing;
* :mod:`tests.lab.firmware`  - OVMF variables with the test signers enrolled in ``db``
  (so the kernel puts them in its ``.platform`` keyring);
* :mod:`tests.lab.initramfs` - busybox + the few modules the guest needs;
* :mod:`tests.lab.accel`     - KVM or TCG, decided once per session, with a fallback to TCG;
* :mod:`tests.lab.vm`        - boot one kernel, run one command in a chroot of the host root;
* ``python -m tests.lab``    - the same by hand (fetch, config, boot, run).

Guest side: :mod:`tests.lab.guest` (``python -m tests.lab.guest --out DIR``), which runs the
corpus (:mod:`tests.lab.corpus`, on the kernel through :mod:`tests.lab.kernel_backend`; the
emulator's side is :mod:`tests.lab.emulator_backend`) and then ``tests/lab_guest``.

This module holds what all of them share and must stay cheap to import: it is also imported
inside the guest, where every import costs real time under TCG.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Kernel series the lab knows, by the name used on the command line and in fixtures.
SERIES: tuple[str, ...] = ("6.12", "7")

# Layout inside the guest's chroot (the host root, read-only). A tmpfs is mounted over /run:
# it is the only writable place, and unlike /tmp it cannot hide a checkout that lives in
# /tmp. Everything the lab adds lives below GUEST_LAB.
GUEST_LAB = "/run/iped-lab"
#: The host's result directory (read-write 9p): what the guest leaves for the host.
GUEST_OUT = f"{GUEST_LAB}/out"
#: The initramfs root, bind-mounted: files here are on the boot_verified superblock.
GUEST_INITRAMFS = f"{GUEST_LAB}/initramfs"
#: A static busybox on the initramfs: executing it exercises ``boot_verified=TRUE``.
GUEST_BUSYBOX = f"{GUEST_INITRAMFS}/bin/busybox"
#: $TMPDIR and $HOME in the guest (tmpfs).
GUEST_TMP = f"{GUEST_LAB}/tmp"
GUEST_HOME = f"{GUEST_LAB}/home"
#: Set to "1" in the environment of every guest command.
GUEST_ENV_FLAG = "IPED_LAB_GUEST"

#: Default cache: outside the checkout (CI clones it anywhere) and persistent across sessions.
DEFAULT_CACHE = Path("/var/cache/iped-lab")


class LabError(RuntimeError):
    """Something the lab needs is missing or broken (download, firmware, boot).

    Lab tests turn this into a failure, never a skip: a lab that silently skips would let
    the emulator drift away from the kernels unnoticed.
    """


class LabTimeoutError(LabError):
    """A tool (or a whole guest) ran past its time limit and was killed."""


def cache_dir() -> Path:
    """The lab cache (``$IPED_LAB_CACHE`` or ``/var/cache/iped-lab``), created on demand."""
    path = Path(os.environ.get("IPED_LAB_CACHE") or DEFAULT_CACHE)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Completed:
    """Outcome of :func:`run`: exit status and the decoded output streams."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    what: str = "",
    output: Path | None = None,
) -> Completed:
    """Run one external tool: argv list, no shell, output captured.

    Every subprocess of the host side goes through here so that failures read the same way
    everywhere: with ``check`` a non-zero exit raises :class:`LabError` naming ``what`` was
    being done, the command, and the tail of its stderr.  With ``output`` both streams go to
    that file instead of memory (long-running, chatty tools such as QEMU).  Past ``timeout``
    the process is killed and :class:`LabTimeoutError` raised; stdin is always /dev/null.
    """
    args = tuple(os.fspath(a) for a in argv)
    sink = output.open("wb") if output is not None else None
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=None if env is None else dict(env),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            stdout=sink if sink is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT if sink is not None else subprocess.PIPE,
            text=True,
            errors="replace",
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{what or 'running a tool'} failed: {args[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabTimeoutError(f"{what or 'running a tool'} timed out after {timeout:g} s: {' '.join(args)}") from exc
    finally:
        if sink is not None:
            sink.close()
    done = Completed(args, proc.returncode, proc.stdout or "", proc.stderr or "")
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise LabError(
            f"{what or 'command'} failed (exit {proc.returncode}): {' '.join(args)}\n{tail}"
        )
    return done
