"""``iped rollback [--dry-run] [--json]``: roll forward to the previous content of the active policy.

Rewrites the declaring file (``*.pol`` text, or ``*.p7s`` re-signed with the local key) with the
previous content and a bumped version, then reconciles (through the daemon when it runs, else
here with the same :func:`iped.daemon.service.rollback`).
Exit codes as ``iped reload``; 1 also when there is nothing to roll back to or no key.
"""

from __future__ import annotations

import argparse
from typing import Any

from iped.commands import die, outcome_exit
from iped.outcome import Outcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands.remote import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="show what would be written, change nothing")


def _local(args: argparse.Namespace) -> dict[str, Any]:
    from iped.daemon import runtime, service
    from iped.daemon.log import StderrReporter
    from iped.daemon.rollback import RollbackError

    rec = runtime.make_reconciler(runtime.load_for_command(args.config), StderrReporter())
    try:
        return service.rollback(rec, bool(args.dry_run)).as_dict()
    except RollbackError as e:
        die(e.message)


def run(args: argparse.Namespace) -> int:
    from iped.commands.remote import ask, print_json, render_record
    from iped.daemon.client import DaemonUnreachableError

    try:
        res = ask(args, "rollback", 120, dry_run=bool(args.dry_run))
    except DaemonUnreachableError:
        res = _local(args)
    if args.json:
        print_json(res)
    else:
        print(f"rollback {res['name']}: {res['from_version']} -> {res['new_version']} with the content of "
              f"sha256:{res['content_digest'][:16]}, written to {res['target']}")
        if res["record"].get("outcome") != Outcome.DRY_RUN:
            print(render_record(res["record"]))
    return outcome_exit(res["record"].get("outcome"))
