"""``iped daemon [--config F] [--dev]``: run the reconcile loop in the foreground.

``--dev`` is the quick start: emulator backend, the checkout's etc/iped.toml and etc/policies.d,
a throw-away state dir and dev signing key, and the control socket at the well-known dev path
that ``iped status``/``iped reload`` find without arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iped.commands import die

#: the daemon reports through its own reporter (journald, STATUS=, iped.daemon.log), never
#: through Python's logging: the CLI sets logging up only with --debug (its imports are a few
#: milliseconds of every start; a library's warning still reaches stderr, the journal, through
#: logging's last resort)
LOGS = False

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from iped.daemon.log import Reporter
    from iped.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (f"{parser.description}. The backend is the configuration's [daemon] backend: kernel, "
                          "emulator, or auto (the kernel when /sys/kernel/security/ipe exists, else the emulator); "
                          "there is no --backend option. --dev forces the emulator.")
    parser.add_argument("--config", metavar="FILE",
                        help="configuration (default /etc/iped/iped.toml); its [daemon] backend picks the backend")
    parser.add_argument("--dev", action="store_true",
                        help="development mode: emulator backend, example config from the checkout, temp state")


def _dev_banner(socket: str) -> str:
    from iped.daemon.client import dev_socket_path

    found = "" if socket == dev_socket_path() else f" --socket {socket}"
    return (
        "iped --dev: emulator backend (NOTHING IS ENFORCED), example policies from etc/policies.d\n"
        "From a second shell:\n"
        f"    iped status{found:<16} # finds the dev daemon{' automatically' if not found else ''}\n"
        f"    iped reload{found:<16} # re-reads etc/ and applies; exit 0 applied, 9 unchanged\n"
        f"    iped status --socket {socket} --json\n"
        "Edit or add etc/policies.d/*.pol and watch the daemon apply it; Ctrl-C stops.\n"
    )


def run(args: argparse.Namespace) -> int:
    from iped.daemon import runtime
    from iped.daemon.log import make_reporter

    reporter = make_reporter()
    settings = runtime.load_for_command(args.config, dev=args.dev)
    if not settings.dev:
        return _run(settings, reporter, args)
    from iped.daemon.devkey import discard_dev_key

    try:
        return _run(settings, reporter, args)
    finally:  # the throw-away key of this run: never left behind in /tmp
        key, cert = settings.policies.signing_key, settings.policies.signing_cert
        if key is not None and cert is not None:
            discard_dev_key(key, cert)


def _run(settings: Settings, reporter: Reporter, args: argparse.Namespace) -> int:
    from iped.daemon import runtime
    from iped.daemon.lock import DaemonLockError
    from iped.daemon.lock import acquire as acquire_daemon_lock
    from iped.daemon.loop import Daemon
    from iped.daemon.notify import Notifier
    from iped.paths import DEFAULT_CONFIG

    sock = settings.daemon.control_socket
    try:  # held until this process exits: a busy daemon is not a dead one
        lock = acquire_daemon_lock(sock)
    except DaemonLockError as e:
        die(str(e))
    rec = runtime.make_reconciler(settings, reporter)
    reporter.log("notice", f"backend: {rec.backend.kind.upper()} -- {rec.backend.reason}", "daemon_started")
    if args.dev:
        print(_dev_banner(str(sock)), file=sys.stderr, flush=True)

    def reloader() -> Settings:
        return runtime.dev_reloader(settings) if settings.dev else runtime.load(settings.path or Path(DEFAULT_CONFIG))

    daemon = Daemon(rec, Notifier(), reporter, reloader)
    try:
        return daemon.run()
    finally:
        lock.release()
