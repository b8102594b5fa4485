"""``iped suggest [--base FILE] [--source S] [--since T] [--json]``: rules for what would be denied.

IPE's audit2allow. The denials (or, in permissive mode, the would-be denials: ``enforcing=0``)
of any audit source, re-evaluated against the base policy — ``--base FILE``, else the kernel's
active policy, else the configuration's declared active one, else the starter policy
(``--starter`` prints it) — become rules from each file's IPE properties on this host: one
``boot_verified=TRUE`` for the initramfs, one ``dmverity_roothash=`` per dm-verity volume, one
``fsverity_digest=`` per fs-verity file. Accesses nothing can allow are flagged, never allowed.

Output: the base policy's text with the new rules (each under a comment naming what needed it)
and a higher policy_version, on stdout; a summary and the replay verification on stderr.
``--json``: the same as one object (docs/rollout.md).

Exit 0: the suggestion allows every observed access; 1: some stay denied (the flagged ones, or
a verification failure); 2: usage (bad base, --since, --facts or configuration).
"""

from __future__ import annotations

import argparse
import json
import sys

from iped.commands import ExitCode, die
from iped.commands import rollout_cli as cmdline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands import add_deprecated_alias

    parser.add_argument("--policy", metavar="FILE", help="policy to extend (default: the active policy)")
    add_deprecated_alias(parser, "--base", "--policy", dest="policy")
    parser.add_argument("--name", default="site", help="policy_name of the starter policy (default: site)")
    parser.add_argument("--starter", action="store_true", help="print the starter policy for a permissive period")
    cmdline.add_input_arguments(parser)


def _base(args: argparse.Namespace) -> tuple[bytes, str]:
    from iped.rollout.policies import kernel_active, starter_policy

    if args.policy:
        source = cmdline.policy_file(args.policy)
        return source.text, source.origin
    for found in (kernel_active(), cmdline.declared_policy(args)):
        if found is not None:
            return found.text, found.origin
    try:
        return starter_policy(args.name), f"starter policy {args.name}"
    except ValueError as e:
        die(f"--name: {e}", code=ExitCode.USAGE)
    raise AssertionError  # pragma: no cover - die() does not return


def _starter_document(text: bytes) -> dict[str, object]:
    """``--starter --json``: the starter policy as the ``policy`` object of a suggestion."""
    from iped.rollout import engine
    from iped.rollout.suggest import SCHEMA_VERSION

    parsed = engine.parse_policy(text)
    return {"schema_version": SCHEMA_VERSION, "starter": True,
            "policy": {"name": parsed.name.decode(), "version": str(parsed.version), "text": text.decode()}}


def run(args: argparse.Namespace) -> int:
    from iped.rollout import engine
    from iped.rollout.policies import starter_policy
    from iped.rollout.suggest import suggest

    if args.starter:
        try:
            starter = starter_policy(args.name)
        except ValueError as e:
            die(f"--name: {e}", code=ExitCode.USAGE)
        if args.json:
            print(json.dumps(_starter_document(starter), ensure_ascii=False))
        else:
            sys.stdout.write(starter.decode())
        return ExitCode.OK
    text, origin = _base(args)
    if args.collection:  # one policy for the whole wave: every host's accesses
        from iped.rollout.fleet import fleet_observations

        observations = fleet_observations(cmdline.fleet_hosts(args), cmdline.since_of(args))
    else:
        observations = cmdline.read_observations(args)
    try:
        result = suggest(text, origin, observations, cmdline.resolver(args), observations.records)
    except engine.PolicyError as e:
        die(f"{origin}: {e}", hint="check it with 'iped validate'", code=ExitCode.USAGE)
    except OverflowError as e:
        die(f"{origin}: {e}")
    if args.json:
        # (lines of --source not read: not proven to be the kernel's; docs/audit.md)
        print(json.dumps({**result.as_dict(), "unproven_lines": observations.unproven.lines}, ensure_ascii=False))
    else:
        sys.stdout.write(result.text.decode("utf-8", "surrogateescape"))
        for line in result.summary():
            cmdline.say(line)
    if result.replay.unexpected:
        die(f"verification failed: {len(result.replay.unexpected)} accesses are still denied but not flagged")
    return ExitCode.OK if result.complete else ExitCode.FAILED
