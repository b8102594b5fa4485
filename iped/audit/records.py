"""Audit records: the raw record, the fast line/frame parser and typed IPE records.

Counterpart of the kernel's security/ipe/audit.c (what IPE writes) and kernel/audit.c
(``audit_log_untrustedstring``/``audit_log_n_hex``: how untrusted strings are printed).

A record arrives in one of three shapes, all reduced to :class:`RawRecord`:

* netlink: ``nlmsg_type`` is the record type, the payload is ``audit(S.MS:N): body``;
* auditd log / ``ausearch --raw``: ``[node=X ]type=NAME msg=audit(S.MS:N): body``;
* kmsg with the kernel's facility: ``audit: type=N audit(S.MS:N): body`` after the facility
  (:func:`parse_log_line` says which forms prove their writer; syslog lines do not);
* journald: ``_AUDIT_TYPE``, ``_AUDIT_ID``, ``_SOURCE_REALTIME_TIMESTAMP`` and
  ``MESSAGE=<TYPE_NAME> body``.

Bodies are split lazily: :func:`parse_typed` builds a typed record only for the types iped
cares about (1420, 1421, 1422, 1404 with ``lsm=ipe``, 1300, 1327). Field splitting uses
``str.split``/``partition`` rather than a regex per field, because the kernel never prints a
space inside a field value that the typed records read: untrusted strings with a space are
printed as hex, and the one field that contains spaces (``rule="..."``) is always last.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, NamedTuple

from iped.audit.native import _scan

AUDIT_SYSCALL: Final = 1300
AUDIT_EOE: Final = 1320
AUDIT_PROCTITLE: Final = 1327
AUDIT_MAC_STATUS: Final = 1404
AUDIT_IPE_ACCESS: Final = 1420
AUDIT_IPE_CONFIG_CHANGE: Final = 1421
AUDIT_IPE_POLICY_LOAD: Final = 1422

#: Record types that make an event interesting to iped (1404 only with ``lsm=ipe``).
IPE_TYPES: Final = frozenset({AUDIT_IPE_ACCESS, AUDIT_IPE_CONFIG_CHANGE, AUDIT_IPE_POLICY_LOAD, AUDIT_MAC_STATUS})

#: auditd's type names (lib/audit_record.h / libaudit msg_typetab) for the types in IPE events.
#: Unknown names fall back to ``UNKNOWN[n]`` in auditd and ``AUDIT<n>`` in journald.
TYPE_NAMES: Final[dict[int, str]] = {
    1005: "USER",
    1100: "USER_AUTH",
    1300: "SYSCALL",
    1302: "PATH",
    1305: "CONFIG_CHANGE",
    1307: "CWD",
    1309: "EXECVE",
    1320: "EOE",
    1327: "PROCTITLE",
    1404: "MAC_STATUS",
    1420: "IPE_ACCESS",
    1421: "IPE_CONFIG_CHANGE",
    1422: "IPE_POLICY_LOAD",
}
_NAME_TYPES: Final[dict[str, int]] = {name: num for num, name in TYPE_NAMES.items()}
_NAME_TYPES.update({"USER": 1005, "LOGIN": 1006, "USER_AVC": 1107, "AVC": 1400, "USER_START": 1105})


class RecordError(ValueError):
    """A line or frame that is not an audit record (no ``audit(S.MS:N):`` stamp, bad type)."""


def type_number(name: str) -> int:
    """``1420``, ``IPE_ACCESS``, ``UNKNOWN[1420]`` or ``AUDIT1420`` -> 1420.

    Raises RecordError for a name neither auditd nor journald would print.
    """
    if name.isdigit():
        return int(name)
    num = _NAME_TYPES.get(name)
    if num is not None:
        return num
    if name.startswith("UNKNOWN[") and name.endswith("]") and name[8:-1].isdigit():
        return int(name[8:-1])
    if name.startswith("AUDIT") and name[5:].isdigit():
        return int(name[5:])
    raise RecordError(f"unknown record type name {name!r}")


class RawRecord(NamedTuple):
    """One audit record: type, event stamp (seconds, milliseconds, serial) and the body text.

    A NamedTuple rather than a frozen dataclass: it is built once per record on the hot path,
    and tuple construction is several times cheaper than a frozen dataclass's ``__init__``.
    """

    type: int
    sec: int
    msec: int
    serial: int
    body: str

    @property
    def timestamp(self) -> float:
        return self.sec + self.msec / 1000.0

    @property
    def stamp(self) -> str:
        """``S.MS:N`` exactly as the kernel prints it inside ``audit(...)``."""
        return f"{self.sec}.{self.msec:03d}:{self.serial}"

    def to_log_line(self) -> str:
        """The auditd raw log form (``type=1420 msg=audit(S.MS:N): body``)."""
        return f"type={self.type} msg=audit({self.stamp}): {self.body}"


#: the most digits of each part of an ``audit(S.MS:N)`` stamp: seconds before the year 5138,
#: milliseconds, a serial of 20 (the kernel's is 32-bit). A longer part is out of range and its
#: record is skipped (netlink counts it as malformed), in the Python paths and in C alike.
STAMP_DIGITS: Final = (11, 3, 20)


def stamp_in_range(sec: str, msec: str, serial: str) -> bool:
    """The stamp's digit strings are within :data:`STAMP_DIGITS`."""
    return len(sec) <= STAMP_DIGITS[0] and len(msec) <= STAMP_DIGITS[1] and len(serial) <= STAMP_DIGITS[2]


