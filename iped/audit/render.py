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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from iped.audit.explain import PolicyIndex, RuleVerdict, access_target, explain_access, explain_load, rule_verdict
from iped.audit.group import Event
from iped.audit.records import IpeAccess, IpeConfigChange, IpeMacStatus, IpePolicyLoad, Proctitle, Syscall
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


def stamp_texts(sec: int, msec: int, ts: float) -> tuple[str, str]:
    """The milliseconds of ``time`` and the ``timestamp`` of an event stamped ``sec.msec``
    (``ts`` = ``sec + msec / 1000.0``): what :func:`_iso` and ``round(ts, 3)`` give.

    For a plain stamp they are its own digits: ``round`` of a float to 3 places (a decimal
    conversion, a fifth of the rendering's time) gives the double nearest ``sec.msec``, whose
    repr is those digits without trailing zeros, as long as ``ts`` is within far less than half
    a millisecond of it (seconds below 10**10: within 2e-6).
    """
    if 0 <= msec < 1000 and 0 <= sec < 10**10:
        frac = f"{msec:03d}"
        return frac, f"{sec}.{frac.rstrip('0') or '0'}"
    return f"{round(ts * 1000) % 1000:03d}", float.__repr__(round(ts, 3))


class JsonLines:
    """``json_line`` of each object of ``event_objects(event, index)``, faster (see the module docstring).

    Keeps what it encoded: one entry per distinct (op, hook, enforcing, rule) -- bounded by the
    policy's rules and defaults -- the current second's text, and up to :data:`_KEPT` string
    values and process parts (then that table starts afresh).
    """

    def __init__(self, index: PolicyIndex | None) -> None:
        self.index = index
        self._verdicts: dict[tuple[str | None, str | None, bool | None, str | None], _Verdict] = {}
        self._second = -1
        self._second_text = ""
        self._strings: dict[str | None, str] = {}
        self._processes: dict[tuple[object, ...], tuple[str, str]] = {}

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
        """The line of an event whose one IPE record is ``rec``."""
        op, hook, enforcing, pid, comm, path, dev, ino, rule = rec
        verdict = self._verdicts.get((op, hook, enforcing, rule))
        if verdict is None:
            verdict = self._verdicts[op, hook, enforcing, rule] = self._verdict(rec)
        sec, msec = event.sec, event.msec
        ts = sec + msec / 1000.0  # (Event.timestamp, without the property call)
        if int(ts) != self._second:
            self._second = int(ts)
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self._second))
        milli, stamp = stamp_texts(sec, msec, ts)
        strings = self._strings
        path_json = strings.get(path) or self._text(path)
        # the explanation names the path (its JSON text without the quotes), or access_target's stand-in
        target = path_json[1:-1] if path is not None else _encode_str(access_target(rec))[1:-1]
        return (
            f'{{"schema_version": {SCHEMA_VERSION}, "time": "{self._second_text}.{milli}Z", '
            f'"timestamp": {stamp}, "serial": {int.__repr__(event.serial)}, '
            f'"complete": {"true" if event.complete else "false"}, "kind": "access", {verdict.fields}'
            f'"pid": {"null" if pid is None else int.__repr__(pid)}, '
            f'"comm": {strings.get(comm) or self._text(comm)}, "path": {path_json}, '
            f'"dev": {strings.get(dev) or self._text(dev)}, "ino": {"null" if ino is None else int.__repr__(ino)}, '
            f'{verdict.rule}{target}{verdict.tail}, "process": {self._process(sc, pt)}}}'
        )

    def _text(self, value: str | None) -> str:
        """A str or None JSON-encoded; strings remembered (comm, dev, exe repeat from event to event)."""
        if value is None:
            return "null"
        strings = self._strings
        if len(strings) >= _KEPT:
            strings.clear()
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
            argv = "null" if pt is None else json_line(list(pt.argv))
            text = self._text
            parts = self._processes[key] = (
                f'{{"exe": {text(exe)}, "comm": {text(comm)}, "pid": ',
                f', "ppid": {_value(ppid)}, "uid": {_value(uid)}, "auid": {_value(auid)}, "ses": {_value(ses)}, '
                f'"syscall": {_value(nr)}, "success": {_value(success)}, "exit": {_value(exit_)}, "argv": {argv}}}',
            )
        return f"{parts[0]}{'null' if pid is None else int.__repr__(pid)}{parts[1]}"

    def _verdict(self, rec: IpeAccess) -> _Verdict:
        v = rule_verdict(rec, self.index)
        loc = v.location
        policy = "null" if loc is None else json_line({"file": loc.file, "line": loc.line, "kind": loc.kind})
        return _Verdict(
            v,
            f'"decision": {_value(v.decision)}, "enforcing": {_value(rec.enforcing)}, "blocked": {_value(v.blocked)}, '
            f'"op": {_value(rec.op)}, "hook": {_value(rec.hook)}, ',
            f'"rule": {_value(rec.rule)}, "rule_text": {_value(v.rule_text)}, "match": {_value(v.match)}, '
            f'"policy": {policy}, "explanation": {_encode_str(v.head)[:-1]}',
            _encode_str(v.tail)[1:],
        )


#: distinct strings and process parts kept encoded (then the table starts afresh)
_KEPT = 4096


@dataclass(frozen=True, slots=True)
class _Verdict:
    """A rule verdict's encoded parts: the fields from ``decision`` to ``hook`` (with the
    separator after them), from ``rule`` to the explanation's opening quote and its text up to
    the file's name, and the explanation's rest with its closing quote."""

    verdict: RuleVerdict
    fields: str
    rule: str
    tail: str
