"""``iped plan [--json]``: dry run -- what a reload would do, writing nothing.

Asks the running daemon when one answers (its backend holds the real state, which matters for
the emulator); otherwise computes against the configured backend directly, with the same
:func:`iped.daemon.service.plan`.
"""

from __future__ import annotations

import argparse
import contextlib

from iped.commands import CliError, outcome_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.daemon.client import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--no-daemon", action="store_true", help="compute against the backend even if a daemon runs")


def _local(args: argparse.Namespace) -> dict[str, object]:
    from iped.daemon import runtime, service
    from iped.daemon.log import NullReporter

    rec = runtime.make_reconciler(runtime.load_for_command(args.config), NullReporter(), writes_state=False)
    return {**service.plan(rec).as_dict(), "backend_reason": rec.backend.reason, "daemon": False}


def run(args: argparse.Namespace) -> int:
    from iped.daemon.client import ask, print_json

    result: dict[str, object] | None = None
    if not args.no_daemon:
        with contextlib.suppress(CliError):  # no daemon, or it would not answer: compute here
            result = {**ask(args, "plan", 60), "daemon": True}
    if result is None:
        result = _local(args)
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
        boot: dict[str, list[str]] = result.get("boot") or {}  # type: ignore[assignment]
        for note in boot.get("notes") or []:
            print(f"  boot: {note}")
    return outcome_exit(result["outcome"])