def parse_stamped(rtype: int, text: str) -> RawRecord:
    """``audit(S.MS:N): body`` (the netlink payload) -> RawRecord.

    Raises RecordError when the stamp is missing or malformed (a truncated frame).
    """
    if not text.startswith("audit("):
        raise RecordError("no audit( stamp")
    close = text.find(")", 6)
    if close < 0:
        raise RecordError("unterminated audit( stamp")
    return _finish(rtype, text, 6, close)


def _finish(rtype: int, text: str, start: int, close: int) -> RawRecord:
    secms, colon, serial = text[start:close].partition(":")
    sec, dot, msec = secms.partition(".")
    if not colon or not dot:
        raise RecordError("malformed audit( stamp")
    if not stamp_in_range(sec.strip(), msec.strip(), serial.strip()):
        raise RecordError("audit( stamp out of range")
    try:
        stamp = (int(sec), int(msec), int(serial))
    except ValueError as exc:
        raise RecordError("malformed audit( stamp") from exc
    body_at = close + 1
    if text.startswith(": ", body_at):
        body_at += 2
    elif text.startswith(":", body_at):
        body_at += 1
    body = text[body_at:]
    # auditd's enriched format appends "\x1d" + interpreted fields; netlink pads with NULs.
    if "\x1d" in body:
        body = body[: body.find("\x1d")]
    if body.endswith(("\n", "\x00")):
        body = body.rstrip("\x00\n")
    return RawRecord(rtype, stamp[0], stamp[1], stamp[2], body)


def auditd_line(line: str) -> RawRecord | None:
    """One auditd log line, ``[node=H ]type=NAME msg=audit(S.MS:N):[ ]body``, or None.

    The strict shape auditd writes (no kmsg prefix; enriched fields after ``\\x1d`` and a
    trailing ``\\r`` dropped), shared by the file reader's line path and the bulk scanner;
    :func:`parse_log_line` takes every other source's lines and raises instead.
    """
    if line.startswith("node="):
        sp = line.find(" ")
        line = line[sp + 1 :]
        if sp < 6 or not line.startswith("type="):
            return None
    elif not line.startswith("type="):
        return None
    sp = line.find(" msg=audit(", 5)
    close = line.find(")", sp)
    if sp < 0 or close < 0:
        return None
    if line.startswith(": ", close + 1):
        body = line[close + 3 :]
    elif line.startswith(":", close + 1):
        body = line[close + 2 :]
    else:
        return None
    secms, _, ser = line[sp + len(" msg=audit(") : close].partition(":")
    s, _, ms = secms.partition(".")
    if not (s.isdecimal() and ms.isdecimal() and ser.isdecimal() and stamp_in_range(s, ms, ser)):
        return None
    try:
        rtype = type_number(line[5:sp])
    except RecordError:
        return None
    return RawRecord(rtype, int(s), int(ms), int(ser), body.partition("\x1d")[0].rstrip("\r"))


