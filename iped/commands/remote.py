"""What the verbs that talk to the daemon share: their socket arguments, one request and its
error reply, and the text rendering of a plan record and of the status.

The socket itself is :mod:`iped.daemon.client`'s. Import-light (``iped status``): json, os, sys.
"""

from __future__ import annotations

import json
import os
import sys

from iped.commands import CliError
from iped.daemon.client import DaemonUnreachableError, find_socket, request
from iped.outcome import Outcome
from iped.paths import DEFAULT_CONFIG, NO_CONFIG_HINT

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def add_socket_arguments(parser: Any) -> None:
    parser.add_argument("--socket", metavar="PATH", help="control socket (default: configured, "
                        "/run/iped/control.sock, or the 'iped daemon --dev' socket)")
    parser.add_argument("--config", metavar="FILE", help="iped.toml to read the socket path from")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def ask(args: Any, op: str, timeout: float, **params: Any) -> Any:
    """The daemon's result for one request of a verb with :func:`add_socket_arguments`.

    Raises DaemonUnreachableError (exit 3) when no daemon answers, CliError (exit 1) for an
    error reply (``ERRNO_NAME: message``).
    """
    try:
        reply = request(find_socket(args.socket, args.config), op, timeout=timeout, **params)
    except DaemonUnreachableError as e:
        if e.hint is None and not args.socket and not args.config and not os.path.exists(DEFAULT_CONFIG):
            e.hint = f"no {DEFAULT_CONFIG} on this host either: {NO_CONFIG_HINT}"
        raise
    if not reply.get("ok"):
        raise CliError(f"{reply.get('errno_name')}: {reply.get('error')}")
    return reply["result"]


def render_record(rec: dict[str, Any]) -> str:
    """A plan record (reload/apply result) for people."""
    out = [f"{rec.get('outcome', '?')}" + (f" (plan #{rec['seq']})" if rec.get("seq") else "")]
    for e in rec.get("errors") or []:
        out.append(f"  rejected: {e.get('message', e)}")
    done = int(rec.get("done") or 0)
    for i, s in enumerate(rec.get("steps") or []):
        mark = "done" if i < done else ("FAILED" if rec.get("failure") and i == done else "skipped")
        out.append(f"  [{mark}] {s.get('description')}")
    if rec.get("failure"):
        out.append(f"  error: {rec['failure'].get('message')}")
        out.append("  the policies before the failed step are in place; the active policy is unchanged "
                   "unless the activation itself completed")
    if rec.get("outcome") == Outcome.REJECTED:
        out.append("  nothing was written to the kernel")
    return "\n".join(out)


def render_status(st: dict[str, Any]) -> str:
    """``iped status`` for people (:mod:`iped.daemon.status_text`)."""
    from iped.daemon.status_text import render

    return render(st)
