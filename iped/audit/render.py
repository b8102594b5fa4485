"""Events -> JSON Lines objects (schema in docs/audit.md) and one-line human summaries.

One output object per IPE record: an update of the active policy is one kernel event with a
1422 and a 1421 record and yields two objects with the same ``serial``.
"""

from __future__ import annotations

import time
from typing import Any

from iped.audit.explain import PolicyIndex, explain_access, explain_load
from iped.audit.group import Event
from iped.audit.records import IpeAccess, IpeConfigChange, IpeMacStatus, IpePolicyLoad

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
    """One line for people: time, what happened, who, where, which policy line."""
    when = obj["time"].replace("T", " ").rstrip("Z")
    proc = obj.get("process") or {}
    who = proc.get("exe") or obj.get("comm") or "?"
    if obj["kind"] == "access":
        verdict = "DENIED " if obj["blocked"] else "AUDIT-DENY" if obj["decision"] == "DENY" else "ALLOWED"
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