#: type name -> number, filled as names are met (a log uses a handful of names), up to
#: _TYPE_CACHE_MAX (numbers may be spelt with any number of leading zeros: no end to the names)
_TYPE_CACHE: dict[str, int] = {}
_TYPE_CACHE_MAX = 1024


def parse_log_line(line: str) -> RawRecord:
    """One line in a form whose writer is the kernel or auditd -> RawRecord.

    * auditd's log and ``ausearch --raw``: ``[node=X ]type=NAME msg=audit(S.MS:N): body``
      (auditd writes only what the kernel sent it; userspace may send only USER_* types);
    * kmsg with its facility, which must be the kernel's (0; the kernel stamps what userspace
      writes to /dev/kmsg with LOG_USER or another facility): a ``/dev/kmsg`` record
      ``PRI,SEQ,USEC,FLAGS;audit: type=N audit(...): body`` (PRI = facility << 3 | level) and
      ``dmesg -x``'s ``kern  :notice: [ T] audit: ...``.

    Raises RecordError for anything else, including syslog lines, plain ``dmesg`` lines and
    ``dmesg -r``'s ``<N>`` (util-linux 2.38 prints the level alone there: a line userspace wrote
    to /dev/kmsg reads ``<5>`` as the kernel's does). rsyslog writes the tag a client gives, so
    ``logger -t kernel 'type=1420 ...'`` reads like the kernel's (:func:`parse_unproven_line`
    reads those, for callers that say so).
    """
    if line.startswith(("type=", "node=")):
        return _parse_auditd_line(line)
    m = _KMSG_FACILITY.match(line)
    if m is None:
        raise RecordError("not an auditd line nor kmsg with its facility")
    pri = m.group("record")
    if pri is not None and int(pri) >> 3 != 0:
        raise RecordError(f"kmsg facility {int(pri) >> 3}, not the kernel's: written by userspace")
    return parse_kmsg_message(line[m.end() :])


#: the prefix that carries kmsg's facility: a /dev/kmsg record (group ``record``: its PRI,
#: facility << 3 | level) or ``dmesg -x``'s decoded ``kern`` (then an optional ``[timestamp]``)
_KMSG_FACILITY = re.compile(r"(?:(?P<record>\d{1,10}),\d+,\d+,[^;]*;|kern\s*:\s*[a-z]+\s*:\s*)(?:\[[^\]]*\]\s*)?")


def parse_kmsg_message(message: str) -> RawRecord:
    """The kernel's audit printk, ``audit: type=N audit(S.MS:N): body`` (what it logs when no
    audit daemon listens; journald's ``MESSAGE=`` of a ``_TRANSPORT=kernel`` entry) -> RawRecord.

    The caller has established that the kernel wrote it (facility 0); raises RecordError otherwise.
    """
    if not message.startswith("audit: type="):
        raise RecordError("not the kernel's audit printk")
    return _parse_typed_line(message, 7, "audit(")


def parse_unproven_line(line: str) -> RawRecord:
    """``type=N ... audit(S.MS:N): body`` anywhere in a line: a syslog line (``host kernel: ...``)
    or plain ``dmesg`` output. Nothing proves that the kernel wrote it: any local user can log
    ``logger -t kernel 'type=1420 ...'``. Raises RecordError for lines that do not even look so."""
    tpos = line.find("type=")
    if tpos < 0:
        raise RecordError("no type=")
    return _parse_typed_line(line, tpos, "")


def _parse_auditd_line(line: str) -> RawRecord:
    if line.startswith("node="):
        sp = line.find(" ")
        if sp < 0 or not line.startswith("type=", sp + 1):
            raise RecordError("node= without type=")
        return _parse_typed_line(line, sp + 1, "msg=audit(")
    return _parse_typed_line(line, 0, "msg=audit(")


