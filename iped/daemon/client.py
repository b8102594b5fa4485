"""The control socket's client side: finding the socket, one JSON-line request, its reply.

The transport only; the verbs' arguments, error replies and text rendering are
:mod:`iped.commands.remote`'s. Import-light on purpose (``iped status`` must start fast): json,
os, socket, struct, tomllib only.
"""

from __future__ import annotations

# _socket, not socket: the wrapper module pulls selectors, array and its enum conversions into
# every `iped status`, which needs none of them (a third of the verb's own imports)
import _socket
import json
import os
import struct

from iped.errors import UNREACHABLE, USAGE, UserError
from iped.paths import DEFAULT_CONFIG, DEFAULT_SOCKET

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any



class DaemonUnreachableError(UserError):
    """No daemon answers on the socket (exit code 3)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"daemon unreachable: {message}", code=UNREACHABLE)


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


class MalformedReplyError(UserError):
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
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            s.settimeout(timeout)
            _connect(s, os.fspath(path), timeout)
            s.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise DaemonUnreachableError(f"{path}: daemon closed the connection without a reply")
                buf += chunk
        finally:
            s.close()
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


def _connect(s: _socket.socket, path: str, timeout: float) -> None:
    """connect(), waiting up to ``timeout`` seconds while the daemon's accept queue is full (it
    is busy, not gone), then leave ``s`` with that timeout for the request.

    The wait is the kernel's: a blocking connect with SO_SNDTIMEO sleeps on the listener and is
    woken as soon as the daemon accepts a connection (af_unix: unix_wait_for_peer), so a client
    that retried on its own clock (sleep, try again) is not starved by another that reconnects
    in a tight loop. A full queue that stays full raises BlockingIOError (EAGAIN), as before."""
    seconds = max(timeout, 0.001)
    s.settimeout(None)
    s.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO,
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
            raise UserError(f"--config {config}: {name}: {e.strerror or e}", code=USAGE) from None
        return None
    except tomllib.TOMLDecodeError as e:
        if given:
            raise UserError(f"--config {config}: not TOML: {e}", code=USAGE) from None
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
