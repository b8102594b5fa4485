"""IPE policy text -> parsed policy, exactly as the kernel parses it (security/ipe/policy_parser.c).

This is the one implementation of the policy language: ``iped validate``, the daemon and the
emulator all call :func:`parse_policy`. It returns what ``ipe_parse_policy()`` returns for the
same bytes — a parsed policy or the errno of the first failing line — and adds what the kernel
does not report: the 1-based line, the offending token and a reason.

Kernel details reproduced on purpose:
* the text ends at the first NUL (``kmemdup_nul`` then C string handling);
* ``\\n`` and ``\\r`` each end a line (``strsep(.., "\\n\\r")``), so CRLF adds an empty line;
* ``#`` starts a comment anywhere, even inside a token;
* trailing bytes the kernel's ``isspace()`` accepts are stripped (0x09-0x0D, 0x20, 0xA0);
* tokens are split on space and TAB only; keywords are exact, case-sensitive byte compares;
* version components go through ``kstrtou16(.., 10)``; digests through ``ipe_digest_parse``.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from iped.emulator.digest import Digest, DigestError, digest_parse
from iped.errnos import ErrnoMeaning


class Op(StrEnum):
    """Operations (``enum ipe_op_type``), in the kernel's order."""

    EXECUTE = "EXECUTE"
    FIRMWARE = "FIRMWARE"
    KMODULE = "KMODULE"
    KEXEC_IMAGE = "KEXEC_IMAGE"
    KEXEC_INITRAMFS = "KEXEC_INITRAMFS"
    POLICY = "POLICY"
    X509_CERT = "X509_CERT"


#: Index of each op in the kernel's rule tables (``p->rules[op]``).
OP_INDEX: dict[Op, int] = {op: i for i, op in enumerate(Op)}


class Action(StrEnum):
    """``enum ipe_action_type``."""

    ALLOW = "ALLOW"
    DENY = "DENY"


class PropType(StrEnum):
    """``enum ipe_prop_type``; each value is the kernel's audit spelling (``audit_prop_names``)."""

    BOOT_VERIFIED_FALSE = "boot_verified=FALSE"
    BOOT_VERIFIED_TRUE = "boot_verified=TRUE"
    DMV_ROOTHASH = "dmverity_roothash="
    DMV_SIG_FALSE = "dmverity_signature=FALSE"
    DMV_SIG_TRUE = "dmverity_signature=TRUE"
    FSV_DIGEST = "fsverity_digest="
    FSV_SIG_FALSE = "fsverity_signature=FALSE"
    FSV_SIG_TRUE = "fsverity_signature=TRUE"

    @property
    def takes_digest(self) -> bool:
        return self in (PropType.DMV_ROOTHASH, PropType.FSV_DIGEST)


# The match_token() tables, built from the enums so each keyword is written once.
_OPERATION_TOKENS: dict[bytes, Op] = {f"op={op}".encode(): op for op in Op}
_ACTION_TOKENS: dict[bytes, Action] = {f"action={a}".encode(): a for a in Action}
_FLAG_PROPERTY_TOKENS: dict[bytes, PropType] = {p.value.encode(): p for p in PropType if not p.takes_digest}
_DIGEST_PROPERTY_PREFIXES: tuple[tuple[bytes, PropType], ...] = tuple(
    (p.value.encode(), p) for p in PropType if p.takes_digest
)
_HEADER_NAME = b"policy_name="
_HEADER_VERSION = b"policy_version="

_LINE_DELIM = re.compile(rb"[\n\r]")
_TOKEN_DELIM = re.compile(rb"[ \t]")
# lib/ctype.c: isspace() is true for \t \n \v \f \r, space, and 0xA0 (Latin-1 NBSP).
_KERNEL_SPACE = b"\t\n\x0b\x0c\r \xa0"