def _parse_typed_line(line: str, tpos: int, stamp: str) -> RawRecord:
    """``type=NAME <stamp>S.MS:N): body`` starting at ``tpos``; an empty ``stamp``: the first
    ``audit(`` anywhere after the type (the unproven forms)."""
    sp = line.find(" ", tpos)
    if sp < 0:
        raise RecordError("no record body")
    name = line[tpos + 5 : sp]
    rtype = _TYPE_CACHE.get(name)
    if rtype is None:
        rtype = type_number(name)
        if len(_TYPE_CACHE) < _TYPE_CACHE_MAX:
            _TYPE_CACHE[name] = rtype
    if stamp:
        if not line.startswith(stamp, sp + 1):
            raise RecordError(f"no {stamp} stamp after the type")
        apos = sp + 1 + len(stamp) - 6
    else:
        apos = line.find("audit(", sp)
    if apos < 0:
        raise RecordError("no audit( stamp")
    close = line.find(")", apos + 6)
    if close < 0:
        raise RecordError("unterminated audit( stamp")
    return _finish(rtype, line, apos + 6, close)


# --------------------------------------------------------------------------------------
# field splitting and untrusted-string decoding


def get_field(body: str, key: str) -> str | None:
    """The printed value of ``key=`` in ``body`` (None if absent), found without splitting it all.

    ``key`` must be the whole key: the match is at the start of the body or after a space.
    """
    k = key + "="
    if body.startswith(k):
        start = len(k)
    else:
        i = body.find(" " + k)
        if i < 0:
            return None
        start = i + 1 + len(k)
    end = body.find(" ", start)
    return body[start:] if end < 0 else body[start:end]


def split_fields(body: str) -> dict[str, str]:
    """``k=v k2=v2`` -> dict, values as printed (quotes kept); a repeated key keeps its last value."""
    return {k: v for k, _, v in (tok.partition("=") for tok in body.split(" "))}


def decode_untrusted(value: str | None) -> str | None:
    """Undo ``audit_log_untrustedstring``: ``"text"`` -> text, upper-case hex -> text.

    ``?`` (no value, e.g. ``path=?`` for anonymous memory) and ``(null)`` give None.
    Bytes that are not UTF-8 are kept as ``\\xNN`` escapes so the result is printable.
    """
    if value is None or value in ("?", "(null)"):
        return None
    if value.startswith('"'):
        return value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
    try:
        return bytes.fromhex(value).decode("utf-8", "backslashreplace")
    except ValueError:
        return value


def _quoted(value: str | None) -> str | None:
    """A ``%s`` value inside quotes (``policy_name``): strip them; ``?`` gives None."""
    if value is None or value == "?":
        return None
    if value.startswith('"') and value.endswith('"') and len(value) > 1:
        return value[1:-1]
    return value


#: a printed number outside the 64-bit range the kernel prints is junk, like "?"
_INT_RANGE: Final = range(-(2**63), 2**64)
#: errno values the kernel returns (MAX_ERRNO)
_ERRNO_RANGE: Final = range(-4095, 4096)


def _int(value: str | None, valid: range = _INT_RANGE) -> int | None:
    if value is None or len(value) > 21:  # no int() of a 300-digit number
        return None
    try:
        num = int(value)
    except ValueError:
        return None
    return num if num in valid else None


def _unset_id(value: str | None) -> int | None:
    """auid/ses: 4294967295 (``(u32)-1``) means unset."""
    num = _int(value)
    return None if num in (None, 4294967295) else num


def _flag(value: str | None) -> bool | None:
    return None if value not in ("0", "1") else value == "1"


def decode_rule(rule: str) -> str:
    """Render a ``rule=`` text the way the policy file spells it.

    The kernel prints digest properties as ``fsverity_digest="sha256":HEX`` (algorithm as an
    untrusted string, so hex when it has odd bytes); this returns ``fsverity_digest=sha256:HEX``.
    """
    # quick path, one fsverity_digest token after the first (a policy of one digest rule per
    # file makes every rule new to the renderer's caches): the same split as below, without
    # splitting the rest; a second digest or roothash key anywhere goes the general way
    i = rule.find(" fsverity_digest=")
    if i >= 0 and rule.count("_digest=") == 1 and "_roothash=" not in rule:
        start = i + 17
        end = rule.find(" ", start)
        if end < 0:
            end = len(rule)
        alg, colon, hexd = rule[start:end].rpartition(":")
        if colon:
            return f"{rule[:start]}{decode_untrusted(alg) or ''}:{hexd}{rule[end:]}"
        return rule
    return _decode_rule_tokens(rule)


