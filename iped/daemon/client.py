"""What the CLI verbs share to reach the daemon: finding the socket, and rendering replies.

Import-light on purpose (``iped status`` must start fast): json, os, pathlib, tomllib only.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys

from iped.commands import CliError, ExitCode

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CONFIG = "/etc/iped/iped.toml"
DEFAULT_SOCKET = "/run/iped/control.sock"


class DaemonUnreachableError(CliError):
    """No daemon answers on the socket (exit code 3)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"daemon unreachable: {message}", code=ExitCode.UNREACHABLE)


def request(path: str | os.PathLike[str], op: str, timeout: float = 120.0, **args: Any) -> dict[str, Any]:
    """Send one JSON-line request and wait for its reply line. Raises DaemonUnreachableError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            _connect(s, os.fspath(path), timeout)
            s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise DaemonUnreachableError(f"{path}: daemon closed the connection without a reply")
                buf += chunk
    except (FileNotFoundError, ConnectionRefusedError) as e:
        raise DaemonUnreachableError(f"{path}: no daemon listening ({e.strerror})") from None
    except BlockingIOError:
        raise DaemonUnreachableError(f"{path}: the daemon's accept queue stayed full for {timeout:g} s "
                                     "(it is busy or stopped)") from None
    except PermissionError as e:
        raise DaemonUnreachableError(
            f"{path}: {e.strerror} (root, or membership in the control group, is needed)") from None
    except OSError as e:
        raise DaemonUnreachableError(f"{path}: {e}") from None
    reply: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    return reply


def _connect(s: socket.socket, path: str, timeout: float) -> None:
    """connect(), waiting up to ``timeout`` seconds while the daemon's accept queue is full (it
    is busy, not gone), then leave ``s`` with that timeout for the request.

    The wait is the kernel's: a blocking connect with SO_SNDTIMEO sleeps on the listener and is
    woken as soon as the daemon accepts a connection (af_unix: unix_wait_for_peer), so a client
    that retried on its own clock (sleep, try again) is not starved by another that reconnects
    in a tight loop. A full queue that stays full raises BlockingIOError (EAGAIN), as before."""
    seconds = max(timeout, 0.001)
    s.settimeout(None)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                 struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000)))  # fmt: skip
    s.connect(path)
    s.settimeout(timeout)


def dev_runtime_dir() -> str:
    """The well-known directory of the ``iped daemon --dev`` control socket.

    ``$XDG_RUNTIME_DIR/iped-dev`` when a login session provides one, else ``/tmp/iped-dev-<uid>``
    (root on a fresh machine usually has no XDG_RUNTIME_DIR). ``iped status``/``reload`` look here
    when neither ``--socket`` nor the system socket exists.
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "iped-dev")
    return f"/tmp/iped-dev-{os.getuid()}"


def dev_socket_path() -> str:
    return os.path.join(dev_runtime_dir(), "control.sock")


def socket_from_config(config: str) -> str | None:
    """``[daemon] control_socket`` from iped.toml, read without validation (fast path)."""
    import tomllib

    try:
        with open(config, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    daemon = data.get("daemon")
    value = daemon.get("control_socket") if isinstance(daemon, dict) else None
    if not isinstance(value, str):
        return None
    return value if os.path.isabs(value) else os.path.join(os.path.dirname(config), value)


def find_socket(explicit: str | None, config: str | None) -> str:
    """--socket, else the configured socket, else the system socket, else the --dev socket.

    The system socket wins when it exists; the dev daemon's well-known socket is the fallback so
    a newcomer's ``iped status`` finds ``iped daemon --dev`` with no arguments.
    """
    if explicit:
        return explicit
    if config:
        return socket_from_config(config) or DEFAULT_SOCKET
    if os.path.exists(DEFAULT_CONFIG):
        configured = socket_from_config(DEFAULT_CONFIG)
        if configured is not None and os.path.exists(configured):
            return configured
    if os.path.exists(DEFAULT_SOCKET):
        return DEFAULT_SOCKET
    dev = dev_socket_path()
    return dev if os.path.exists(dev) else DEFAULT_SOCKET


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
    if rec.get("outcome") == "rejected":
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
    boot = st.get("boot") or {}
    if boot:
        copy = boot.get("copy") or {}
        lines.append(f"boot:          {boot.get('summary')}")
        files = ", ".join(f"{f.get('name')} sha256:{str(f.get('blob_digest'))[:16]}" for f in copy.get("files") or [])
        lines.append(f"boot copy:     {'on' if copy.get('enabled') else 'off'}  {copy.get('dir')}: {files or 'empty'}"
                     f"  {'current' if copy.get('current') else 'NOT the active blob'}"
                     f"  fail_closed: {'on' if boot.get('fail_closed') else 'off'}")
        lines += [f"  - {n}" for n in boot.get("notes") or []]
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
