"""``iped plan [--json]``: dry run -- what a reload would do, writing nothing.

Asks the running daemon when one answers (its backend holds the real state, which matters for
the emulator); otherwise computes against the configured backend directly, with the same
:func:`iped.daemon.service.plan`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from iped.commands import outcome_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands.remote import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--no-daemon", action="store_true",
                        help="compute here, without asking a daemon (without it: only when none listens)")


def _local(args: argparse.Namespace) -> dict[str, Any]:
    from iped.daemon import runtime, service
    from iped.daemon.log import NullReporter

    rec = runtime.make_reconciler(runtime.load_for_command(args.config), NullReporter(), writes_state=False)
    return {**service.plan(rec).as_dict(), "backend_reason": rec.backend.reason, "daemon": False}


def _from_daemon(args: argparse.Namespace) -> dict[str, Any] | None:
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


def render(result: dict[str, Any]) -> str:
    """The plan for people: the outcome, then its steps, rejections and boot notes, one a line."""
    from iped.textsafe import escape_controls

    lines = [f"plan ({'from the daemon' if result['daemon'] else 'computed locally'}, "
             f"backend {result['backend']}): {result['outcome']}"]
    lines += [f"  - {s.get('description') if isinstance(s, dict) else s}" for s in result["steps"]]
    lines += [f"  rejected: {p.get('message') if isinstance(p, dict) else p}" for p in result["errors"]]
    lines += [f"  boot: {note}" for note in (result.get("boot") or {}).get("notes") or []]
    return "\n".join(map(escape_controls, lines))


def run(args: argparse.Namespace) -> int:
    from iped.commands.output import show

    result = _from_daemon(args)
    if result is None:
        result = _local(args)
    show(args, result, render)
    return outcome_exit(result["outcome"])
