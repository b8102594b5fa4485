"""``iped survey [--policy FILE] [--source S] [--since T] [--json]``: what would this policy break?

The go/no-go list before enforcing: every IPE access recorded during a permissive period (or
by ``iped shadow``) is evaluated against the policy — ``--policy FILE`` (plain or signed), else
the configuration's declared active policy — with the emulator and each file's properties on
this host. Output: the would-be denials grouped by program and by rule, with counts, and what
could not be evaluated because its file is gone or was replaced. ``--json``: the same as one
object (docs/rollout.md).

Exit 0: nothing that ran would be denied; 1: something would, or cannot be told (its file is
gone, or no access record was observed at all); 2: usage (no policy, bad policy, bad --since,
broken --facts or configuration).
"""

from __future__ import annotations

import argparse
import json

from iped.commands import ExitCode, die
from iped.commands import rollout_cli as cmdline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", metavar="FILE", help="policy to survey (default: the declared active policy)")
    cmdline.add_input_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from iped.rollout import engine
    from iped.rollout.survey import survey

    source = cmdline.policy_file(args.policy) if args.policy else cmdline.declared_policy(args)
    if source is None:
        die("no policy to survey", hint="give --policy FILE or declare [policies] active in iped.toml",
            code=ExitCode.USAGE)  # fmt: skip
    if args.collection:
        return _fleet(args, source.text, source.origin)
    observations = cmdline.read_observations(args)
    try:
        report = survey(source.text, source.origin, observations, cmdline.resolver(args), observations.records)
    except engine.PolicyError as e:
        die(f"{source.origin}: {e}", hint="check it with 'iped validate'", code=ExitCode.USAGE)
    if args.json:
        # (lines of --source not read: not proven to be the kernel's; docs/audit.md)
        print(json.dumps({**report.as_dict(), "unproven_lines": observations.unproven.lines}, ensure_ascii=False))
    else:
        from iped.textsafe import escape_controls

        print("\n".join(map(escape_controls, report.lines())))
    return ExitCode.FAILED if report.breaks else ExitCode.OK


def _fleet(args: argparse.Namespace, text: bytes, origin: str) -> int:
    """``--collection DIR``: every host's records against the policy, per host and for the fleet."""
    from iped.rollout import engine
    from iped.rollout.fleet import survey_fleet

    hosts = cmdline.fleet_hosts(args)
    try:
        report = survey_fleet(text, origin, hosts, cmdline.resolver(args), cmdline.since_of(args))
    except engine.PolicyError as e:
        die(f"{origin}: {e}", hint="check it with 'iped validate'", code=ExitCode.USAGE)
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        print("\n".join(report.lines()))
    return ExitCode.FAILED if report.breaks else ExitCode.OK
