"""Events -> JSON Lines objects (schema in docs/audit.md) and one-line human summaries.

One output object per IPE record: an update of the active policy is one kernel event with a
1422 and a 1421 record and yields two objects with the same ``serial``.

:func:`event_objects` + ``json.dumps(obj, ensure_ascii=False)`` is the reference rendering.
:class:`JsonLines` writes the same bytes for the lines ``iped audit --json`` prints most -- IPE
access events -- without building the objects: the parts that depend only on the rule (its
verdict, location and the fixed text of the explanation) are encoded once per (op, hook,
enforcing, rule), the time once per second, and the rest is put together from values encoded
by the stdlib's own C string encoder. Events of any other shape take the reference path.
``tests/audit/test_render.py`` compares the two on the lab corpus records and generated logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from iped.audit.explain import PolicyIndex, access_target, explain_access, explain_load, rule_verdict
from iped.audit.group import Event
from iped.audit.native import _scan
from iped.audit.records import (
    IpeAccess,
    IpeConfigChange,
    IpeMacStatus,
    IpePolicyLoad,
    Proctitle,
    Syscall,
    decode_rule,
    rule_action,
)
from iped.textsafe import escape_controls

SCHEMA_VERSION = 1


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(ts))) + f".{round(ts * 1000) % 1000:03d}Z"


def _process(event: Event) -> dict[str, Any] | None:
    sc = event.syscall
    pt = event.proctitle
    if sc is None and pt is None:
        return None
    out: dict[str, Any] = {}
    if sc is not None:
        out.update(
            exe=sc.exe, comm=sc.comm, pid=sc.pid, ppid=sc.ppid, uid=sc.uid, auid=sc.auid, ses=sc.ses,
            syscall=sc.syscall, success=sc.success, exit=sc.exit,
        )  # fmt: skip
    out["argv"] = list(pt.argv) if pt is not None else None
    return out


def event_objects(event: Event, index: PolicyIndex | None = None) -> list[dict[str, Any]]:
    """The JSON objects for the IPE records of one event (empty for non-IPE events)."""
    base: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "time": _iso(event.timestamp),
        "timestamp": round(event.timestamp, 3),
        "serial": event.serial,
        "complete": event.complete,
    }
    process = None
    out = []
    for rec in event.ipe:
        obj = dict(base)
        if isinstance(rec, IpeAccess):
            ex = explain_access(rec, index)
            obj.update(
                kind="access", decision=ex.decision, enforcing=rec.enforcing, blocked=ex.blocked,
                op=rec.op, hook=rec.hook, pid=rec.pid, comm=rec.comm, path=rec.path, dev=rec.dev,
                ino=rec.ino, rule=rec.rule, rule_text=ex.rule_text, match=ex.match,
                policy=None if ex.location is None else {
                    "file": ex.location.file, "line": ex.location.line, "kind": ex.location.kind,
                },
                explanation=ex.summary,
            )  # fmt: skip
        elif isinstance(rec, IpePolicyLoad):
            from iped.errnos import errno_meaning, errno_name

            err = abs(rec.errno) if rec.errno else None
            obj.update(
                kind="policy_load", result="loaded" if rec.ok else "failed",
                policy_name=rec.name, policy_version=rec.version, policy_digest=rec.digest,
                errno=err, errno_name=errno_name(err) if err else None,
                errno_meaning=errno_meaning(err) if err else None,
                auid=rec.auid, ses=rec.ses, explanation=explain_load(rec),
            )  # fmt: skip
        elif isinstance(rec, IpeConfigChange):
            old = None if rec.old_name is None else {
                "name": rec.old_name, "version": rec.old_version, "digest": rec.old_digest,
            }  # fmt: skip
            obj.update(
                kind="config_change", old=old,
                new={"name": rec.new_name, "version": rec.new_version, "digest": rec.new_digest},
                auid=rec.auid, ses=rec.ses,
                explanation=f"active policy {rec.old_name or '(none)'} -> {rec.new_name} {rec.new_version}",
            )  # fmt: skip
        elif isinstance(rec, IpeMacStatus):
            obj.update(
                kind="enforce_change", enforcing=rec.enforcing, old_enforcing=rec.old_enforcing,
                auid=rec.auid, ses=rec.ses,
                explanation="IPE " + ("enforcing" if rec.enforcing else "permissive (denials only audited)"),
            )  # fmt: skip
        else:  # pragma: no cover - event.ipe holds only the four IPE record types
            continue
        if process is None:
            process = _process(event)
        obj["process"] = process
        out.append(obj)
    return out


def human_line(obj: dict[str, Any]) -> str:
    """One line for people: time, what happened, who, where, which policy line; comms, paths and
    names (decoded from the kernel's hex) escaped by :func:`iped.textsafe.escape_controls`."""
    return escape_controls(_human_line(obj))


def _human_line(obj: dict[str, Any]) -> str:
    when = obj["time"].replace("T", " ").rstrip("Z")
    proc = obj.get("process") or {}
    who = proc.get("exe") or obj.get("comm") or "?"
    if obj["kind"] == "access":
        decision = obj["decision"]  # None: the record was cut before its rule's action
        verdict = ("DENIED" if obj["blocked"] else "AUDIT-DENY" if decision == "DENY"
                   else "ALLOWED" if decision == "ALLOW" else "INCOMPLETE")  # fmt: skip
        where = ""
        if obj.get("policy"):
            where = f" [{obj['policy']['file']}:{obj['policy']['line']}]"
        return (
            f"{when} {verdict:<10} {obj['op']}/{obj['hook']} {who} (pid {obj['pid']}) "
            f'{obj["path"] or "<no file>"} rule="{obj["rule_text"]}"{where}'
        )
    if obj["kind"] == "policy_load":
        return f"{when} {'LOADED' if obj['result'] == 'loaded' else 'LOAD-FAIL':<10} {obj['explanation']}"
    if obj["kind"] == "config_change":
        return f"{when} {'ACTIVATED':<10} {obj['explanation']}"
    return f"{when} {'ENFORCE':<10} {obj['explanation']}"


def json_line(obj: object) -> str:
    """The reference encoding of one object (what ``iped audit --json`` prints)."""
    return json.dumps(obj, ensure_ascii=False)


# json.dumps(ensure_ascii=False)'s own string encoder (C when the _json accelerator is built)
_encode_str: Callable[[str], str] = json.encoder.encode_basestring


def _value(v: object) -> str:
    """One scalar as json.dumps writes it (str, int, bool, None; floats are not met here)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return _encode_str(v)
    return int.__repr__(v)


#: stamp_texts' two texts of a plain stamp's milliseconds: ("007", "007"), ("120", "12"), ("000", "0")
_MILLIS: list[tuple[str, str]] = [(f"{m:03d}", f"{m:03d}".rstrip("0") or "0") for m in range(1000)]


def stamp_texts(sec: int, msec: int, ts: float) -> tuple[str, str]:
    """The milliseconds of ``time`` and the ``timestamp`` of an event stamped ``sec.msec``
    (``ts`` = ``sec + msec / 1000.0``): what :func:`_iso` and ``round(ts, 3)`` give.

    For a plain stamp they are its own digits: ``round`` of a float to 3 places (a decimal
    conversion, a fifth of the rendering's time) gives the double nearest ``sec.msec``, whose
    repr is those digits without trailing zeros, as long as ``ts`` is within far less than half
    a millisecond of it (seconds below 10**10: within 2e-6).
    """
    if 0 <= msec < 1000 and 0 <= sec < 10**10:
        milli, frac = _MILLIS[msec]
        return milli, f"{sec}.{frac}"
    return f"{round(ts * 1000) % 1000:03d}", float.__repr__(round(ts, 3))


class JsonLines:
    """``json_line`` of each object of ``event_objects(event, index)``, faster (see the module docstring).

    Keeps what it encoded, each table bounded whatever the input (a full table starts afresh,
    so memory stays flat when every event differs, e.g. a policy of one ``fsverity_digest=``
    rule per file): up to :data:`_KEPT_VERDICTS` rule verdicts by (op, hook, enforcing, rule),
    the few rule-independent parts of a matched rule's verdict by (op, hook, enforcing,
    action), the current second's text, and up to :data:`_KEPT` string values and process
    parts. A verdict not kept is put together from those parts (:meth:`_rule_verdict`), so
    a rule seen once costs little more than one seen before.
    """

    def __init__(self, index: PolicyIndex | None) -> None:
        self.index = index
        self._verdicts: dict[tuple[str | None, str | None, bool | None, str | None], _Verdict] = {}
        self._frames: dict[tuple[str | None, str | None, bool | None, str], tuple[str, str, str]] = {}
        self._second = -1
        self._second_text = ""
        self._strings: dict[str | None, str] = {}
        self._processes: dict[tuple[object, ...], tuple[str, str]] = {}
        # a digest rule's verdict around its hex, by the rest of the rule (_digest_verdict)
        self._templates: dict[tuple[str | None, str | None, bool | None, str, str], _Template | None] = {}
        # misses per table (lookups are derived from the accesses rendered: see cache_stats)
        self._accesses = 0
        self._template_lookups = 0
        self._misses = {"verdicts": 0, "strings": 0, "processes": 0, "digest templates": 0}

    def cache_stats(self) -> dict[str, dict[str, int]]:
        """Each table's size, bound, lookups and misses (for the benchmarks' report)."""
        misses = self._misses
        lookups = {
            "verdicts": self._accesses,
            # comm, path and dev per access, exe and comm per process part built
            "strings": 3 * self._accesses + 2 * misses["processes"],
            "processes": self._accesses,
            "digest templates": self._template_lookups,
        }
        sizes = {"verdicts": len(self._verdicts), "strings": len(self._strings), "processes": len(self._processes),
                 "digest templates": len(self._templates)}  # fmt: skip
        bounds = {"verdicts": _KEPT_VERDICTS, "strings": _KEPT, "processes": _KEPT, "digest templates": _KEPT}
        return {
            name: {"size": sizes[name], "bound": bounds[name], "lookups": lookups[name], "misses": misses[name]}
            for name in sizes
        }

    def extend(self, out: list[str], events: Iterable[Event]) -> int:
        """Append the lines of the IPE events among ``events`` to ``out`` (each event's
        :meth:`lines`, without the records); returns how many IPE events there were. One call
        per batch: ``iped audit --json`` with no filter spends no call per event on the way."""
        n = 0
        access = self._access
        for event in events:
            if not event.is_ipe:
                continue
            n += 1
            typed = event.typed
            if len(typed) == 3:  # as in lines()
                rec, sc, pt = typed
                if type(rec) is IpeAccess and type(sc) is Syscall and type(pt) is Proctitle:
                    out.append(access(event, rec, sc, pt))
                    continue
            out.extend(line for _, line in self.lines(event))
        return n

    def lines(self, event: Event) -> list[tuple[IpeAccess | None, str]]:
        """``(the access record or None, its line)`` for each object of the event, in order."""
        typed = event.typed
        if len(typed) == 3:  # the kernel's access event: 1420, SYSCALL, PROCTITLE (the bulk path's typed)
            rec, sc, pt = typed
            if type(rec) is IpeAccess and type(sc) is Syscall and type(pt) is Proctitle:
                return [(rec, self._access(event, rec, sc, pt))]
        ipe = event.ipe
        if len(ipe) == 1 and type(ipe[0]) is IpeAccess:
            return [(ipe[0], self._access(event, ipe[0], event.syscall, event.proctitle))]
        return [
            (rec if isinstance(rec, IpeAccess) else None, json_line(obj))
            for rec, obj in zip(ipe, event_objects(event, self.index), strict=True)
        ]

    def _access(self, event: Event, rec: IpeAccess, sc: Syscall | None, pt: Proctitle | None) -> str:
        """The line of an event whose one IPE record is ``rec``. (Its numbers are ints the
        parsers made, so an f-string writes what json.dumps' ``int.__repr__`` does.)"""
        op, hook, enforcing, pid, comm, path, dev, ino, rule = rec
        self._accesses += 1
        key = (op, hook, enforcing, rule)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdicts = self._verdicts
            if len(verdicts) >= _KEPT_VERDICTS:
                verdicts.clear()
            self._misses["verdicts"] += 1
            verdict = verdicts[key] = (
                self._digest_verdict(op, hook, enforcing, rule) or self._rule_verdict(rec) or self._verdict(rec)
            )  # (kept: a digest rule that repeats is then one lookup, not a template's assembly)
        fields, rule_part, tail = verdict
        sec, msec = event.sec, event.msec
        if 0 <= msec < 1000 and 0 <= sec < 10**10:  # stamp_texts(sec, msec, ts) inlined: its table
            milli, frac = _MILLIS[msec]
            stamp = f"{sec}.{frac}"
            second = sec  # (= int(ts): ts is within 2e-6 of sec.msec, below sec + 1)
        else:
            ts = sec + msec / 1000.0  # (Event.timestamp, without the property call)
            milli, stamp = stamp_texts(sec, msec, ts)
            second = int(ts)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        strings = self._strings
        path_json = strings.get(path) or self._text(path)
        # the explanation names the path (its JSON text without the quotes), or access_target's stand-in
        target = path_json[1:-1] if path is not None else _encode_str(access_target(rec))[1:-1]
        return (
            f'{{"schema_version": {SCHEMA_VERSION}, "time": "{self._second_text}.{milli}Z", '
            f'"timestamp": {stamp}, "serial": {event.serial}, '
            f'"complete": {"true" if event.complete else "false"}, "kind": "access", {fields}'
            f'"pid": {"null" if pid is None else pid}, '
            f'"comm": {strings.get(comm) or self._text(comm)}, "path": {path_json}, '
            f'"dev": {strings.get(dev) or self._text(dev)}, "ino": {"null" if ino is None else ino}, '
            f'{rule_part}{target}{tail}, "process": {self._process(sc, pt)}}}'
        )

    def _text(self, value: str | None) -> str:
        """A str or None JSON-encoded; strings remembered (comm, dev, exe repeat from event to event)."""
        if value is None:
            return "null"
        strings = self._strings
        if len(strings) >= _KEPT:
            strings.clear()
        self._misses["strings"] += 1
        encoded = strings[value] = _encode_str(value)
        return encoded

    def _process(self, sc: Syscall | None, pt: Proctitle | None) -> str:
        """``_process(event)`` encoded: all but ``pid`` remembered by value (they repeat)."""
        if sc is None:
            return "null" if pt is None else f'{{"argv": {json_line(list(pt.argv))}}}'
        _arch, nr, success, exit_, pid, ppid, uid, auid, ses, comm, exe = sc
        key = (exe, comm, ppid, uid, auid, ses, nr, success, exit_, None if pt is None else pt.argv)
        parts = self._processes.get(key)
        if parts is None:
            if len(self._processes) >= _KEPT:
                self._processes.clear()
            self._misses["processes"] += 1
            argv = "null" if pt is None else json_line(list(pt.argv))
            text = self._text
            parts = self._processes[key] = (
                f'{{"exe": {text(exe)}, "comm": {text(comm)}, "pid": ',
                f', "ppid": {_value(ppid)}, "uid": {_value(uid)}, "auid": {_value(auid)}, "ses": {_value(ses)}, '
                f'"syscall": {_value(nr)}, "success": {_value(success)}, "exit": {_value(exit_)}, "argv": {argv}}}',
            )
        return f"{parts[0]}{'null' if pid is None else pid}{parts[1]}"

    def _digest_verdict(self, op: str | None, hook: str | None, enforcing: bool | None,
                        rule: str | None) -> _Verdict | None:  # fmt: skip
        """The verdict of a rule with one ``fsverity_digest`` token (a policy of one digest rule
        per file: every rule new), from a template kept by the rest of the rule, its hex put in;
        None for any other rule, or with a policy to locate rules in (the location is the
        rule's own)."""
        if self.index is not None or rule is None:
            return None
        parts = _digest_parts_c(rule) if _digest_parts_c is not None else NotImplemented
        if parts is NotImplemented:  # (no C helper, or a rule that is not plain ASCII)
            parts = _digest_parts(rule)
        if parts is None:
            return None
        head, hexd, rest = parts
        self._template_lookups += 1
        key = (op, hook, enforcing, head, rest)
        templates = self._templates
        t = templates.get(key, _NO_TEMPLATE)
        if t is _NO_TEMPLATE:
            if len(templates) >= _KEPT:
                templates.clear()
            self._misses["digest templates"] += 1
            t = templates[key] = self._template(op, hook, enforcing, head, rest)
        if t is None:
            return None
        (r0, r1, r2), (t0, t1) = t.rule, t.tail
        return _new(_Verdict, (t.fields, f"{r0}{hexd}{r1}{hexd}{r2}", f"{t0}{hexd}{t1}"))

    def _template(self, op: str | None, hook: str | None, enforcing: bool | None, head: str,
                  rest: str) -> _Template | None:  # fmt: skip
        """:meth:`_rule_verdict` of ``head + _MARK + rest``, split where the mark's encodings
        stand; None when that is no matched rule's verdict or the mark is not where only the hex
        would be (the rule holds the mark's character or its escape itself)."""
        rec = IpeAccess(op, hook, enforcing, None, None, None, None, None, f"{head}{_MARK}{rest}")
        v = self._rule_verdict(rec)
        if v is None:
            return None
        rule = v.rule.split(_MARK)
        tail = v.tail.split(_MARK_IN_REPR)
        if len(rule) != 3 or len(tail) != 2 or _MARK in v.tail or _MARK_IN_REPR in v.rule:
            return None
        return _Template(v.fields, (rule[0], rule[1], rule[2]), (tail[0], tail[1]))

    def _rule_verdict(self, rec: IpeAccess) -> _Verdict | None:
        """:meth:`_verdict` of a record whose rule matched (not a DEFAULT) and names its action,
        from the parts that depend only on (op, hook, enforcing, action), kept, and the rule's
        own text (:func:`rule_verdict`'s formulas, in pieces); None for any other record."""
        op, hook, enforcing, rule = rec[0], rec[1], rec[2], rec[8]
        if rule is None or rule.startswith("DEFAULT "):
            return None
        action = rule_action(rule)
        if action is None:
            return None
        frame = self._frames.get((op, hook, enforcing, action))
        if frame is None:
            blocked = action == "DENY" and enforcing is not False
            outcome = (
                "blocked" if blocked else "would be blocked (permissive: enforcing=0)" if action == "DENY"
                else "allowed"
            )  # fmt: skip
            if len(self._frames) >= _KEPT:
                self._frames.clear()
            frame = self._frames[op, hook, enforcing, action] = (
                f'"decision": {_value(action)}, "enforcing": {_value(enforcing)}, "blocked": {_value(blocked)}, '
                f'"op": {_value(op)}, "hook": {_value(hook)}, ',
                _encode_str(f"{op} of ")[:-1],
                f" via {hook} {outcome}: matched the rule ",
            )
        fields, head, via = frame
        rule_text = decode_rule(rule) if "digest=" in rule or "roothash=" in rule else rule
        index = self.index
        loc = index.locate(rule) if index is not None else None
        if loc is not None:
            policy = json_line({"file": loc.file, "line": loc.line, "kind": loc.kind})
            where = f" at {loc}"
        else:
            policy = "null"
            where = "" if index is None else f" (not in {index.file}: the active policy differs from this file)"
        return _Verdict(
            fields,
            f'"rule": {_encode_str(rule)}, "rule_text": {_encode_str(rule_text)}, "match": "rule", '
            f'"policy": {policy}, "explanation": {head}',
            _encode_str(f"{via}{rule_text!r}{where}")[1:],
        )

    def _verdict(self, rec: IpeAccess) -> _Verdict:
        v = rule_verdict(rec, self.index)
        loc = v.location
        policy = "null" if loc is None else json_line({"file": loc.file, "line": loc.line, "kind": loc.kind})
        return _Verdict(
            f'"decision": {_value(v.decision)}, "enforcing": {_value(rec.enforcing)}, "blocked": {_value(v.blocked)}, '
            f'"op": {_value(rec.op)}, "hook": {_value(rec.hook)}, ',
            f'"rule": {_value(rec.rule)}, "rule_text": {_value(v.rule_text)}, "match": {_value(v.match)}, '
            f'"policy": {policy}, "explanation": {_encode_str(v.head)[:-1]}',
            _encode_str(v.tail)[1:],
        )


#: distinct strings and process parts kept encoded (then the table starts afresh)
_KEPT = 4096
#: rule verdicts kept encoded: a policy's rules and defaults, up to this many (then the table
#: starts afresh; ~1 KB each, so at most ~4 MB however many distinct rules a log names)
_KEPT_VERDICTS = 4096

#: not kept in the templates table yet (None there: a rule no template serves)
_NO_TEMPLATE: Any = object()

#: stands for a digest's hex in a template: a private-use character, which JSON leaves as it
#: is and repr() writes as ``\ue000`` (so the explanation's JSON holds ``\\ue000``); ASCII
#: letters and digits are left alone by both and change neither's choice of quotes, so a
#: verdict is its template with the hex wherever the mark stands
_MARK = "\ue000"
_MARK_IN_REPR = _encode_str(repr(_MARK)[1:-1])[1:-1]


class _Template(NamedTuple):
    """A digest rule's verdict in pieces: the hex goes between the pieces of ``rule`` (in the
    rule's text and in its decoded text) and of ``tail`` (in the explanation)."""

    fields: str
    rule: tuple[str, str, str]
    tail: tuple[str, str]


def _digest_parts(rule: str) -> tuple[str, str, str] | None:
    """``(head, hex, rest)`` with ``rule == head + hex + rest``, of a rule whose one digest or
    roothash key is an ``fsverity_digest`` token (as :func:`decode_rule`'s quick path takes it)
    whose value after its last colon -- the hex -- is ASCII letters and digits; else None."""
    i = rule.find(" fsverity_digest=")
    if i < 0 or rule.count("_digest=") != 1 or "_roothash=" in rule:
        return None
    start = i + 17
    end = rule.find(" ", start)
    if end < 0:
        end = len(rule)
    colon = rule.rfind(":", start, end)
    if colon < 0:
        return None
    hexd = rule[colon + 1 : end]
    if not (hexd.isascii() and hexd.isalnum()):
        return None
    return rule[: colon + 1], hexd, rule[end:]


#: ``_scan.digest_parts``, the C :func:`_digest_parts` (NotImplemented for a rule that is not
#: plain ASCII), or None without the extension; a test sets it to None to run the Python one
_digest_parts_c = None if _scan is None else _scan.digest_parts
_new = tuple.__new__


class _Verdict(NamedTuple):
    """A rule verdict's encoded parts: the fields from ``decision`` to ``hook`` (with the
    separator after them), from ``rule`` to the explanation's opening quote and its text up to
    the file's name, and the explanation's rest with its closing quote. (A NamedTuple: a frozen
    dataclass's __init__ cost more than the rest of a verdict made from a digest template.)"""

    fields: str
    rule: str
    tail: str
