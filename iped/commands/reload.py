"""``iped reload [--json] [--unchanged-ok]``: reconcile now and wait for the result.

Exit codes (stable, docs/daemon.md): 0 applied, 1 rejected (invalid policy, signature,
anti-rollback, bad config), 3 daemon unreachable, 4 kernel error mid-apply, 9 nothing to change.
``--unchanged-ok`` maps 9 to 0 and nothing else: the unit's ``ExecReload=`` uses it, since systemd
takes any non-zero exit of ExecReload as "Reload failed" (``SuccessExitStatus=`` covers only the
main process), while a rejected plan or a kernel error must still fail ``systemctl reload``.
"""

from __future__ import annotations

import argparse

from iped.commands import ExitCode, outcome_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands.remote import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the daemon")
    parser.add_argument("--unchanged-ok", action="store_true",
                        help="exit 0, not 9, when there was nothing to change (for systemd's ExecReload=)")


def run(args: argparse.Namespace) -> int:
    from iped.commands.output import show
    from iped.commands.remote import ask, render_record

    rec = ask(args, "reload", args.timeout)
    show(args, rec, render_record)
    code = outcome_exit(rec.get("outcome"))
    return ExitCode.OK if args.unchanged_ok and code == ExitCode.UNCHANGED else code
