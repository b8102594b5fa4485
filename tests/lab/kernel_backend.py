"""The corpus backend for a real IPE kernel (guest side of the lab; runs as root).

* securityfs: one ``write()`` per step on ``/sys/kernel/security/ipe``, so the kernel sees
  exactly the bytes of the case (it parses each write on its own and ignores the offset);
* audit: a read-only member of the audit multicast group (``NETLINK_AUDIT``, group 1 =
  ``AUDIT_NLGRP_READLOG``, needs CAP_AUDIT_READ).  Records arrive asynchronously, so after
  every step the backend sends a user-space marker record (type 1121 with a nonce) and reads
  up to it: everything the step caused was queued before the marker;
* probes: a forked child names itself :data:`~tests.lab.corpus.backend.PROBE_COMM` and performs one
  real exec/mmap/mprotect; 1420 records are kept only for that child's pid, so the runner's
  own mappings (success_audit=1) never leak into the truth;
* fixtures: a copy of the initramfs busybox on tmpfs, an fs-verity capable ext4 image on a
  loop device (plain, signed and non-verity copies), and dm-verity devices with and without
  a root-hash signature.  Whatever cannot be built is reported in ``fixture_notes`` and the
  probes on it fail with ``fixture-missing``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from iped.audit.netlink import AUDIT_NLGRP_READLOG, NETLINK_AUDIT, split_frames
from tests.helpers.netlink_frames import pack_frame
from tests.lab import GUEST_INITRAMFS
from tests.lab.corpus.backend import PROBE_COMM, ProbeOutcome, errno_text, signal_text
from tests.lab.corpus.cases import Probe

IPE_ROOT = Path("/sys/kernel/security/ipe")
AUDIT_MARKER_TYPE = 1121  # AUDIT_TRUSTED_APP: a cheap user record we can send ourselves
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_PREFIX = re.compile(rb"^audit\([0-9.]+:\d+\): ")

_PROT = {"r": 1, "w": 2, "x": 4}
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20
_PR_SET_NAME = 15


def _prot(spec: str) -> int:
    return sum(_PROT[c] for c in spec)


def abi_of_release(release: str) -> str:
    """``6.12.57+deb12-amd64`` -> ``6.12``; ``7.2.13+deb14-amd64`` -> ``7``."""
    major, minor = release.split(".")[:2]
    return f"{major}.{minor}" if major == "6" else major


def initramfs_dir() -> Path | None:
    """The initramfs root as seen by the runner (the lab binds it), or None."""
    root = Path(os.environ.get("IPED_LAB_INITRAMFS") or GUEST_INITRAMFS)
    return root if (root / "bin" / "busybox").is_file() else None


class AuditReader:
    """Audit multicast reader with marker-based synchronisation."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((0, AUDIT_NLGRP_READLOG))
        self.tx = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        self.tx.bind((0, 0))
        self.nonce = 0
        self.mode = "marker"

    def close(self) -> None:
        self.sock.close()
        self.tx.close()

    def _send_marker(self) -> bytes:
        self.nonce += 1
        text = f"iped-corpus-marker-{os.getpid()}-{self.nonce}".encode()
        frame = pack_frame(AUDIT_MARKER_TYPE, text + b"\0", flags=_NLM_F_REQUEST | _NLM_F_ACK, seq=self.nonce)
        self.tx.sendto(frame, (0, 0))
        return text

    def _recv(self, timeout: float) -> list[tuple[int, bytes]]:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return []
        frames, _malformed = split_frames(self.sock.recv(1 << 20))
        return [(rtype, payload.rstrip(b"\0")) for rtype, payload in frames]

    def drain(self) -> list[tuple[int, bytes]]:
        """Records queued before now (type, body without the ``audit(...): `` prefix)."""
        records: list[tuple[int, bytes]] = []
        if self.mode == "marker":
            marker = self._send_marker()
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                batch = self._recv(deadline - time.monotonic())
                for rtype, body in batch:
                    if rtype == AUDIT_MARKER_TYPE and marker in body:
                        return records
                    records.append((rtype, _PREFIX.sub(b"", body)))
            self.mode = "quiet-period"  # the marker never came: fall back for the rest of the run
        while True:
            batch = self._recv(0.3)
            if not batch:
                return records
            records.extend((t, _PREFIX.sub(b"", b)) for t, b in batch)


