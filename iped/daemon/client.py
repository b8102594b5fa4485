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
#: what to do on a host without DEFAULT_CONFIG (iped not installed, or a first try from a checkout)
NO_CONFIG_HINT = "give --config FILE, or try iped from its source checkout: 'iped daemon --dev' (packaging/dev.sh run)"


class DaemonUnreachableError(CliError):
    """No daemon answers on the socket (exit code 3)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"daemon unreachable: {message}", code=ExitCode.UNREACHABLE)


class NoDaemonError(DaemonUnreachableError):
    """Nothing listens on the socket (it does not exist: ENOENT; nobody accepts on it: ECONNREFUSED):
    the one failure after which a verb that can run without a daemon computes locally
    (:func:`ask_unless_no_daemon`)."""

    def __init__(self, path: str | os.PathLike[str], strerror: str) -> None:
        super().__init__(f"{os.fspath(path)}: no daemon listening ({strerror})")
        self.path = os.fspath(path)
        self.strerror = strerror


class DaemonForbiddenError(DaemonUnreachableError):
    """A daemon listens, but this user may not talk to it (EACCES on the socket): no verb may
    fall back to a local run, which would fail later on files only root can read."""

    def __init__(self, path: str | os.PathLike[str], strerror: str) -> None:
        super().__init__(f"{os.fspath(path)}: EACCES ({strerror}): needs root or the control group")


class UntrustedSocketError(DaemonUnreachableError):
    """The socket, or a directory on the way to it, can be changed by a user iped does not trust:
    whatever answers there may be anyone, so it is not asked (exit code 3)."""


class MalformedReplyError(CliError):
    """A reply that is not what the daemon sends: said in one line, never a crash (exit code 1)."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        super().__init__(f"{os.fspath(path)}: malformed reply: {why} (not iped's daemon, or a bug in it; "
                         "nothing was taken from it)")


def check_socket(path: str | os.PathLike[str]) -> None:
    """Refuse a socket that someone other than root (or this user, for their own dev daemon)
    could have put there: the socket and every directory on the way (:mod:`iped.trustpath`)."""
    from iped.trustpath import UntrustedPathError, check_path

    try:
        check_path(path, "the daemon's replies")
    except UntrustedPathError as e:
        untrusted = UntrustedSocketError(f"{e.filename}: {e.why}; refusing to talk to a daemon there")
        untrusted.hint = e.fix
        raise untrusted from None


def request(path: str | os.PathLike[str], op: str, timeout: float = 120.0, **args: Any) -> dict[str, Any]:
    """Send one JSON-line request and wait for its reply line. Raises DaemonUnreachableError
    (UntrustedSocketError: the socket is not root's), MalformedReplyError."""
    try:
        check_socket(path)
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
        raise NoDaemonError(path, e.strerror or type(e).__name__) from None
    except BlockingIOError:
        raise DaemonUnreachableError(f"{path}: the daemon's accept queue stayed full for {timeout:g} s "
                                     "(it is busy or stopped)") from None
    except PermissionError as e:
        raise DaemonForbiddenError(path, e.strerror or "Permission denied") from None
    except OSError as e:
        raise DaemonUnreachableError(f"{path}: {e}") from None
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except (ValueError, RecursionError) as e:
        raise MalformedReplyError(path, f"not JSON ({type(e).__name__})") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise MalformedReplyError(path, 'not a JSON object with a boolean "ok"')
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


def socket_from_config(config: str, *, given: bool = False) -> str | None:
    """``[daemon] control_socket`` from iped.toml, read without validation (fast path).

    ``given`` (``--config``): a file that cannot be read or is not TOML is a usage error (exit 2),
    never a silent fall-back to the default socket and a misleading "daemon unreachable".
    """
    import errno
    import tomllib

    try:
        with open(config, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        if given:
            name = errno.errorcode.get(e.errno or 0, "error")
            raise CliError(f"--config {config}: {name}: {e.strerror or e}", code=ExitCode.USAGE) from None
        return None
    except tomllib.TOMLDecodeError as e:
        if given:
            raise CliError(f"--config {config}: not TOML: {e}", code=ExitCode.USAGE) from None
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
        return socket_from_config(config, given=True) or DEFAULT_SOCKET
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
    if rec.get("outcome") == "rejected":
        out.append("  nothing was written to the kernel")
    return _safe_lines(out)


def render_status(st: dict[str, Any]) -> str:
    """``iped status`` for people (:mod:`iped.daemon.status_text`)."""
    from iped.daemon.status_text import render

    return render(st)
