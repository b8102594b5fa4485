"""Declared state: what ``[policies]`` and the drop-in dir ask the kernel to hold.

A frozen snapshot; the kernel's side is :mod:`iped.daemon.actual`. :func:`scan_declared` checks
every file with the validator ``iped validate`` uses (:mod:`iped.policyfile`: format by content,
kernel-exact parser, directory name) and verifies (or, for plain text, creates and verifies) each
PKCS#7 signature before anything can reach the kernel; problems come back as :class:`DeclError`
values, never as a half-built state.

Every name that looks like a policy is read by :func:`read_policy_file`, which trusts nothing
about the directory: a symlink is refused (never followed), anything but a regular file is
reported without being opened, a file over the kernel's size limit is refused by its size, and a
file someone still holds open for writing is not read at all (a read lease, see
:func:`held_for_writing`). Each of these rejects the plan: a name that cannot be read never
counts as a deleted policy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import hashlib
import os
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from iped.emulator.policy_parser import Version
from iped.errnos import describe_errno, errno_name
from iped.policyfile import MAX_POLICY_BYTES, PolicyProblem, SigningMaterial, Stage, check_policy, size_problem
from iped.trustpath import UntrustedPathError, check_path, check_stat

#: Files in the drop-in dir that are never policies: editor, package-manager and Ansible temporaries.
IGNORED_PATTERNS = (".*", "*~", "*.dpkg-*", "*.rpm*", ".ansible_tmp*", "*.swp", "*.tmp")
SIGNED_SUFFIX = ".p7s"
PLAIN_SUFFIX = ".pol"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class DeclError:
    """Why a declared policy (or the declaration as a whole) cannot be deployed."""

    file: str
    line: int | None
    errno: int
    reason: str
    plain: bool = False  # not the kernel's word (a filesystem or config error): no IPE meaning attached
    #: what the errno stands for here when neither the kernel's IPE meaning nor strerror() fits
    #: (ENOENT for a policy no file declares is not "No such file or directory")
    meaning: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if self.meaning is not None:
            said = f"{errno_name(self.errno)} ({self.meaning})"
        elif self.plain:
            said = f"{errno_name(self.errno)} ({os.strerror(self.errno)})"
        else:
            said = describe_errno(self.errno)
        return f"{where}: {said}: {self.reason}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "errno": self.errno,
                "errno_name": errno_name(self.errno), "reason": self.reason,
                "message": str(self)}


@dataclass(frozen=True, slots=True)
class DeclaredPolicy:
    """One policy the drop-in dir declares, already parsed and signature-checked."""

    name: str
    version: Version
    text: bytes
    blob: bytes
    source: Path
    signer: str

    @property
    def text_digest(self) -> str:
        return sha256(self.text)

    @property
    def blob_digest(self) -> str:
        return sha256(self.blob)


@dataclass(frozen=True, slots=True)
class DeclaredState:
    """What the configuration asks the kernel to look like."""

    policies: tuple[DeclaredPolicy, ...]
    active: str | None
    enforce: bool
    success_audit: bool
    protect: tuple[str, ...] = ()
    errors: tuple[DeclError, ...] = ()

    def get(self, name: str) -> DeclaredPolicy | None:
        return next((p for p in self.policies if p.name == name), None)

    def protected(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.protect)


def is_ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in IGNORED_PATTERNS)


def policy_files(directory: Path) -> list[Path]:
    """Every name that stands for a policy, sorted; temporaries and unknown suffixes are skipped.

    Whatever the name is (a symlink, a FIFO, a directory) it is listed: :func:`read_policy_file`
    says why it cannot be a policy. Raises OSError when the directory cannot be listed.
    """
    return [directory / n for n in sorted(os.listdir(directory))
            if not is_ignored(n) and n.endswith((SIGNED_SUFFIX, PLAIN_SUFFIX))]


def fs_error(path: Path | str, e: OSError, what: str) -> DeclError:
    """A filesystem error, worded as one (no IPE meaning attached to its errno)."""
    return DeclError(str(path), None, e.errno or errno.EIO, f"{what}: {e.strerror or e}", plain=True)


#: lstat() file types -> how a non-regular file is named in errors
_FILE_TYPES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def _not_a_policy_file(path: Path, st: os.stat_result) -> DeclError | None:
    """Why this lstat() result cannot be read as a policy (None: a regular file of sane size)."""
    if stat.S_ISLNK(st.st_mode):
        return DeclError(str(path), None, errno.ELOOP,
                         "is a symbolic link: links in the drop-in dir are never followed; copy the file in "
                         "(write a temporary name, then rename it)", plain=True)
    if stat.S_ISDIR(st.st_mode):
        return DeclError(str(path), None, errno.EISDIR, "is a directory, named like a policy file", plain=True)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_TYPES if test(st.st_mode)), "a special file")
        return DeclError(str(path), None, errno.EINVAL, f"not a regular file ({kind}); not opened", plain=True)
    too_large = size_problem(st.st_size)
    if too_large is not None:
        return DeclError(str(path), None, too_large.errno, f"{too_large.reason}, so the file is not read")
    return None


def held_for_writing(fd: int, st: os.stat_result) -> bool:
    """Is the file behind ``fd`` (opened read-only) open for writing by anyone?

    The exact and cheap test is a read lease: F_SETLEASE F_RDLCK fails with EAGAIN while any
    descriptor or shared mapping has the inode open for writing. It is kept while the caller
    reads (a writer's open() then waits for :func:`release_lease`, microseconds), so the bytes
    read are the bytes of a closed file. A lease needs the file's owner uid or CAP_LEASE and a
    filesystem with leases; without them the /proc/*/fd scan answers instead (slower, and blind
    to processes hidden from us).
    """
    try:
        # a broken lease signals us; SIGURG is ignored by default (SIGIO, the default, would kill us)
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        return False
    except OSError as e:
        if e.errno == errno.EAGAIN:
            return True
    return writer_in_proc(st)


def release_lease(fd: int) -> None:
    with contextlib.suppress(OSError):  # no lease was taken (the /proc scan answered)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def writer_in_proc(st: os.stat_result) -> bool:
    """Does any process we can see hold the inode ``st`` open with write access?"""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.stat(f"/proc/{pid}/fd/{fd}")
                if (target.st_dev, target.st_ino) != (st.st_dev, st.st_ino):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as info:
                    flags = next(int(line.split()[1], 8) for line in info if line.startswith(b"flags:"))
            except (OSError, StopIteration, ValueError, IndexError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                return True
    return False


def is_being_written(path: Path) -> bool:
    """Is ``path`` a regular file someone holds open for writing? (A symlink, FIFO or a name that
    is gone is not: it will not change by being written.)"""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        held = held_for_writing(fd, os.fstat(fd))
        release_lease(fd)
        return held
    finally:
        os.close(fd)


def untrusted(e: UntrustedPathError) -> DeclError:
    """A path someone other than root (or iped's user) can change: its content is not taken as a
    declaration (:mod:`iped.trustpath`)."""
    return DeclError(e.filename, None, errno.EPERM, f"{e.why} (hint: {e.fix})", plain=True)


def read_policy_file(path: Path) -> bytes | DeclError:
    """The bytes of one drop-in file, or why they are not to be had.

    Never follows a symlink (lstat, then O_NOFOLLOW), never opens anything but a regular file
    and opens that with O_NONBLOCK (a FIFO swapped in after the lstat cannot block the loop),
    refuses by size before reading (fstat; at most MAX_POLICY_BYTES are ever read), and does not
    read a file that someone still holds open for writing (EBUSY: it is read on IN_CLOSE_WRITE).
    """
    try:
        bad = _not_a_policy_file(path, os.lstat(path))
        if bad is not None:
            return bad
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:  # replaced by a symlink after the lstat
            return DeclError(str(path), None, errno.ELOOP, "is a symbolic link: never followed", plain=True)
        return fs_error(path, e, "cannot open")
    try:
        st = os.fstat(fd)
        bad = _not_a_policy_file(path, st)
        if bad is not None:
            return bad
        try:  # the inode read: its owner and mode (the directory was checked by the caller)
            check_stat(str(path), st, "a declared policy")
        except UntrustedPathError as e:
            return untrusted(e)
        if held_for_writing(fd, st):
            return DeclError(str(path), None, errno.EBUSY,
                             "still open for writing by another process: it is read once closed. Write "
                             "policies to a temporary name (.*, *.tmp) and rename them in", plain=True)
        try:
            data = os.read(fd, MAX_POLICY_BYTES + 1)
            while len(data) <= MAX_POLICY_BYTES and (more := os.read(fd, MAX_POLICY_BYTES + 1 - len(data))):
                data += more
        finally:
            release_lease(fd)
    except OSError as e:
        return fs_error(path, e, "cannot read")
    finally:
        os.close(fd)
    if len(data) > MAX_POLICY_BYTES:
        return DeclError(str(path), None, errno.EMSGSIZE, f"grew over {MAX_POLICY_BYTES} bytes while read")
    return data


_STAGE_PREFIX = {Stage.SIGNATURE: "signature check failed: ", Stage.SIGNING: "signing failed: ",
                 Stage.SIGNED_TEXT: "signed text: "}


def _decl_error(path: Path, p: PolicyProblem) -> DeclError:
    """The daemon's wording of a problem. A token is bytes of the file: it is shown only when the
    file is a policy (its first line is a policy header), since status readers, the log and the
    plan records must never see a line of some other file (a hard link to /etc/shadow)."""
    if p.is_policy:
        tok = f" (token {p.token!r})" if p.token else ""
    else:
        tok = " (not a policy: its first line is no policy_name=... policy_version=... header; content not shown)"
    # signing happens here, not in the kernel: the kernel's meaning of its errno does not apply
    return DeclError(str(path), p.line, p.errno, f"{_STAGE_PREFIX.get(p.stage, '')}{p.reason}{tok}",
                     plain=p.stage is Stage.SIGNING)


def load_policy_file(path: Path, signing: SigningMaterial, raw: bytes | None = None) -> DeclaredPolicy | DeclError:
    """Read and check one file (:func:`iped.policyfile.check_policy`); plain text is signed with
    the local key of ``signing``, and every blob verified against its anchors."""
    if raw is None:
        read = read_policy_file(path)
        if isinstance(read, DeclError):
            return read
        raw = read
    got = check_policy(raw, signing, sign_text=True)
    if isinstance(got, PolicyProblem):
        return _decl_error(path, got)
    assert got.blob is not None and got.signer is not None  # sign_text: every accepted file is signed
    return DeclaredPolicy(got.name, got.version, got.text, got.blob, path, got.signer)


Loader = Callable[[Path], "DeclaredPolicy | DeclError"]


def _declares(path: Path, name: str) -> bool:
    """Does this (broken) file stand for policy ``name``? Its file name says so: ``name.pol``."""
    return path.name in (name + PLAIN_SUFFIX, name + SIGNED_SUFFIX)


def scan_declared(directory: Path, *, active: str | None, enforce: bool, success_audit: bool,
                  signing: SigningMaterial, protect: tuple[str, ...] = (),
                  loader: Loader | None = None) -> DeclaredState:
    """Build the declared state from the drop-in dir; every problem is collected in ``errors``.

    ``loader`` replaces :func:`load_policy_file` (the reconciler passes a cached one).
    """
    policies: list[DeclaredPolicy] = []
    errors: list[DeclError] = []
    seen: dict[str, Path] = {}
    try:
        check_path(directory, "declared policies")
        paths = policy_files(directory)
    except UntrustedPathError as e:
        paths = []
        errors.append(untrusted(e))
    except OSError as e:
        paths = []
        errors.append(fs_error(directory, e, "cannot list the policy directory"))
    for path in paths:
        got = loader(path) if loader is not None else load_policy_file(path, signing)
        if isinstance(got, DeclError):
            errors.append(got)
            continue
        if got.name in seen:
            errors.append(DeclError(str(path), 1, errno.EEXIST,
                                    f"two files declare policy_name={got.name}: {seen[got.name]} and {path}; "
                                    "each name may come from one file only (a .p7s signed from a .pol replaces "
                                    "it: remove the .pol, or sign outside the drop-in dir)",
                                    meaning="one policy name declared twice"))
            continue
        seen[got.name] = path
        policies.append(got)
    # a broken file named after the active policy already explains why it is missing
    if active is not None and active not in seen and not any(_declares(Path(e.file), active) for e in errors):
        empty = "; it holds no policy file (*.pol, *.p7s)" if not paths and not errors else ""
        errors.append(DeclError(str(directory), None, errno.ENOENT,
                                f"active = {active!r} but no file in the directory declares policy_name={active}"
                                f"{empty}", plain=True, meaning="the active policy is declared by no file"))
    return DeclaredState(tuple(policies), active, enforce, success_audit, protect, tuple(errors))


@dataclass(frozen=True, slots=True)
class Overlaid:
    """The declared state with the rolled-forward policies in effect, and the rolled-forward files
    the drop-in dir has superseded (for the reconciler to remove)."""

    state: DeclaredState
    superseded: tuple[Path, ...]


def overlay_rolled_forward(decl: DeclaredState, directory: Path, load: Loader) -> Overlaid:
    """Overlay the policies ``iped rollback`` wrote to the daemon's ``directory`` on ``decl``.

    A rolled-forward ``NAME`` is in effect while the drop-in dir declares ``NAME`` at a lower
    version (it replaces that file's policy); once the drop-in dir declares ``NAME`` at the same
    or a higher version, or no longer declares it at all, it is superseded: ignored, and removed
    by the next reconcile whose plan is not rejected (a rejected plan changes nothing on disk: a
    drop-in file moved out and back must find its rollback still there). While the drop-in file
    of ``NAME`` is invalid it is neither (that file's error rejects the plan anyway). So config
    management keeps owning the drop-in dir: it is never written, a rollback does not fight the
    next deployment of the old file, and the next higher version deployed there wins.
    """
    try:
        check_path(directory, "declared (rolled-forward) policies")
        paths = policy_files(directory)
    except FileNotFoundError:
        return Overlaid(decl, ())
    except UntrustedPathError as e:
        return Overlaid(replace(decl, errors=(*decl.errors, untrusted(e))), ())
    except OSError as e:
        return Overlaid(replace(decl, errors=(*decl.errors, fs_error(directory, e, "cannot list"))), ())
    policies = {p.name: p for p in decl.policies}
    errors = list(decl.errors)
    superseded: list[Path] = []
    taken: set[str] = set()
    for path in paths:
        got = load(path)
        if isinstance(got, DeclError):
            errors.append(got)
            continue
        if got.name in taken:
            errors.append(DeclError(str(path), 1, errno.EEXIST, f"policy {got.name!r} is rolled forward twice",
                                    meaning="one policy name declared twice"))
            continue
        taken.add(got.name)
        own = policies.get(got.name)
        if own is None and any(_declares(Path(e.file), got.name) for e in decl.errors):
            continue  # its drop-in file is broken: not in effect, not superseded either
        if own is None or own.version.as_u64() >= got.version.as_u64():
            superseded.append(path)
            continue
        policies[got.name] = got
    state = replace(decl, policies=tuple(policies[p.name] for p in decl.policies), errors=tuple(errors))
    return Overlaid(state, tuple(superseded))