@dataclass(frozen=True, slots=True)
class Prop:
    """One property of a rule; ``value`` is set for the digest properties."""

    type: PropType
    value: Digest | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A normal (non-DEFAULT) rule; ``line`` is iped's addition (1-based source line)."""

    op: Op
    action: Action
    props: tuple[Prop, ...]
    line: int


@dataclass(frozen=True, slots=True)
class OpTable:
    """``struct ipe_op_table``: the per-op default and the op's rules in file order."""

    default: Action | None
    rules: tuple[Rule, ...]
    default_line: int | None = None


@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int
    rev: int

    def as_u64(self) -> int:
        """ver_to_u64(): the value the anti-rollback checks compare."""
        return self.major << 32 | self.minor << 16 | self.rev

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.rev}"


def name_str(name: bytes) -> str:
    """A policy name as iped's ``str``: the one decoding of names, for the declared file
    (``iped validate``, the planner), the name read back from securityfs and the state dir.

    The kernel takes any bytes but NUL and the separators (corpus case ``n-ff``, 6.12 and 7:
    ``x\\xff\\xfe`` loads, its directory and ``name`` file are those bytes), so bytes that are
    not UTF-8 stay as surrogates (``surrogateescape``): the name round-trips to the exact
    ``policies/<name>`` directory. Print it with :func:`iped.textsafe.escape_controls`.
    """
    return name.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class ParsedPolicy:
    """``struct ipe_parsed_policy``. ``name`` is bytes: the kernel accepts any non-NUL byte."""

    name: bytes
    version: Version
    global_default: Action | None
    tables: tuple[OpTable, ...]  # indexed by OP_INDEX
    global_default_line: int | None = None

    def table(self, op: Op) -> OpTable:
        return self.tables[OP_INDEX[op]]

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every normal rule, ordered by source line."""
        return tuple(sorted((r for t in self.tables for r in t.rules), key=lambda r: r.line))


@dataclass
class PolicyError(ErrnoMeaning, Exception):
    """The kernel's verdict on a policy (its errno) plus where and why (iped's addition).

    Not frozen: the interpreter and pytest assign ``__traceback__`` on raised exceptions.
    """

    errno: int
    line: int | None
    token: bytes | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        tok = f" (token {self.token.decode('utf-8', 'backslashreplace')!r})" if self.token else ""
        return f"{where}{self.errno_name}: {self.reason}{tok} [{self.meaning}]"


def _fail(err: int, line: int | None, token: bytes | None, reason: str) -> PolicyError:
    return PolicyError(err, line, token, reason)


def _lines(text: bytes) -> Iterator[tuple[int, bytes]]:
    """Split like strsep(.., "\\n\\r"), numbering lines as an editor would (CRLF is one break)."""
    human = 1
    start = 0
    for m in _LINE_DELIM.finditer(text):
        yield human, text[start : m.start()]
        sep = text[m.start()]
        if sep == 0x0A or text[m.start() + 1 : m.start() + 2] != b"\n":
            human += 1
        start = m.end()
    yield human, text[start:]


def _tokens(line: bytes) -> list[bytes]:
    return [t for t in _TOKEN_DELIM.split(line) if t]


def kstrtou16(token: bytes) -> int:
    """lib/kstrtox.c kstrtou16(token, 10): returns the value or raises OSError(errno).

    A leading ``+`` is allowed; no digits -> EINVAL; a value past 2^64-1 -> ERANGE even if junk
    follows; junk after the digits (other than one newline) -> EINVAL; above 65535 -> ERANGE.
    """
    s = token[1:] if token[:1] == b"+" else token
    i = 0
    value = 0
    while i < len(s) and 0x30 <= s[i] <= 0x39:
        value = value * 10 + (s[i] - 0x30)
        i += 1
    if value > 0xFFFFFFFFFFFFFFFF:
        raise OSError(errno.ERANGE, "overflow")
    if i == 0:
        raise OSError(errno.EINVAL, "no digits")
    rest = s[i:]
    if rest and rest != b"\n":
        raise OSError(errno.EINVAL, "junk after digits")
    if value > 0xFFFF:
        raise OSError(errno.ERANGE, "above 65535")
    return value


def parse_version(ver: bytes, line: int) -> Version:
    """parse_version(): exactly three dot-separated kstrtou16 components."""
    parts: list[int] = []
    for comp in ver.split(b"."):
        if len(parts) >= 3:
            raise _fail(errno.EBADMSG, line, ver, "version has more than three components")
        try:
            parts.append(kstrtou16(comp))
        except OSError as e:
            err = e.errno if e.errno is not None else errno.EINVAL
            what = "is larger than 65535" if err == errno.ERANGE else "is not a decimal number"
            raise _fail(err, line, ver, f"version component {comp!r} {what}") from None
    if len(parts) != 3:
        raise _fail(errno.EBADMSG, line, ver, "version must be MAJOR.MINOR.REV")
    return Version(*parts)


def parse_header(line: bytes, lineno: int) -> tuple[bytes, Version]:
    """parse_header(): ``policy_name=NAME policy_version=M.m.r`` and nothing else."""
    name: bytes | None = None
    version: Version | None = None
    for idx, tok in enumerate(_tokens(line)):
        if idx >= 2:
            raise _fail(
                errno.EBADMSG, lineno, tok, "the header takes exactly policy_name= and policy_version="
            )
        if idx == 0:
            if not (tok.startswith(_HEADER_NAME) and len(tok) > len(_HEADER_NAME)):
                raise _fail(errno.EBADMSG, lineno, tok, "the first line must start with policy_name=NAME")
            name = tok[len(_HEADER_NAME) :]
        else:
            if not (tok.startswith(_HEADER_VERSION) and len(tok) > len(_HEADER_VERSION)):
                raise _fail(errno.EBADMSG, lineno, tok, "policy_name= must be followed by policy_version=")
            version = parse_version(tok[len(_HEADER_VERSION) :], lineno)
    if name is None or version is None:
        raise _fail(errno.EBADMSG, lineno, None, "the header needs policy_name= and policy_version=")
    return name, version


def parse_property(tok: bytes, lineno: int) -> Prop:
    """parse_property(): a boolean property, or a digest property through digest_parse()."""
    flag = _FLAG_PROPERTY_TOKENS.get(tok)
    if flag is not None:
        return Prop(flag)
    for prefix, ptype in _DIGEST_PROPERTY_PREFIXES:
        if tok.startswith(prefix) and len(tok) > len(prefix):
            try:
                return Prop(ptype, digest_parse(tok[len(prefix) :]))
            except DigestError as e:
                raise _fail(e.errno, lineno, tok, e.reason) from None
    raise _fail(errno.EBADMSG, lineno, tok,
                "unknown property (or TRUE/FALSE not in upper case)" + _property_hint(tok))


def _property_hint(tok: bytes) -> str:
    """iped's "did you mean" for an unknown property (the human text only; the errno is the
    kernel's): the nearest flag property, or a digest property's prefix with the token's value."""
    from iped.didyoumean import closest

    word = tok.decode("utf-8", "replace")
    value = word.partition("=")[2]
    # a digest property is compared with the token's own value, and named by its prefix
    candidates = {p.value: p.value for p in PropType if not p.takes_digest}
    candidates |= {p.value + value: p.value + "..." for p in PropType if p.takes_digest and value}
    best = closest(word, candidates)
    return f"; did you mean '{candidates[best]}'?" if best is not None else ""


