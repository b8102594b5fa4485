"""``iped plan [--json]``: dry run -- what a reload would do, writing nothing.

Asks the running daemon when one answers (its backend holds the real state, which matters for
the emulator); otherwise computes against the configured backend directly.
"""

from __future__ import annotations

import argparse

from iped.commands import outcome_exit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from iped.daemon.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.daemon.client import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--no-daemon", action="store_true", help="compute against the backend even if a daemon runs")


def _local(settings: Settings) -> dict[str, object]:
    from iped.daemon import runtime
    from iped.daemon.log import NullReporter
    from iped.daemon.plan_document import plan_document

    rec = runtime.make_reconciler(settings, NullReporter())
    _, actual, plan = rec.compute()
    return {**plan_document(actual, plan, rec.backend.kind), "backend_reason": rec.backend.reason, "daemon": False}


def run(args: argparse.Namespace) -> int:
    from iped.daemon.client import DaemonUnreachableError, err, find_socket, print_json, request

    result: dict[str, object] | None = None
    if not args.no_daemon:
        try:
            reply = request(find_socket(args.socket, args.config), "plan", timeout=60)
            if reply.get("ok"):
                result = {**reply["result"], "daemon": True}
        except DaemonUnreachableError:
            pass
    if result is None:
        from iped.daemon import runtime

        settings = runtime.load_for_command(args.config)
        if settings is None:
            return 1
        try:
            result = _local(settings)
        except RuntimeError as e:
            err(str(e))
            return 1
    if args.json:
        print_json(result)
    else:
        print(f"plan ({'from the daemon' if result['daemon'] else 'computed locally'}, backend {result['backend']}):"
              f" {result['outcome']}")
        steps: list[dict[str, str]] = result["steps"]  # type: ignore[assignment]
        errors: list[dict[str, str]] = result["errors"]  # type: ignore[assignment]
        for s in steps:
            print(f"  - {s['description']}")
        for problem in errors:
            print(f"  rejected: {problem['message']}")
    return outcome_exit(result["outcome"])
