"""Where the policy of a survey or suggestion comes from, and how a suggestion is versioned.

* a FILE: plain text, or a signed PKCS#7 blob whose inner text is read without a trust check
  (evaluation needs the text; whether this kernel would accept the signature is ``iped
  validate --trust``'s question);
* the configuration's declared active policy: ``[policies] active`` looked up by
  ``policy_name`` among the files of ``[policies] dir`` and the policies ``iped rollback``
  rolled forward, as the daemon does;
* the kernel's active policy, read from securityfs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iped.settings import Settings

#: the policy a site starts from: everything but code execution and module loading is allowed;
#: run it with ``enforce = false`` and every exec and module load is audited as a would-be denial
STARTER_TEMPLATE = """\
policy_name={name} policy_version=0.0.1
# Starter policy written by `iped suggest --starter`. Activate it in permissive mode
# (iped.toml: active = "{name}", enforce = false): IPE then audits every exec and module load
# this policy would deny, and `iped suggest` turns those records into the rules that allow them.
DEFAULT action=ALLOW
DEFAULT op=EXECUTE action=DENY
DEFAULT op=KMODULE action=DENY
"""

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_VERSION_TOKEN = re.compile(rb"(policy_version=)([^ \t#\r\n]+)")


class PolicySourceError(Exception):
    """No policy text could be had; the message says which source and why."""


@dataclass(frozen=True, slots=True)
class PolicySource:
    """Policy text and where it came from (a file, or securityfs)."""

    text: bytes
    origin: str


def starter_policy(name: str) -> bytes:
    """The starter policy under ``name``. Raises ValueError for a name unfit for securityfs."""
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"policy name {name!r}: use letters, digits, '.', '_' and '-' (at most 255)")
    return STARTER_TEMPLATE.format(name=name).encode()


def read_policy_file(path: str | Path) -> PolicySource:
    """Plain policy text, or the inner text of a signed blob (trust is not checked here)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PolicySourceError(f"{path}: {os.strerror(e.errno or 0)}") from None
    return _policy_source(raw, str(path))


def _policy_source(raw: bytes, origin: str) -> PolicySource:
    from iped.pkcs7 import is_pkcs7, unverified_content

    if is_pkcs7(raw):
        inner = unverified_content(raw)
        if inner is None:
            raise PolicySourceError(f"{origin}: a PKCS#7 blob without policy text inside (DER signedData expected)")
        return PolicySource(inner, origin)
    return PolicySource(raw, origin)


def declared_active(settings: Settings) -> PolicySource | None:
    """The policy the daemon puts in effect as ``[policies] active``, or None when unset.

    The daemon's own answer (:meth:`iped.daemon.declared.DeclaredState.find_active` on the
    declaration :func:`iped.daemon.scan.declare` builds): the file of ``[policies] dir`` that
    declares that policy_name, read as the daemon reads it (owner and mode of the directory, no
    symlink followed, nothing but a regular file, bounded size, not while open for writing),
    unless ``iped rollback`` rolled it forward to a higher version (``state_dir/rolled-forward``).
    Only the text matters here: plain text is not signed, and a signer is not checked against
    the trust anchors.

    Raises PolicySourceError when ``active`` is set but no valid file declares it, saying why.
    """
    from iped.daemon.dropin import declares
    from iped.daemon.planlog import ROLLED_FORWARD
    from iped.daemon.scan import UNDECLARED_ACTIVE, declare, load_for_reading

    pol = settings.policies
    if pol.active is None:
        return None
    rolled_forward = settings.daemon.state_dir / ROLLED_FORWARD
    state = declare(pol, rolled_forward, load_for_reading).state
    found = state.find_active()
    if found is None:
        # the problems that explain it: a directory refused, or a broken file named after the policy
        why = [str(e) for e in state.errors if e.meaning != UNDECLARED_ACTIVE
               and (Path(e.file) in (pol.dir, rolled_forward) or declares(Path(e.file), pol.active))]
        raise PolicySourceError(f"[policies] active = {pol.active!r}, but no valid file in {pol.dir} declares "
                                f"policy_name={pol.active}" + "".join(f"; {w}" for w in why))
    return PolicySource(found.text, str(found.source))


def kernel_active() -> PolicySource | None:
    """The kernel's active policy from securityfs (None: no IPE here, or nothing active)."""
    from iped.audit.explain import active_policy

    found = active_policy()
    return None if found is None else PolicySource(found[0], found[1])


def next_version(text: bytes) -> bytes:
    """``text`` with its header's policy_version raised by one revision (carrying into minor, major).

    The kernel updates a policy in place only with a strictly higher version (ESTALE otherwise).
    Raises PolicyError for text that does not parse; OverflowError at 65535.65535.65535.
    """
    from iped.rollout import engine

    version = engine.parse_policy(text).version
    major, minor, rev = version.major, version.minor, version.rev + 1
    if rev > 0xFFFF:
        minor, rev = minor + 1, 0
    if minor > 0xFFFF:
        major, minor = major + 1, 0
    if major > 0xFFFF:
        raise OverflowError(f"policy_version {version} is the highest there is: no newer version can be written")
    new = f"{major}.{minor}.{rev}".encode()
    lines = split_lines(text)
    at = header_index(lines)
    lines[at] = _VERSION_TOKEN.sub(lambda m: m.group(1) + new, lines[at], count=1)
    return b"".join(lines)


_LINE_BREAK = re.compile(rb"\r\n|\n|\r")
# lib/ctype.c isspace(): what the kernel strips from the end of a line
_KERNEL_SPACE = b"\t\n\x0b\x0c\r \xa0"


def split_lines(text: bytes) -> list[bytes]:
    """Lines with their breaks, numbered as the parser numbers them (``lines[n - 1]`` is line n)."""
    out = []
    start = 0
    for m in _LINE_BREAK.finditer(text):
        out.append(text[start : m.end()])
        start = m.end()
    if start < len(text):
        out.append(text[start:])
    return out


def is_blank(line: bytes) -> bool:
    """True for a line the parser skips: empty, or only a comment and space."""
    return not line.split(b"#", 1)[0].rstrip(_KERNEL_SPACE)


def header_index(lines: list[bytes]) -> int:
    """The index of the header line: the first line that is not blank or a comment."""
    return next(i for i, line in enumerate(lines) if not is_blank(line))
