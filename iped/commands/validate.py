"""``iped validate [--trust CERT]... [--json] [--format auto|text|pkcs7] [--require-signed] FILE...``: would
the kernel accept these files?

The checks are :mod:`iped.policyfile`'s, the same the daemon runs on its drop-in dir. Each FILE
is plain policy text or a signed DER PKCS#7 blob, told apart by content (never by
extension). A signed blob is checked first as the kernel's verify_pkcs7_signature() would
(see :mod:`iped.pkcs7`), then its inner text is parsed:

* with ``--trust``: the certificates are the keyring; a signer outside them is ENOKEY, invalid;
* without ``--trust``: the container, the signature against its own embedded certificate and the
  content are checked, and the output says ``trust not checked`` (the kernel's keyrings cannot
  be read from userspace, so only ``--trust`` can say whether *this* kernel would accept it).

Then the name must be usable as a securityfs directory: ``.``/``..`` or a ``/`` -> EACCES, more
than 255 bytes -> ENAMETOOLONG. The parser accepts such names; the load fails later.

Output: valid files ``FILE: OK policy_name=... policy_version=...`` on stdout; invalid ones
``FILE:LINE: ERRNO: reason (token '...') — meaning`` (``FILE: ERRNO: ...`` without a line) on
stderr; ``--json`` prints one JSON object per file per line on stdout instead. A missing or
unreadable file is invalid input (``FILE: ENOENT: ...``). Exit 0 when every file is valid, 1
when any is not, 2 for a bad command line — so it works as Ansible's ``validate: iped validate %s``
and Puppet's ``validate_cmd``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from iped.commands import ExitCode, die
from iped.textsafe import escape_controls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO


@dataclass(frozen=True, slots=True)
class FileResult:
    """The verdict on one file; ``errno`` is set exactly when ``valid`` is False."""

    path: str
    valid: bool
    errno: int | None = None
    line: int | None = None
    token: str | None = None
    reason: str | None = None
    policy_name: str | None = None
    policy_version: str | None = None
    signed: bool = False
    signer: str | None = None
    trust_checked: bool = False
    signature_checked: bool = False
    io_error: bool = False  # errno/reason come from reading the file, not from the kernel's checks

    @property
    def message(self) -> str:
        """``ERRNO: reason (token '...') — meaning``, or ``OK ...`` for a valid file."""
        from iped.errnos import errno_meaning, errno_name

        if self.valid:
            out = f"OK policy_name={self.policy_name} policy_version={self.policy_version}"
            if self.signed:
                out += f" signed_by={self.signer!r}"
                if not self.trust_checked:
                    out += " (trust not checked"
                    out += ")" if self.signature_checked else "; no embedded certificate, signature not checked)"
            return out
        assert self.errno is not None
        if self.io_error:
            return f"{errno_name(self.errno)}: {self.reason}"
        tok = f" (token {self.token!r})" if self.token else ""
        return f"{errno_name(self.errno)}: {self.reason}{tok} — {errno_meaning(self.errno)}"

    def human(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"

    def as_json(self) -> str:
        from iped.errnos import errno_name

        d = asdict(self)
        d["errno_number"] = d.pop("errno")
        d["errno"] = None if self.errno is None else errno_name(self.errno)
        d["message"] = self.message
        return json.dumps(d, sort_keys=True)


def check_blob(path: str, blob: bytes, anchors: Sequence[bytes] | None) -> FileResult:
    """A file's verdict from the validator the daemon's scan uses (:func:`iped.policyfile.check_policy`)."""
    from iped.policyfile import PolicyProblem, SigningMaterial, check_policy

    got = check_policy(blob, SigningMaterial(None if anchors is None else tuple(anchors)))
    if isinstance(got, PolicyProblem):
        return FileResult(path, False, got.errno, got.line, got.token, got.reason, got.policy_name,
                          got.policy_version, got.signed, got.signer, got.trust_checked, got.signature_checked)
    return FileResult(path, True, policy_name=got.name, policy_version=str(got.version), signed=got.signed,
                      signer=got.signer, trust_checked=got.trust_checked, signature_checked=got.signature_checked)


def kind_error(path: str, blob: bytes, fmt: str, require_signed: bool) -> FileResult | None:
    """``--format``/``--require-signed``: a file of the wrong kind is EBADMSG, as the kernel says.

    ``new_policy`` takes only a signed DER PKCS#7 blob: it hands unsigned text to
    pkcs7_parse_message(), which fails with EBADMSG.
    """
    from iped.pkcs7 import is_pkcs7

    signed = is_pkcs7(blob)
    if not signed and (fmt == "pkcs7" or require_signed):
        why = "--require-signed" if require_signed else "--format pkcs7"
        return FileResult(path, False, errno.EBADMSG, reason=f"not a signed PKCS#7 blob ({why}): the kernel's "
                          "new_policy refuses unsigned policy text")
    if signed and fmt == "text":
        return FileResult(path, False, errno.EBADMSG, reason="--format text, but the content is a PKCS#7 blob")
    return None


def check_path(path: str, anchors: Sequence[bytes] | None, fmt: str = "auto",
               require_signed: bool = False) -> FileResult:
    """Read and check one file (``-`` is stdin); an unreadable file is an invalid input.

    The size rule comes first and costs nothing: a regular file over the kernel's limit is refused
    by its size (fstat), and no more than the limit and one byte is ever read from anything.
    """
    from iped.policyfile import MAX_POLICY_BYTES, PolicyProblem, size_problem

    def too_large(problem: PolicyProblem) -> FileResult:
        return FileResult(path, False, problem.errno, reason=problem.reason)

    try:
        with contextlib.nullcontext(sys.stdin.buffer) if path == "-" else open(path, "rb") as f:
            st = os.fstat(f.fileno())
            problem = size_problem(st.st_size) if stat.S_ISREG(st.st_mode) else None
            if problem is not None:
                return too_large(problem)
            blob = f.read(MAX_POLICY_BYTES + 1)
    except OSError as e:
        return FileResult(path, False, e.errno or errno.EIO, reason=e.strerror or str(e), io_error=True)
    problem = size_problem(len(blob), exact=False)
    if problem is not None:  # grown since the fstat, or a pipe
        return too_large(problem)
    return kind_error(path, blob, fmt, require_signed) or check_blob(path, blob, anchors)


def read_anchors(paths: Sequence[str]) -> list[bytes]:
    """The ``--trust`` certificates; a missing or malformed one stops the command (exit 1)."""
    from iped.pkcs7 import load_anchor

    anchors: list[bytes] = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
            load_anchor(data)
        except OSError as e:
            from iped.errnos import errno_name

            die(f"{p}: {errno_name(e.errno or errno.EIO)}: {e.strerror}")
        except ValueError as e:
            die(f"{p}: {e}")
        anchors.append(data)
    return anchors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="CERT",
        help="trusted signer or CA certificate (PEM or DER); repeat for more; without it, "
        "signed files are checked against their own certificate only",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file per line on stdout")
    parser.add_argument("--format", choices=("auto", "text", "pkcs7"), default="auto",
                        help="what the files must be (default: told apart by content, whatever the file name)")
    parser.add_argument("--require-signed", action="store_true",
                        help="judge as the kernel's new_policy does: unsigned text is EBADMSG")
    parser.add_argument("files", nargs="+", metavar="FILE", help="policy text or signed DER PKCS#7 ('-' for stdin)")


def _say(line: str, stream: TextIO) -> None:
    """Print one line; a reader that went away (``| head``) silences this stream, nothing more:
    the exit status still says whether every file is valid."""
    try:
        print(line, file=stream, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # the unflushed rest, and every later line, goes nowhere
        os.close(devnull)


def run(args: argparse.Namespace) -> int:
    anchors = read_anchors(args.trust) if args.trust else None
    ok = True
    for path in args.files:
        result = check_path(path, anchors, args.format, args.require_signed)
        ok &= result.valid
        if args.json:
            _say(result.as_json(), sys.stdout)
        else:  # names, paths and tokens escaped: a policy name is never an instruction to a terminal
            _say(escape_controls(result.human()), sys.stdout if result.valid else sys.stderr)
    return ExitCode.OK if ok else ExitCode.FAILED
