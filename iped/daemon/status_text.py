"""``iped status`` for people: the daemon's status reply rendered as plain, labelled lines.

No Python reprs, no True/False, counts with their nouns ("1 step", "3 events"), and the two
views of sync kept apart: ``now`` is the live comparison of the declared state with the kernel
(``in_sync`` and ``drift``), ``last reconcile`` is what the last reconcile achieved
(``status_line``, systemd's STATUS=). A reply that lacks a field, or carries the wrong type
(another program on the socket, a bug), renders as ``?`` rather than failing; control
characters in names, paths and messages are escaped (:mod:`iped.textsafe`).

Import-light: ``iped status`` imports this and the client only.
"""

from __future__ import annotations

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: the width of the label column
_LABEL = 16


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objs(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def count(n: Any, noun: str, plural: str | None = None) -> str:
    """``1 step``, ``3 steps``, ``? steps`` (not a number)."""
    number = _int(n)
    if number is None:
        return f"? {plural or noun + 's'}"
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def _on_off(value: Any) -> str:
    return "on" if value is True else "off" if value is False else "?"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return "?"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    return " ".join([*parts, f"{s}s"] if s or not parts else parts)


def _line(label: str, value: str) -> str:
    return f"{label + ':':<{_LABEL}}{value}"


def _daemon(st: dict[str, Any]) -> str:
    state = "ready" if st.get("ready") is True else "NOT READY (the declared policy is not active yet)"
    dev = ", development mode (--dev)" if st.get("dev") is True else ""
    return f"{state}, pid {_int(st.get('pid')) or '?'}, up {_duration(st.get('uptime_s'))}{dev}"


def _now(st: dict[str, Any]) -> str:
    drift = st.get("drift")
    differences = len(drift) if isinstance(drift, list) else None
    if st.get("in_sync") is True:
        return "in sync: the kernel holds the declared state"
    if st.get("in_sync") is False:
        return f"NOT in sync: {count(differences, 'difference')} from the declared state (drift, below)"
    return "?"


def _policies(st: dict[str, Any]) -> list[str]:
    policies = _objs(st.get("policies"))
    if not policies:
        return [_line("policies", "none loaded")]
    rows = [("*" if p.get("active") is True else " ", str(p.get("name", "?")), str(p.get("version", "?")),
             f"sha256:{str(p.get('blob_digest'))[:16]}" if p.get("blob_digest") else "unsigned",
             str(p.get("source") or "(not declared)")) for p in policies]
    name_w = max(len(r[1]) for r in rows)
    ver_w = max(len(r[2]) for r in rows)
    out = ["policies in the kernel (* active):"]
    out += [f"  {a} {name:<{name_w}}  {ver:<{ver_w}}  {digest:<23}  {source}" for a, name, ver, digest, source in rows]
    return out


def _plans(st: dict[str, Any]) -> list[str]:
    plans = _objs(st.get("last_plans"))
    if not plans:
        return []
    out = ["last plans (newest first):"]
    for r in plans:
        steps = r.get("steps")
        n = len(steps) if isinstance(steps, list) else None
        out.append(f"  #{r.get('seq', '?')} {r.get('time', '?')} {r.get('trigger', '?')}: {r.get('outcome', '?')}, "
                   f"{count(n, 'step')}")
    return out


def _counters(st: dict[str, Any]) -> str:
    c = _obj(st.get("counters"))
    parts = [f"{c.get(k, '?')} {k}" for k in ("applied", "unchanged", "rejected", "failed")]
    return f"{c.get('reconciles', '?')} ({', '.join(parts)})"


def _loads(loads: list[dict[str, Any]]) -> str:
    if not loads:
        return "none"
    return ", ".join(f"{load.get('count', '?')} {load.get('result', '?')}"
                     + (f" ({load['errno_name']})" if isinstance(load.get("errno_name"), str) else "")
                     for load in loads)


def _lost(value: Any) -> str:
    numbers = [_int(v) for v in value.values()] if isinstance(value, dict) else [_int(value)]
    return "?" if None in numbers else str(sum(n for n in numbers if n is not None))


def _audit(st: dict[str, Any]) -> list[str]:
    audit = _obj(st.get("audit"))
    follower = audit.get("follower")
    if not isinstance(follower, dict):
        return [_line("audit", str(audit["error"]) if audit.get("error") else "not followed")]
    decisions = _obj(follower.get("decisions"))
    pad = " " * _LABEL
    return [
        _line("audit", str(follower.get("source_description") or follower.get("source") or "?")),
        f"{pad}{count(follower.get('events'), 'event')}: {decisions.get('allow', '?')} allowed, "
        f"{decisions.get('deny', '?')} denied; policy loads: {_loads(_objs(follower.get('loads')))}; "
        f"{count(follower.get('config_changes'), 'config change')}, "
        f"{count(follower.get('enforce_changes'), 'enforce change')}",
        f"{pad}lost {_lost(follower.get('lost'))}, duplicates {follower.get('duplicates', '?')}, "
        f"incomplete {follower.get('incomplete_events', '?')}, spurious EOE {follower.get('spurious_eoe', '?')}, "
        f"foreign frames {follower.get('foreign_frames', '?')}",
    ]


def _boot(st: dict[str, Any]) -> list[str]:
    """What PID 1 loaded at this boot and whether the boot copy is current (docs/boot.md)."""
    boot = _obj(st.get("boot"))
    if not boot:
        return []
    copy = _obj(boot.get("copy"))
    files = ", ".join(f"{f.get('name', '?')} sha256:{str(f.get('blob_digest'))[:16]}" for f in _objs(copy.get("files")))
    current = "current" if copy.get("current") else "NOT the active blob"
    return [
        _line("boot", str(boot.get("summary", "?"))),
        _line("boot copy", f"{_on_off(copy.get('enabled'))}  {copy.get('dir', '?')}: {files or 'empty'}  {current}"
                           f"  fail_closed: {_on_off(boot.get('fail_closed'))}"),
        *_initramfs_copy(_obj(boot.get("initramfs"))),
        *(f"  - {n}" for n in boot.get("notes") or [] if isinstance(boot.get("notes"), list)),
    ]


def _initramfs_copy(copy: dict[str, Any]) -> list[str]:
    """``[boot] initramfs``: what the next initramfs built carries (only when it is on)."""
    if not copy.get("enabled"):
        return []
    files = ", ".join(f"{f.get('name', '?')} sha256:{str(f.get('blob_digest'))[:16]}" for f in _objs(copy.get("files")))
    return [_line("initramfs copy", f"on  {copy.get('dir', '?')}: {files or 'empty'}  "
                                    f"{'current' if copy.get('current') else 'NOT the active blob'}")]


def render(status: Any) -> str:
    """The text of ``iped status`` for a status reply (docs/daemon.md's schema)."""
    from iped.textsafe import escape_controls

    st = _obj(status)
    backend = _obj(st.get("backend"))
    declared = _obj(st.get("declared"))
    lines = [
        _line("backend", f"{str(backend.get('kind', '?')).upper()} -- {backend.get('reason', '?')}"),
        _line("daemon", _daemon(st)),
        _line("now", _now(st)),
        _line("last reconcile", str(st.get("status_line", "?"))),
        _line("enforce", f"{_on_off(st.get('enforce'))}   success_audit: {_on_off(st.get('success_audit'))}"),
        _line("config", str(st.get("config") or "(none)")),
        _line("drop-in dir", str(declared.get("dir", "?"))),
        *_policies(st),
    ]
    drift = st.get("drift")
    if isinstance(drift, list) and drift:
        lines.append("drift (declared vs kernel):")
        lines += [f"  - {d}" for d in drift]
    errors = _objs(declared.get("errors"))
    if errors:
        lines.append("declared state errors:")
        lines += [f"  ! {e.get('message', '?')}" for e in errors]
    lines += _boot(st)
    lines += _plans(st)
    lines.append(_line("reconciles", _counters(st)))
    lines += _audit(st)
    return "\n".join(escape_controls(line) for line in lines)