def _decode_rule_tokens(rule: str) -> str:
    """:func:`decode_rule`, token by token (what its quick path must equal)."""
    out = []
    for tok in rule.split(" "):
        key, eq, val = tok.partition("=")
        alg, colon, hexd = val.rpartition(":")
        if eq and colon and key in ("fsverity_digest", "dmverity_roothash"):
            out.append(f"{key}={decode_untrusted(alg) or ''}:{hexd}")
        else:
            out.append(tok)
    return " ".join(out)


def rule_action(rule: str | None) -> str | None:
    """A 1420 ``rule=`` text's action, ALLOW or DENY (None when it names neither)."""
    if rule is None:
        return None
    _, eq, act = rule.rpartition("action=")
    return act if eq and act in ("ALLOW", "DENY") else None


# --------------------------------------------------------------------------------------
# typed records
#
# NamedTuples, not frozen dataclasses: a frozen dataclass's __init__ sets every field through
# object.__setattr__, which made building the typed view cost more than parsing the body.


class IpeAccess(NamedTuple):
    """1420 AUDIT_IPE_ACCESS: one IPE decision (audit.c: ipe_audit_match)."""

    op: str | None
    hook: str | None
    enforcing: bool | None
    pid: int | None
    comm: str | None
    path: str | None
    dev: str | None
    ino: int | None
    rule: str | None

    @property
    def action(self) -> str | None:
        """ALLOW or DENY: the rule's action is the decision (before enforce is applied)."""
        return rule_action(self.rule)

    @property
    def match(self) -> str | None:
        """``rule`` (a policy rule matched), ``op_default`` or ``global_default``."""
        if self.rule is None:
            return None
        if not self.rule.startswith("DEFAULT "):
            return "rule"
        return "op_default" if self.rule.startswith("DEFAULT op=") else "global_default"


class IpeConfigChange(NamedTuple):
    """1421 AUDIT_IPE_CONFIG_CHANGE: the active policy changed (old may be None)."""

    old_name: str | None
    old_version: str | None
    old_digest: str | None
    new_name: str | None
    new_version: str | None
    new_digest: str | None
    auid: int | None
    ses: int | None
    res: int | None


class IpePolicyLoad(NamedTuple):
    """1422 AUDIT_IPE_POLICY_LOAD.

    6.12-6.15 audit successes only and print no ``errno=`` (errno is None). From 6.16 every
    new_policy/update attempt is audited; failures carry ``res=0 errno=-N`` and ``?`` for the
    policy fields (name, version and digest are None).
    """

    name: str | None
    version: str | None
    digest: str | None
    auid: int | None
    ses: int | None
    res: int | None
    errno: int | None

    @property
    def ok(self) -> bool:
        return self.res == 1


class IpeMacStatus(NamedTuple):
    """1404 AUDIT_MAC_STATUS with ``lsm=ipe``: enforce switched through securityfs."""

    enforcing: bool | None
    old_enforcing: bool | None
    auid: int | None
    ses: int | None
    res: int | None


class Syscall(NamedTuple):
    """1300 SYSCALL: who did it (the process around an IPE record)."""

    arch: str | None
    syscall: int | None
    success: bool | None
    exit: int | None
    pid: int | None
    ppid: int | None
    uid: int | None
    auid: int | None
    ses: int | None
    comm: str | None
    exe: str | None


class Proctitle(NamedTuple):
    """1327 PROCTITLE: argv, hex of the NUL-separated command line (or quoted when plain)."""

    argv: tuple[str, ...]


_tuple_new = tuple.__new__

TypedRecord = IpeAccess | IpeConfigChange | IpePolicyLoad | IpeMacStatus | Syscall | Proctitle


#: The kernel's field order for 1420 (security/ipe/audit.c: ipe_audit_match). Values never
#: contain a space (untrusted strings with one are printed as hex) and ``rule="..."`` is last,
#: so one match splits the whole body; any other shape falls back to the generic split.
_ACCESS_RE = re.compile(
    r"ipe_op=([^ ]*) ipe_hook=([^ ]*) enforcing=([^ ]*) pid=([^ ]*) comm=([^ ]*) path=([^ ]*) dev=([^ ]*) "
    r'ino=([^ ]*) rule="(.*)',
    re.S,
)


