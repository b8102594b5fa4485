"""The corpus backend on :class:`iped.emulator.Emulator`: the same steps, no kernel.

Securityfs steps map one-to-one onto ``Emulator.write/read/listdir/stat``.  Probes cannot run
for real, so each probe becomes the hook calls the kernel makes for it, fed with the facts the
lab measured in the guest (``_facts`` in the truth file: path, dev, inode, fs-verity digest,
dm-verity root hash, signature flags):

* ``exec``: ``bprm_check`` with the probe's comm; if allowed, the ELF loader maps the
  executable segment (``mmap_file`` PROT_READ|PROT_EXEC, comm already the binary's basename);
  a denial there is past the point of no return, so the child dies with SIGSEGV;
* ``mmap``: ``mmap_file`` with the probe's prot (anonymous: no file);
* ``mprotect``: the mmap first, then ``file_mprotect`` (skipped by IPE for a VM_EXEC area).

The emulated kernel trusts the lab's enrolled certificates (RSA and EC signers, the lab CA)
in its ``.platform`` keyring, as the lab's firmware puts them there.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.lab.corpus.backend import PROBE_COMM, ProbeOutcome
from tests.lab.corpus.cases import Probe

if TYPE_CHECKING:
    from iped.emulator import Emulator, FileInfo

#: Corpus kernel series -> emulator ABI.
ABI_OF_SERIES: dict[str, str] = {"6.12": "6.12", "7": "7.0"}
_PROT = {"r": 1, "w": 2, "x": 4}
_PROT_EXEC = 4
#: Pids handed to probe tasks (any value works: records are normalised to ``{pid}``).
_PIDS = itertools.count(4000)


def _prot(spec: str) -> int:
    return sum(_PROT[c] for c in spec)


def _os_str(path: str) -> str:
    return path.encode("latin-1").decode("utf-8", "surrogateescape")


def _latin1_str(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("latin-1")


def _hex_bytes(value: str) -> bytes:
    return bytes.fromhex(value)


@dataclass
class EmulatorBackend:
    """:class:`tests.lab.corpus.backend.Backend` on a fresh emulator of one kernel series."""

    series: str
    fact_map: Mapping[str, str]
    emu: Emulator = field(init=False)

    def __post_init__(self) -> None:
        from iped.emulator import Emulator
        from tests.lab import keys

        self.emu = Emulator(abi=ABI_OF_SERIES[self.series])
        for signer in keys.ENROLLED:
            self.emu.trust(signer.cert.read_bytes(), "platform")

    @property
    def abi(self) -> str:
        return self.series

    # The corpus spells paths as latin-1 strings (one char per byte); the emulator, like os,
    # uses UTF-8 with surrogateescape.
    def write(self, path: str, data: bytes) -> int:
        return self.emu.write(_os_str(path), data)

    def read(self, path: str) -> bytes:
        return self.emu.read(_os_str(path))

    def listdir(self, path: str) -> list[str]:
        return [_latin1_str(n) for n in self.emu.listdir(_os_str(path))]

    def stat(self, path: str) -> int:
        return self.emu.stat(_os_str(path)).st_mode

    def drain_audit(self, probe_pid: int | None) -> list[tuple[int, bytes]]:
        out = []
        for rtype, body in self.emu.drain_audit():
            raw = body.encode("utf-8", "surrogateescape")
            if rtype == 1420 and (probe_pid is None or f" pid={probe_pid} ".encode() not in raw):
                continue
            out.append((rtype, raw))
        return out

    def facts(self) -> Mapping[str, str]:
        return self.fact_map

    def file_info(self, target: str) -> FileInfo | None:
        """The FileInfo of a probe target from the recorded facts (None: missing fixture)."""
        from iped.emulator import FileInfo

        f = self.fact_map
        if f"{target}.path" not in f:
            return None
        fsv = None
        if f"{target}.digest" in f:
            fsv = (f[f"{target}.alg"], _hex_bytes(f[f"{target}.digest"]))
        dmv = None
        if target.startswith("dmverity:") and "dmverity.roothash" in f:
            dmv = (f["dmverity.alg"], _hex_bytes(f["dmverity.roothash"]))
        return FileInfo(
            path=f[f"{target}.path"], dev=f[f"{target}.dev"], ino=int(f[f"{target}.ino"]),
            boot_verified=f.get(f"{target}.boot_verified") == "TRUE",
            dmverity_roothash=dmv, dmverity_signature=f.get(f"{target}.signed") == "TRUE" and dmv is not None,
            fsverity_digest=fsv, fsverity_signature=f.get(f"{target}.signed") == "TRUE" and fsv is not None,
        )

    def probe(self, probe: Probe) -> ProbeOutcome:
        from iped.emulator import Task

        file = None
        if probe.target != "anon":
            file = self.file_info(probe.target)
            if file is None:
                return ProbeOutcome("fixture-missing", -1)
        pid = next(_PIDS)
        task = Task(pid=pid, comm=PROBE_COMM)
        try:
            if probe.kind == "exec":
                assert file is not None
                self.emu.bprm_check(file, task)
                binary = Task(pid=pid, comm=file.path.rsplit("/", 1)[-1][:15])
                try:
                    self.emu.mmap_file(file, _prot("rx"), binary)
                except PermissionError:
                    return ProbeOutcome("signal:SIGSEGV", pid)
                return ProbeOutcome("0", pid)
            try:
                self.emu.mmap_file(file, _prot(probe.prot), task)
            except PermissionError:
                return ProbeOutcome("mmap:EACCES", pid)
            if probe.kind == "mprotect":
                self.emu.file_mprotect(file, bool(_prot(probe.prot) & _PROT_EXEC), _prot(probe.to), task)
        except PermissionError as exc:
            return ProbeOutcome(errno.errorcode.get(exc.errno or 0, "EACCES"), pid)
        return ProbeOutcome("0", pid)
