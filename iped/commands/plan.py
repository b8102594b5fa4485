"""``iped plan [--json]``: dry run -- what a reload would do, writing nothing.

Asks the running daemon when one answers (its backend holds the real state, which matters for
the emulator); otherwise computes against the configured backend directly, with the same
:func:`iped.daemon.service.plan`.
"""

from __future__ import annotations

import argparse
import os

from iped.commands import outcome_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands.remote import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--no-daemon", action="store_true",
                        help="compute here, without asking a daemon (without it: only when none listens)")


def _local(args: argparse.Namespace) -> dict[str, object]:
    from iped.daemon import runtime, service
    from iped.daemon.log import NullReporter

    rec = runtime.make_reconciler(runtime.load_for_command(args.config), NullReporter(), writes_state=False)
    return {**service.plan(rec).as_dict(), "backend_reason": rec.backend.reason, "daemon": False}


def _from_daemon(args: argparse.Namespace) -> dict[str, object] | None:
    """The daemon's plan; None (compute here) only under the one no-daemon rule
    (:func:`iped.daemon.client.ask_unless_no_daemon`): with ``--no-daemon``, or when nothing listens.

    A daemon this user may not talk to (EACCES, the socket's mode or the daemon's peer check) is
    an error: a local run would only fail later, on files only root can read."""
    from iped.commands.remote import ask_unless_no_daemon, checked_result, reply_error

    # the configuration to plan: the daemon's own, or a staged one (config management judging
    # what it is about to install)
    staged = {"config": os.path.abspath(args.config)} if args.config else {}
    asked = ask_unless_no_daemon(args, "plan", 60, **staged)
    if asked is None:
        return None
    path, reply = asked
    if not reply["ok"]:
        error = reply_error(reply)
        if reply.get("errno_name") == "EACCES":
            error.hint = "needs root or the control group"
        raise error
    return {**checked_result(path, "plan", reply.get("result")), "daemon": True}


def run(args: argparse.Namespace) -> int:
    from iped.commands.remote import print_json
    from iped.textsafe import escape_controls

    result = _from_daemon(args)
    if result is None:
        result = _local(args)
    if args.json:
        print_json(result)
    else:
        print(escape_controls(f"plan ({'from the daemon' if result['daemon'] else 'computed locally'}, "
                              f"backend {result['backend']}): {result['outcome']}"))
        steps: list[dict[str, str]] = result["steps"]  # type: ignore[assignment]
        errors: list[dict[str, str]] = result["errors"]  # type: ignore[assignment]
        for s in steps:
            print(escape_controls(f"  - {s.get('description') if isinstance(s, dict) else s}"))
        for problem in errors:
            print(escape_controls(f"  rejected: {problem.get('message') if isinstance(problem, dict) else problem}"))
        boot: dict[str, list[str]] = result.get("boot") or {}  # type: ignore[assignment]
        for note in boot.get("notes") or []:
            print(escape_controls(f"  boot: {note}"))
    return outcome_exit(result["outcome"])