def parse_access(body: str) -> IpeAccess:
    """A 1420 body -> IpeAccess: by the C helper for the kernel's common form (``_scan.c``:
    access_of, the block scanner's; tests/audit/test_bulk_scan.py holds the two equal), else
    by :data:`_ACCESS_RE`, else field by field."""
    if _scan is not None:
        typed = _scan.parse_access(body, IpeAccess)
        if typed is not None:
            return typed
    return _parse_access_re(body)


def _parse_access_re(body: str) -> IpeAccess:
    m = _ACCESS_RE.fullmatch(body)
    if m is None:
        return _parse_access_generic(body)
    op, hook, enf, pid, comm, path, dev, ino, rule = m.groups()
    try:
        pid_n, ino_n = int(pid), int(ino)
    except ValueError:  # "?" or junk: the generic path maps each to None
        return _parse_access_generic(body)
    # built with tuple.__new__: IpeAccess(...) adds a Python-level __new__ call per record
    return _tuple_new(
        IpeAccess,
        (
            op,
            hook,
            True if enf == "1" else False if enf == "0" else None,
            pid_n,
            comm[1:-1] if comm[-1:] == '"' and comm[:1] == '"' and len(comm) > 1 else decode_untrusted(comm),
            path[1:-1] if path[-1:] == '"' and path[:1] == '"' and len(path) > 1 else decode_untrusted(path),
            dev[1:-1] if dev[-1:] == '"' and dev[:1] == '"' and len(dev) > 1 else decode_untrusted(dev),
            ino_n,
            rule[:-1] if rule[-1:] == '"' else rule,
        ),
    )


def _parse_access_generic(body: str) -> IpeAccess:
    head, sep, rule = body.partition(' rule="')
    f = split_fields(head)
    return IpeAccess(
        op=f.get("ipe_op"),
        hook=f.get("ipe_hook"),
        enforcing=_flag(f.get("enforcing")),
        pid=_int(f.get("pid")),
        comm=decode_untrusted(f.get("comm")),
        path=decode_untrusted(f.get("path")),
        dev=decode_untrusted(f.get("dev")),
        ino=_int(f.get("ino")),
        # the closing quote is missing when the record was truncated; keep what is there
        rule=(rule[:-1] if rule.endswith('"') else rule) if sep else None,
    )


def parse_config_change(body: str) -> IpeConfigChange:
    f = split_fields(body)
    return IpeConfigChange(
        old_name=_quoted(f.get("old_active_pol_name")),
        old_version=_quoted(f.get("old_active_pol_version")),
        old_digest=_quoted(f.get("old_policy_digest")),
        new_name=_quoted(f.get("new_active_pol_name")),
        new_version=_quoted(f.get("new_active_pol_version")),
        new_digest=_quoted(f.get("new_policy_digest")),
        auid=_unset_id(f.get("auid")),
        ses=_unset_id(f.get("ses")),
        res=_int(f.get("res")),
    )


def parse_policy_load(body: str) -> IpePolicyLoad:
    f = split_fields(body)
    return IpePolicyLoad(
        name=_quoted(f.get("policy_name")),
        version=_quoted(f.get("policy_version")),
        digest=_quoted(f.get("policy_digest")),
        auid=_unset_id(f.get("auid")),
        ses=_unset_id(f.get("ses")),
        res=_int(f.get("res")),
        errno=_int(f.get("errno"), _ERRNO_RANGE),
    )


def parse_mac_status(body: str) -> IpeMacStatus | None:
    """None unless ``lsm=ipe`` (SELinux/AppArmor 1404s, and IPE's empty second 1404)."""
    f = split_fields(body)
    if f.get("lsm") != "ipe":
        return None
    return IpeMacStatus(
        enforcing=_flag(f.get("enforcing")),
        old_enforcing=_flag(f.get("old_enforcing")),
        auid=_unset_id(f.get("auid")),
        ses=_unset_id(f.get("ses")),
        res=_int(f.get("res")),
    )


