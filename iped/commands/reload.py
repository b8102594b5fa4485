"""``iped reload [--json]``: reconcile now and wait for the result.

Exit codes (stable, docs/daemon.md): 0 applied, 1 rejected (invalid policy, signature,
anti-rollback, bad config), 3 daemon unreachable, 4 kernel error mid-apply, 9 nothing to change
(0 with ``--unchanged-ok``: systemd's ExecReload takes any non-zero exit as "Reload failed").
"""

from __future__ import annotations

import argparse

from iped.commands import outcome_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.daemon.client import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the daemon")
    parser.add_argument("--unchanged-ok", action="store_true",
                        help="exit 0, not 9, when there was nothing to change (for ExecReload= in iped.service)")


def run(args: argparse.Namespace) -> int:
    from iped.daemon.client import ask, print_json, render_record

    rec = ask(args, "reload", args.timeout)
    if args.json:
        print_json(rec)
    else:
        print(render_record(rec))
    if args.unchanged_ok and rec.get("outcome") == "unchanged":
        return 0
    return outcome_exit(rec.get("outcome"))
