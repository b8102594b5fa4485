"""``iped apply [--config FILE] [--json]``: one reconcile without a daemon (same plan, same exit codes).

Exit codes as ``iped reload``: 0 applied, 1 rejected, 4 kernel error mid-apply, 9 unchanged.
With the emulator backend the state lives only in this process (useful for CI dry runs).
"""

from __future__ import annotations

import argparse

from iped.commands import outcome_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands import add_deprecated_alias

    add_deprecated_alias(parser, "--once", "'iped apply' alone (it always reconciles once)", takes_value=False)
    parser.add_argument("--config", metavar="FILE", help="configuration (default /etc/iped/iped.toml)")
    parser.add_argument("--json", action="store_true", help="print the plan record as JSON")


def run(args: argparse.Namespace) -> int:
    from iped.commands.output import show
    from iped.commands.remote import render_record
    from iped.daemon import runtime, service
    from iped.daemon.log import StderrReporter

    rec = runtime.make_reconciler(runtime.load_for_command(args.config), StderrReporter())
    record = service.reload(rec, "apply --once").as_dict()
    show(args, record, render_record)
    return outcome_exit(record["outcome"])