@dataclass
class KernelBackend:
    """:class:`tests.lab.corpus.backend.Backend` on the running kernel's securityfs."""

    workdir: Path
    audit: AuditReader
    abi: str = field(default_factory=lambda: abi_of_release(platform.release()))
    targets: dict[str, Path] = field(default_factory=dict)
    fact_map: dict[str, str] = field(default_factory=dict)
    fixture_notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, base: Path) -> KernelBackend:
        workdir = base / "iped-corpus"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        backend = cls(workdir, AuditReader())
        backend._libc_setup()
        backend._fixtures()
        backend.audit.drain()
        return backend

    @property
    def sync_mode(self) -> str:
        return self.audit.mode

    def close(self) -> None:
        self.audit.close()

    # ------------------------------------------------------------------ securityfs

    @staticmethod
    def _path(path: str) -> bytes:
        """Corpus paths are latin-1 strings (one char per byte): the exact bytes of the name."""
        root = os.fsencode(IPE_ROOT)
        return root + b"/" + path.encode("latin-1") if path else root

    def write(self, path: str, data: bytes) -> int:
        fd = os.open(self._path(path), os.O_WRONLY)
        try:
            return os.write(fd, data)
        finally:
            os.close(fd)

    def read(self, path: str) -> bytes:
        fd = os.open(self._path(path), os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def listdir(self, path: str) -> list[str]:
        return [n.decode("latin-1") for n in os.listdir(self._path(path))]

    def stat(self, path: str) -> int:
        return os.lstat(self._path(path)).st_mode

    def drain_audit(self, probe_pid: int | None) -> list[tuple[int, bytes]]:
        records = self.audit.drain()
        kept = []
        for rtype, body in records:
            if rtype == 1420:
                m = re.search(rb"\bpid=(\d+) ", body)
                if probe_pid is None or m is None or int(m.group(1)) != probe_pid:
                    continue
            kept.append((rtype, body))
        return kept

    def facts(self) -> Mapping[str, str]:
        return self.fact_map

    # ------------------------------------------------------------------ probes

    def _libc_setup(self) -> None:
        """Bind every libc function a probe child uses now: the child must not load anything."""
        libc = ctypes.CDLL(None, use_errno=True)
        self._mmap = libc.mmap
        self._mmap.restype = ctypes.c_void_p
        self._mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long]
        self._mprotect = libc.mprotect
        self._mprotect.restype = ctypes.c_int
        self._mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._prctl = libc.prctl
        self._prctl.restype = ctypes.c_int
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self._comm = PROBE_COMM.encode()

    def _child(self, probe: Probe, path: Path | None) -> int:
        """Runs in the forked child; returns the exit code (0, errno, or 200+errno for mmap)."""
        self._prctl(_PR_SET_NAME, self._comm, 0, 0, 0)
        if probe.kind == "exec":
            assert path is not None
            try:
                os.execv(path, ["busybox", "true"])
            except OSError as exc:
                return exc.errno or 255
        fd = -1
        flags = _MAP_PRIVATE
        if path is None:
            flags |= _MAP_ANONYMOUS
        else:
            fd = os.open(path, os.O_RDONLY)
        addr = self._mmap(None, 4096, _prot(probe.prot), flags, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:
            return 100 + ctypes.get_errno()
        if probe.kind == "mprotect" and self._mprotect(addr, 4096, _prot(probe.to)) != 0:
            return ctypes.get_errno()
        return 0

    def probe(self, probe: Probe) -> ProbeOutcome:
        path: Path | None = None
        if probe.target != "anon":
            path = self.targets.get(probe.target)
            if path is None:
                return ProbeOutcome("fixture-missing", -1)
        pid = os.fork()
        if pid == 0:
            code = 254
            try:
                code = self._child(probe, path)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return ProbeOutcome(signal_text(os.WTERMSIG(status)), pid)
        code = os.WEXITSTATUS(status)
        if code == 0:
            return ProbeOutcome("0", pid)
        if code >= 100 and probe.kind != "exec":
            return ProbeOutcome("mmap:" + errno_text(OSError(code - 100, "")), pid)
        return ProbeOutcome(errno_text(OSError(code, "")), pid)

    # ------------------------------------------------------------------ fixtures

    def _sh(self, *argv: str, stdin: bytes | None = None) -> str:
        proc = subprocess.run(argv, input=stdin, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        return proc.stdout.decode(errors="replace")

    def _add_target(self, name: str, path: Path, dev: str = "") -> None:
        """Register a probe target; ``dev`` defaults to the block device name (the s_id)."""
        self.targets[name] = path
        st = path.stat()
        if not dev:
            dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve().name
        self.fact_map[f"{name}.path"] = str(path)
        self.fact_map[f"{name}.dev"] = dev
        self.fact_map[f"{name}.ino"] = str(st.st_ino)

    def _fixtures(self) -> None:
        root = initramfs_dir()
        if root is None:
            self.fixture_notes["initramfs"] = "initramfs bind mount not found"
            return
        busybox = root / "bin" / "busybox"
        self._add_target("initramfs", busybox, "rootfs")
        self.fact_map["initramfs.boot_verified"] = "TRUE"
        tmp = self.workdir / "tmpfs"
        tmp.mkdir()
        shutil.copy(busybox, tmp / "busybox")
        self._add_target("tmpfs", tmp / "busybox", "tmpfs")
        try:
            self._fsverity(busybox)
        except Exception as exc:
            self.fixture_notes["fsverity"] = str(exc)
        try:
            self._dmverity(busybox)
        except Exception as exc:
            self.fixture_notes["dmverity"] = str(exc)

    def _loop_dev(self, image: Path, *extra: str) -> str:
        return self._sh("losetup", "--find", "--show", *extra, str(image)).strip()

    def _fsverity(self, busybox: Path) -> None:
        from tests.lab import keys

        img = self.workdir / "fsverity.img"
        with img.open("wb") as fh:
            fh.truncate(32 << 20)
        self._sh("mkfs.ext4", "-q", "-b", "4096", "-O", "verity", "-E", "root_owner=0:0", str(img))
        loop = self._loop_dev(img)
        mnt = self.workdir / "fsv"
        mnt.mkdir()
        self._sh("mount", "-t", "ext4", loop, str(mnt))
        for name in ("plain", "signed", "none"):
            shutil.copy(busybox, mnt / name)
            os.chmod(mnt / name, 0o755)
        self._sh("fsverity", "enable", str(mnt / "plain"))
        cert_der = keys.FSVERITY_SIGNER.cert_der()
        self._sh("keyctl", "padd", "asymmetric", "iped-corpus-fsverity", "%keyring:.fs-verity", stdin=cert_der)
        sig = self.workdir / "signed.sig"
        self._sh("fsverity", "sign", str(mnt / "signed"), str(sig),
                 f"--key={self._key_copy()}",
                 f"--cert={keys.FSVERITY_SIGNER.cert}")
        self._sh("fsverity", "enable", f"--signature={sig}", str(mnt / "signed"))
        for name in ("plain", "signed", "none"):
            self._add_target(f"fsverity:{name}", mnt / name)
        for name in ("plain", "signed"):
            out = self._sh("fsverity", "measure", str(mnt / name)).split()[0]
            alg, _, digest = out.partition(":")
            self.fact_map[f"fsverity:{name}.alg"] = alg
            self.fact_map[f"fsverity:{name}.digest"] = digest
        self.fact_map["fsverity:signed.signed"] = "TRUE"

    def _key_copy(self) -> Path:
        from tests.lab import keys

        dest = self.workdir / "fsverity-signer.key"
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(keys.FSVERITY_SIGNER.key.read_bytes())
        return dest

    def _dmverity(self, busybox: Path) -> None:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.serialization import pkcs7

        from tests.lab import keys

        src = self.workdir / "dmv-src"
        src.mkdir()
        shutil.copy(busybox, src / "busybox")
        os.chmod(src / "busybox", 0o755)
        data = self.workdir / "dmverity.img"
        with data.open("wb") as fh:
            fh.truncate(16 << 20)
        self._sh("mkfs.ext4", "-q", "-b", "4096", "-d", str(src), "-E", "root_owner=0:0", str(data))
        hash_img = self.workdir / "dmverity.hash"
        out = self._sh("veritysetup", "format", "--salt=00", str(data), str(hash_img))
        m = re.search(r"Root hash:\s+([0-9a-f]+)", out)
        if m is None:
            raise RuntimeError(f"veritysetup format printed no root hash: {out[-300:]}")
        roothash = m.group(1)
        self.fact_map["dmverity.alg"] = "sha256"
        self.fact_map["dmverity.roothash"] = roothash
        sig = (pkcs7.PKCS7SignatureBuilder().set_data(roothash.encode())
               .add_signer(keys.RSA_SIGNER.certificate(), keys.RSA_SIGNER.private_key(), hashes.SHA256())
               .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                                  pkcs7.PKCS7Options.NoAttributes, pkcs7.PKCS7Options.Binary]))
        sig_path = self.workdir / "roothash.p7s"
        sig_path.write_bytes(sig)
        for name, extra in (("plain", ()), ("signed", (f"--root-hash-signature={sig_path}",))):
            # separate loop devices per mapping: one data device cannot be mapped twice
            dloop = self._loop_dev(data, "--read-only")
            hloop = self._loop_dev(hash_img, "--read-only")
            mapping = f"iped-corpus-{name}"
            try:
                self._sh("veritysetup", "open", *extra, dloop, mapping, hloop, roothash)
            except RuntimeError as exc:
                self.fixture_notes[f"dmverity:{name}"] = str(exc)
                continue
            mnt = self.workdir / f"dmv-{name}"
            mnt.mkdir()
            self._sh("mount", "-t", "ext4", "-o", "ro", f"/dev/mapper/{mapping}", str(mnt))
            self._add_target(f"dmverity:{name}", mnt / "busybox")
        if "dmverity:signed" in self.targets:
            self.fact_map["dmverity:signed.signed"] = "TRUE"
