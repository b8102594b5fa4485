"""``iped rollback [--dry-run] [--json]``: roll forward to the previous content of the active policy.

Rewrites the declaring file (``*.pol`` text, or ``*.p7s`` re-signed with the local key) with the
previous content and a bumped version, then reconciles (through the daemon when it runs).
Exit codes as ``iped reload``; 1 also when there is nothing to roll back to or no key.
"""

from __future__ import annotations

import argparse

from iped.commands import outcome_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.daemon.client import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="show what would be written, change nothing")


def run(args: argparse.Namespace) -> int:
    from iped.daemon.client import DaemonUnreachableError, err, find_socket, print_json, render_record, request

    path = find_socket(args.socket, args.config)
    try:
        reply = request(path, "rollback", dry_run=bool(args.dry_run))
    except DaemonUnreachableError:
        reply = None
    if reply is None:
        from iped.daemon import runtime
        from iped.daemon.log import StderrReporter
        from iped.daemon.rollback import RollbackError, prepare, write

        settings = runtime.load_for_command(args.config)
        if settings is None:
            return 1
        try:
            rec = runtime.make_reconciler(settings, StderrReporter())
            plan = prepare(rec)
        except (RuntimeError, RollbackError) as e:
            err(str(e))
            return 1
        if not args.dry_run:
            write(rec, plan)
            record = rec.reconcile("rollback")
        else:
            record = {"outcome": "dry-run"}
        reply = {"ok": True, "result": {"target": str(plan.target), "name": plan.name,
                                        "from_version": str(plan.current), "new_version": str(plan.new_version),
                                        "content_digest": plan.from_digest, "record": record}}
    if not reply.get("ok"):
        err(f"{reply.get('errno_name')}: {reply.get('error')}")
        return 1
    res = reply["result"]
    if args.json:
        print_json(res)
    else:
        print(f"rollback {res['name']}: {res['from_version']} -> {res['new_version']} with the content of "
              f"sha256:{res['content_digest'][:16]}, written to {res['target']}")
        if res["record"].get("outcome") != "dry-run":
            print(render_record(res["record"]))
    return outcome_exit(res["record"].get("outcome"))