@dataclass
class _Partial:
    """The partially parsed policy that parse_rule() fills in."""

    global_default: Action | None = None
    global_default_line: int | None = None
    defaults: list[Action | None] | None = None
    default_lines: list[int | None] | None = None
    rules: list[list[Rule]] | None = None

    def __post_init__(self) -> None:
        self.defaults = [None] * len(Op)
        self.default_lines = [None] * len(Op)
        self.rules = [[] for _ in Op]


def parse_rule(line: bytes, lineno: int, p: _Partial) -> None:
    """parse_rule(): every token but the last is DEFAULT/op/property; the last is the action."""
    pieces = _TOKEN_DELIM.split(line)
    last = pieces[-1]
    is_default = False
    first = True
    op: Op | None = None
    props: list[Prop] = []
    for tok in pieces[:-1]:
        if not tok:
            continue
        if first and tok == b"DEFAULT":
            is_default = True
        elif op is None:
            op = _OPERATION_TOKENS.get(tok)
            if op is None:
                reason = (
                    "unknown operation" if tok.startswith(b"op=") else "a rule must start with op=OPERATION"
                )
                raise _fail(errno.EBADMSG, lineno, tok, reason)
        else:
            props.append(parse_property(tok, lineno))
        first = False

    action = _ACTION_TOKENS.get(last)
    if action is None:
        raise _fail(errno.EBADMSG, lineno, last, "a rule must end with action=ALLOW or action=DENY")

    assert p.defaults is not None and p.default_lines is not None and p.rules is not None
    if is_default:
        if props:
            raise _fail(errno.EBADMSG, lineno, line, "a DEFAULT rule takes no properties")
        if op is None:
            if p.global_default is not None:
                raise _fail(
                    errno.EBADMSG,
                    lineno,
                    line,
                    f"second global DEFAULT (first on line {p.global_default_line})",
                )
            p.global_default, p.global_default_line = action, lineno
        else:
            i = OP_INDEX[op]
            if p.defaults[i] is not None:
                raise _fail(
                    errno.EBADMSG,
                    lineno,
                    line,
                    f"second DEFAULT for op={op} (first on line {p.default_lines[i]})",
                )
            p.defaults[i], p.default_lines[i] = action, lineno
    elif op is None:
        raise _fail(errno.EBADMSG, lineno, line, "a rule needs op=OPERATION before its action")
    else:
        p.rules[OP_INDEX[op]].append(Rule(op, action, tuple(props), lineno))


