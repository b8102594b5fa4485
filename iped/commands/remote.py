"""What the verbs that talk to the daemon share: their socket arguments, one request and its
error reply, and the text rendering of a plan record and of the status.

The socket itself is :mod:`iped.daemon.client`'s. Import-light (``iped status``): json, sys.
"""

from __future__ import annotations

import json
import sys

from iped.commands import CliError
from iped.daemon.client import find_socket, request
from iped.outcome import Outcome

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
    reply = request(find_socket(args.socket, args.config), op, timeout=timeout, **params)
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
    b = st.get("backend", {})
    lines = [
        f"backend:       {str(b.get('kind', '?')).upper()}  -- {b.get('reason', '')}",
        f"enforce:       {int(bool(st.get('enforce')))}   success_audit: {int(bool(st.get('success_audit')))}",
        f"ready:         {st.get('ready')}   in sync: {st.get('in_sync')}   pid {st.get('pid')}",
        f"status:        {st.get('status_line', '?')}",
        f"config:        {st.get('config')}   policies: {st.get('declared', {}).get('dir')}",
        "policies:",
    ]
    for p in st.get("policies", []):
        flag = "*" if p.get("active") else " "
        lines.append(f"  {flag} {p['name']:<24} {p['version']:<12} sha256:{(p.get('blob_digest') or 'unsigned')[:16]}"
                     f"  {p.get('source') or '(not declared)'}")
    if st.get("drift"):
        lines.append("drift (declared vs kernel):")
        lines += [f"  - {d}" for d in st["drift"]]
    errs = st.get("declared", {}).get("errors") or []
    for e in errs:
        lines.append(f"  ! {e.get('message')}")
    plans = st.get("last_plans") or []
    if plans:
        lines.append("last plans:")
        for r in plans:
            lines.append(f"  #{r.get('seq')} {r.get('time')} {r.get('trigger')}: {r.get('outcome')} "
                         f"({len(r.get('steps') or [])} steps)")
    c = st.get("counters", {})
    lines.append("counters:      " + " ".join(f"{k}={v}" for k, v in sorted(c.items())))
    audit = st.get("audit") or {}
    if audit.get("follower"):
        lines.append("audit:         " + " ".join(f"{k}={v}" for k, v in sorted(audit["follower"].items())
                                                  if not isinstance(v, dict)))
    elif audit.get("error"):
        lines.append(f"audit:         {audit['error']}")
    return "\n".join(lines)
