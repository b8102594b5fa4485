"""``iped rollback [--dry-run] [--no-daemon] [--json]``: roll forward to the previous content of the active policy.

Writes the previous content with a bumped version to ``state_dir/rolled-forward/`` (``*.pol``
text, or ``*.p7s`` re-signed with the local key), then reconciles (through the daemon when it
runs, else here with the same :func:`iped.daemon.service.rollback`). ``--dry-run`` says what
would be written and writes nothing.
Exit codes as ``iped reload``; 1 also when there is nothing to roll back to or no key. With
``--json`` an error is also a JSON object on stdout, shaped as the control socket's error reply:
``{"ok": false, "errno": N|null, "errno_name": "E…"|null, "error": "…"}``.
"""

from __future__ import annotations

import argparse
from typing import Any

from iped.commands import CliError, outcome_exit
from iped.errors import UserError
from iped.outcome import Outcome


class RollbackRefusedError(CliError):
    """The rollback itself was refused (nothing to roll back to, no key, ...): errno and why."""

    def __init__(self, errno_: int | None, errno_name: str | None, error: str) -> None:
        from iped.textsafe import escape_controls

        super().__init__(escape_controls(f"{errno_name}: {error}" if errno_name else error))
        self.errno = errno_
        self.errno_name = errno_name
        self.error = error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands.remote import add_socket_arguments

    add_socket_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="show what would be written, change nothing")
    parser.add_argument("--no-daemon", action="store_true",
                        help="roll back here, without asking a daemon (without it: only when none listens)")


def _local(args: argparse.Namespace) -> dict[str, Any]:
    from iped.daemon import runtime, service
    from iped.daemon.log import StderrReporter
    from iped.daemon.rollback import RollbackError
    from iped.errnos import errno_name

    rec = runtime.make_reconciler(runtime.load_for_command(args.config), StderrReporter())
    try:
        return service.rollback(rec, bool(args.dry_run)).as_dict()
    except RollbackError as e:
        raise RollbackRefusedError(e.errno, errno_name(e.errno), e.message) from None


def _from_daemon(args: argparse.Namespace) -> dict[str, Any] | None:
    """The daemon's result; None (roll back here) only under the one no-daemon rule
    (:func:`iped.daemon.client.ask_unless_no_daemon`); RollbackRefusedError for its refusal."""
    from iped.commands.remote import ask_unless_no_daemon, checked_result

    asked = ask_unless_no_daemon(args, "rollback", 120, dry_run=bool(args.dry_run))
    if asked is None:
        return None
    path, reply = asked
    if not reply["ok"]:
        raise RollbackRefusedError(reply.get("errno"), reply.get("errno_name"), str(reply.get("error")))
    result: dict[str, Any] = checked_result(path, "rollback", reply.get("result"))
    return result


def _result(args: argparse.Namespace) -> dict[str, Any]:
    from_daemon = _from_daemon(args)
    return _local(args) if from_daemon is None else from_daemon


def run(args: argparse.Namespace) -> int:
    from iped.commands.output import print_json, show

    try:
        res = _result(args)
    except UserError as e:
        if args.json:  # a caller parsing stdout gets an answer, not an empty document
            failed = e if isinstance(e, RollbackRefusedError) else RollbackRefusedError(None, None, str(e))
            print_json({"ok": False, "errno": failed.errno, "errno_name": failed.errno_name, "error": failed.error})
        raise
    show(args, res, render)
    return outcome_exit(res["record"].get("outcome"))


def render(res: dict[str, Any]) -> str:
    """The rollback for people: what is (or would be) written where, then the reconcile's record."""
    from iped.commands.remote import render_record
    from iped.textsafe import escape_controls

    what = escape_controls(f"rollback {res['name']}: {res['from_version']} -> {res['new_version']} with the "
                           f"content of sha256:{res['content_digest'][:16]}")
    target = escape_controls(res["target"])
    if res["record"].get("outcome") == Outcome.DRY_RUN:
        return f"{what} would be written to {target} (--dry-run: nothing written, nothing applied)"
    return f"{what}, written to {target}\n{render_record(res['record'])}"