def validate_policy(p: _Partial) -> None:
    """validate_policy(): a global default, or a default for every operation."""
    assert p.defaults is not None
    if p.global_default is not None:
        return
    missing = [str(op) for op, d in zip(Op, p.defaults, strict=True) if d is None]
    if missing:
        raise _fail(
            errno.EBADMSG,
            None,
            None,
            "no global 'DEFAULT action=' and no 'DEFAULT op=' for " + ", ".join(missing),
        )


def parse_policy(text: bytes) -> ParsedPolicy:
    """ipe_parse_policy(): parse policy text, raising PolicyError with the kernel's errno.

    Raises PolicyError: EBADMSG syntax (empty text, header, op, property, action, defaults);
    EINVAL bad version number or digest hex; ERANGE version component above 65535.
    """
    if not text:
        raise _fail(errno.EBADMSG, None, None, "the policy is empty")
    nul = text.find(b"\0")
    if nul >= 0:
        text = text[:nul]
    header: tuple[bytes, Version] | None = None
    partial = _Partial()
    for lineno, raw in _lines(text):
        hash_at = raw.find(b"#")
        line = (raw if hash_at < 0 else raw[:hash_at]).rstrip(_KERNEL_SPACE)
        if not line:
            continue
        if header is None:
            header = parse_header(line, lineno)
        else:
            parse_rule(line, lineno, partial)
    if header is None:
        why = "the policy has no header line" + (" (text ends at a NUL byte)" if nul >= 0 else "")
        raise _fail(errno.EBADMSG, None, None, why)
    validate_policy(partial)
    assert partial.defaults is not None and partial.rules is not None and partial.default_lines is not None
    tables = tuple(
        OpTable(d, tuple(rs), dl)
        for d, rs, dl in zip(partial.defaults, partial.rules, partial.default_lines, strict=True)
    )
    return ParsedPolicy(header[0], header[1], partial.global_default, tables, partial.global_default_line)
