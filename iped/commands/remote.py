"""What the verbs that talk to the daemon share: their socket arguments, one request and its
error reply, and the text rendering of a plan record and of the status.

The socket itself is :mod:`iped.daemon.client`'s. Import-light (``iped status``): os, sys.
"""

from __future__ import annotations

import os
import sys

from iped.commands import CliError
from iped.daemon.client import DaemonUnreachableError, MalformedReplyError, NoDaemonError, find_socket, request
from iped.outcome import Outcome
from iped.paths import DEFAULT_CONFIG, DEFAULT_SOCKET, NO_CONFIG_HINT

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def add_socket_arguments(parser: Any) -> None:
    parser.add_argument("--socket", metavar="PATH", help="control socket (default: configured, "
                        "/run/iped/control.sock, or the 'iped daemon --dev' socket)")
    parser.add_argument("--config", metavar="FILE", help="iped.toml to read the socket path from")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


#: the fields each op's result must have, with their JSON types, before a verb reads them
RESULT_FIELDS: dict[str, dict[str, type]] = {
    "status": {},
    "reload": {"outcome": str},
    "plan": {"outcome": str, "backend": str, "steps": list, "errors": list},
    "rollback": {"name": str, "from_version": str, "new_version": str, "content_digest": str, "target": str,
                 "record": dict},
}


def ask_reply(args: Any, op: str, timeout: float, **params: Any) -> tuple[str, dict[str, Any]]:
    """The socket used and the daemon's reply (``ok`` true or false) for one request of a verb with
    :func:`add_socket_arguments`. Raises DaemonUnreachableError (exit 3) when no daemon answers, or
    the socket is not root's; MalformedReplyError. Says on stderr which socket it used when it found
    one other than the system one (neither ``--socket`` nor ``--config`` named it)."""
    path = find_socket(args.socket, args.config)
    if not args.socket and not args.config and path != DEFAULT_SOCKET:  # found, not given: say which
        from iped.textsafe import escape_controls

        print(f"iped: using the control socket {escape_controls(path)} (not the system one, {DEFAULT_SOCKET})",
              file=sys.stderr, flush=True)
    try:
        return path, request(path, op, timeout=timeout, **params)
    except DaemonUnreachableError as e:
        if e.hint is None and not args.socket and not args.config and not os.path.exists(DEFAULT_CONFIG):
            e.hint = f"no {DEFAULT_CONFIG} on this host either: {NO_CONFIG_HINT}"
        raise


def ask_unless_no_daemon(args: Any, op: str, timeout: float, **params: Any) -> tuple[str, dict[str, Any]] | None:
    """The one no-daemon rule of the verbs that can run without a daemon (``plan``, ``rollback``;
    README "Command-line conventions"): ask the daemon (:func:`ask_reply`), and return None --
    compute locally -- only with ``--no-daemon`` or when nothing listens on the socket (ENOENT,
    ECONNREFUSED), which is then said on stderr. Everything else stays the verb's answer: an error
    reply (returned, ``ok`` false), a malformed one, and a socket that is there but refused
    (EACCES), untrusted, or too busy to accept (raised, exit 3): a daemon may be running, and a
    local run beside it would answer for a state that is not the one in force."""
    if getattr(args, "no_daemon", False):
        return None
    try:
        return ask_reply(args, op, timeout, **params)
    except NoDaemonError as e:
        from iped.textsafe import escape_controls

        print(f"iped: no daemon listening on {escape_controls(e.path)} ({e.strerror}): computing locally",
              file=sys.stderr, flush=True)
        return None


def reply_error(reply: dict[str, Any]) -> CliError:
    """An error reply (``ok`` false) as the verb's one-line error (exit 1, ``ERRNO_NAME: message``)."""
    from iped.textsafe import escape_controls

    return CliError(escape_controls(f"{reply.get('errno_name')}: {reply.get('error')}"))


def checked_result(path: str, op: str, result: Any) -> Any:
    """A successful reply's result, with the fields the verb reads (:data:`RESULT_FIELDS`) checked:
    a forged or broken reply is a MalformedReplyError, never a crash."""
    if op not in RESULT_FIELDS:
        return result
    if not isinstance(result, dict):
        raise MalformedReplyError(path, f"the {op!r} result is not a JSON object")
    for key, kind in RESULT_FIELDS[op].items():
        if not isinstance(result.get(key), kind):
            raise MalformedReplyError(path, f"the {op!r} result has no {key!r} "
                                            f"{'string' if kind is str else kind.__name__}")
    return result


def ask(args: Any, op: str, timeout: float, **params: Any) -> Any:
    """The daemon's result for one request (:func:`ask_reply`, :func:`checked_result`); an error
    reply is a CliError (exit 1, ``ERRNO_NAME: message``)."""
    path, reply = ask_reply(args, op, timeout, **params)
    if not reply["ok"]:
        raise reply_error(reply)
    return checked_result(path, op, reply.get("result"))


def _obj(value: Any) -> dict[str, Any]:
    """A reply's JSON object, or an empty one where a forged or broken reply has something else."""
    return value if isinstance(value, dict) else {}


def _objs(value: Any) -> list[dict[str, Any]]:
    return [_obj(v) for v in value] if isinstance(value, list) else []


def _safe_lines(lines: list[str]) -> str:
    """The lines of a text output, each with the control characters the daemon's reply carried
    (from names, paths, messages) escaped: what reaches the terminal is never an instruction to it."""
    from iped.textsafe import escape_controls

    return "\n".join(escape_controls(line) for line in lines)


def render_record(rec: dict[str, Any]) -> str:
    """A plan record (reload/apply result) for people."""
    rec = _obj(rec)
    out = [f"{rec.get('outcome', '?')}" + (f" (plan #{rec['seq']})" if rec.get("seq") else "")]
    errors = rec.get("errors")
    for e in errors if isinstance(errors, list) else []:
        out.append(f"  rejected: {e.get('message', e) if isinstance(e, dict) else e}")
    done = rec["done"] if isinstance(rec.get("done"), int) else 0
    failure = _obj(rec.get("failure"))
    for i, s in enumerate(_objs(rec.get("steps"))):
        mark = "done" if i < done else ("FAILED" if failure and i == done else "skipped")
        out.append(f"  [{mark}] {s.get('description')}")
    if failure:
        out.append(f"  error: {failure.get('message')}")
        out.append("  the policies before the failed step are in place; the active policy is unchanged "
                   "unless the activation itself completed")
    if rec.get("outcome") == Outcome.REJECTED:
        out.append("  nothing was written to the kernel")
    return _safe_lines(out)


def render_status(st: dict[str, Any]) -> str:
    """``iped status`` for people (:mod:`iped.daemon.status_text`)."""
    from iped.daemon.status_text import render

    return render(st)
