"""``iped status [--json] [--no-daemon]``: what the daemon and the kernel say, drift, last plans, counters.

Fast path: imports only socket/json and the client (no pydantic, no emulator, no crypto).
``--no-daemon`` reads the kernel's state (or the emulator's) and the declared state in this
process, for first boot and rescue, where no daemon runs (config management's ``ipe_facts``
falls back to it when the daemon is unreachable); the document says so (``daemon: false``).
"""

from __future__ import annotations

import argparse

from iped.commands import ExitCode

#: nothing on this verb's path logs (the client reports through CliError): the CLI skips
#: setting logging up, which costs more than the rest of the verb's own imports
LOGS = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands.remote import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--no-daemon", action="store_true",
                        help="read the kernel's (or emulator's) state directly, without asking a daemon")


def direct_status(config: str | None) -> dict[str, object]:
    """The status document computed here: the backend read now, the declared files scanned now;
    no daemon, so no readiness, counters or audit follower."""
    from iped.daemon import runtime, service
    from iped.daemon.log import NullReporter

    rec = runtime.make_reconciler(runtime.load_for_command(config), NullReporter(), writes_state=False)
    st = service.status(rec, {"daemon": False, "ready": None, "pid": None})
    where = "the emulator in this process" if rec.backend.capabilities.state_in_process else "the kernel's securityfs"
    st["status_line"] = (f"{'in sync' if st['in_sync'] else 'NOT in sync'} (no daemon: read directly from {where} "
                         "and the declared files)")
    return st


def run(args: argparse.Namespace) -> int:
    from iped.commands.output import show
    from iped.commands.remote import ask, render_status

    result = direct_status(args.config) if args.no_daemon else {**ask(args, "status", 30), "daemon": True}
    show(args, result, render_status)
    return ExitCode.OK