#: The kernel's SYSCALL layout (kernel/auditsc.c: audit_log_exit, audit_log_task_info) up to
#: ``exe=``; ``per=`` and ``success= exit=`` are optional. A body of another shape (older or
#: newer kernels, tests) takes the generic path, which looks each field up by name.
_SYSCALL_RE = re.compile(
    r"arch=([^ ]*) syscall=([^ ]*) (?:per=[^ ]* )?(?:success=([^ ]*) exit=([^ ]*) )?"
    r"a0=[^ ]* a1=[^ ]* a2=[^ ]* a3=[^ ]* items=[^ ]* ppid=([^ ]*) pid=([^ ]*) auid=([^ ]*) uid=([^ ]*) "
    r"gid=[^ ]* euid=[^ ]* suid=[^ ]* fsuid=[^ ]* egid=[^ ]* sgid=[^ ]* fsgid=[^ ]* tty=[^ ]* "
    r"ses=([^ ]*) comm=([^ ]*) exe=([^ ]*)(?= |\Z)"
)


def parse_syscall(body: str) -> Syscall:
    m = _SYSCALL_RE.match(body)
    if m is None or m.group(3) is None:
        return _parse_syscall_generic(body)
    arch, nr, success, exit_, ppid, pid, auid, uid, ses, comm, exe = m.groups()
    try:
        nr_n, exit_n, pid_n, ppid_n = int(nr), int(exit_), int(pid), int(ppid)
        uid_n, auid_n, ses_n = int(uid), int(auid), int(ses)
    except ValueError:
        return _parse_syscall_generic(body)
    unset = 4294967295  # (u32)-1: auid/ses (and uid) not set
    return _tuple_new(
        Syscall,
        (
            arch,
            nr_n,
            success == "yes",
            exit_n,
            pid_n,
            ppid_n,
            None if uid_n == unset else uid_n,
            None if auid_n == unset else auid_n,
            None if ses_n == unset else ses_n,
            comm[1:-1] if comm[-1:] == '"' and comm[:1] == '"' and len(comm) > 1 else decode_untrusted(comm),
            exe[1:-1] if exe[-1:] == '"' and exe[:1] == '"' and len(exe) > 1 else decode_untrusted(exe),
        ),
    )


def _parse_syscall_generic(body: str) -> Syscall:
    # a SYSCALL record has ~30 fields and iped reads 11: look each one up instead of splitting all
    f = get_field
    success = f(body, "success")
    return Syscall(
        arch=f(body, "arch"),
        syscall=_int(f(body, "syscall")),
        success=None if success is None else success == "yes",
        exit=_int(f(body, "exit")),
        pid=_int(f(body, "pid")),
        ppid=_int(f(body, "ppid")),
        uid=_unset_id(f(body, "uid")),
        auid=_unset_id(f(body, "auid")),
        ses=_unset_id(f(body, "ses")),
        comm=decode_untrusted(f(body, "comm")),
        exe=decode_untrusted(f(body, "exe")),
    )


def parse_proctitle(body: str) -> Proctitle:
    _, _, value = body.partition("proctitle=")
    if value.startswith('"'):
        return Proctitle((value[1:-1] if value.endswith('"') else value[1:],))
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return Proctitle((value,))
    # NUL never belongs to a multi-byte sequence or an invalid-byte run, so decoding once and
    # splitting the text gives the same strings as decoding each argument
    return _tuple_new(Proctitle, (tuple(raw.decode("utf-8", "backslashreplace").split("\x00")),))


#: record type -> parser of its body (1404 gives None unless ``lsm=ipe``)
PARSERS: Final[dict[int, Callable[[str], TypedRecord | None]]] = {
    AUDIT_IPE_ACCESS: parse_access,
    AUDIT_SYSCALL: parse_syscall,
    AUDIT_PROCTITLE: parse_proctitle,
    AUDIT_IPE_POLICY_LOAD: parse_policy_load,
    AUDIT_IPE_CONFIG_CHANGE: parse_config_change,
    AUDIT_MAC_STATUS: parse_mac_status,
}


def parse_typed(rec: RawRecord) -> TypedRecord | None:
    """The typed view of a record, or None for types iped does not read."""
    parse = PARSERS.get(rec[0])
    return None if parse is None else parse(rec[4])


def is_ipe(rec: RawRecord) -> bool:
    """True for 1420-1422 and for 1404 records written by IPE (``lsm=ipe``)."""
    if rec.type == AUDIT_MAC_STATUS:
        return " lsm=ipe " in f" {rec.body} "
    return rec.type in IPE_TYPES
