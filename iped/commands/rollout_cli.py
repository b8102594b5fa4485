"""What ``iped survey``, ``iped suggest`` share on the command line: audit input, facts, policy.

Errors go through :func:`iped.commands.die` with the exit code the verb documents (2 for usage).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from iped.commands import ExitCode, die
from iped.errors import UserError

if TYPE_CHECKING:
    from iped.rollout.facts import Resolver
    from iped.rollout.fleet import HostSource
    from iped.rollout.observe import Observations
    from iped.rollout.policies import PolicySource


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", default="journal", metavar="journal|netlink|auto|FILE",
        help="audit records to read (default: the journal's history; FILE: auditd log, ausearch --raw, "
        "kmsg lines, journalctl -o export, or a shadow-mode log)",
    )  # fmt: skip
    parser.add_argument("--since", metavar="TIME", help="only records from TIME: UNIX seconds, ISO 8601, -2h, today")
    parser.add_argument(
        "--facts", metavar="FILE",
        help="file properties recorded elsewhere (JSON, see docs/rollout.md) instead of reading this host's files",
    )  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="iped.toml declaring the active policy")
    parser.add_argument("--json", action="store_true", help="machine-readable output (docs/rollout.md)")
    parser.add_argument(
        "--collection", metavar="DIR",
        help="a fleet's records as a collector keeps them, one host per journal file (systemd-journal-remote) "
        "or audit log, instead of --source (docs/rollout.md)",
    )  # fmt: skip


def fleet_hosts(args: argparse.Namespace) -> list[HostSource]:
    """The hosts of ``--collection``; an unreadable or empty collection is exit 1."""
    from pathlib import Path

    from iped.rollout.fleet import hosts_in

    try:
        hosts = hosts_in(Path(args.collection))
    except OSError as e:
        die(f"--collection {args.collection}: {e.strerror}")
    if not hosts:
        die(f"--collection {args.collection}: no host's journal files or audit logs in it")
    return hosts


def since_of(args: argparse.Namespace) -> float | None:
    from iped.commands.audit import parse_since

    if not args.since:
        return None
    try:
        return parse_since(args.since)
    except ValueError:
        die(f"--since: cannot read time {args.since!r}", code=ExitCode.USAGE)
    raise AssertionError  # pragma: no cover - die() does not return


def read_observations(args: argparse.Namespace) -> Observations:
    """The distinct accesses of ``--source`` since ``--since``; an unreadable source is exit 1."""
    from iped.commands.audit import parse_since
    from iped.rollout.observe import observe

    since = None
    if args.since:
        try:
            since = parse_since(args.since)
        except ValueError:
            die(f"--since: cannot read time {args.since!r}", code=ExitCode.USAGE)
    try:
        observations = observe(args.source, since=since)
    except (OSError, ImportError) as e:
        message, hint = _source_error(args.source, e)
        die(message, hint=hint)
    if observations.unproven.lines:
        say(observations.unproven.note(args.source))
    if not observations.records:
        say(f"no IPE access record in {args.source}: was a policy active, with success_audit=1 to see allowed ones?")
    return observations


def _source_error(source: str, e: OSError | ImportError) -> tuple[str, str | None]:
    """The message and hint for an audit source that cannot be read."""
    if isinstance(e, ImportError):
        return f"cannot open the {source} audit source: {e}", "install python3-systemd"
    if isinstance(e, PermissionError) and source in ("netlink", "auto"):
        return f"cannot open the {source} audit source: EPERM", "netlink needs CAP_AUDIT_READ; try journal"
    return f"{e.filename or source}: {e.strerror}", None


def resolver(args: argparse.Namespace) -> Resolver:
    from iped.rollout.facts import LiveResolver, load_facts

    if args.facts is None:
        return LiveResolver()
    try:
        return load_facts(args.facts)
    except OSError as e:
        die(f"--facts {args.facts}: {e.strerror}", code=ExitCode.USAGE)
    except ValueError as e:
        die(f"--facts {e}", code=ExitCode.USAGE)


def declared_policy(args: argparse.Namespace) -> PolicySource | None:
    """The ``[policies] active`` policy of ``--config`` (default /etc/iped/iped.toml), or None.

    A configuration that does not exist is None when ``--config`` was not given (no iped here
    yet); a broken one is a usage error with every problem printed.
    """
    from iped.daemon.runtime import load_for_command
    from iped.paths import DEFAULT_CONFIG
    from iped.rollout.policies import PolicySourceError, declared_active

    if args.config is None and not os.path.exists(DEFAULT_CONFIG):
        return None
    try:
        settings = load_for_command(args.config)
    except UserError as e:  # one problem per line, each FILE:LINE: every error line stands alone
        die("\n".join(f"cannot read the configuration: {problem}" for problem in str(e).splitlines()),
            code=ExitCode.USAGE)
    try:
        return declared_active(settings)
    except PolicySourceError as e:
        die(str(e), code=ExitCode.USAGE)


def policy_file(path: str) -> PolicySource:
    from iped.rollout.policies import PolicySourceError, read_policy_file

    try:
        return read_policy_file(path)
    except PolicySourceError as e:
        die(str(e), code=ExitCode.USAGE)
    raise AssertionError  # pragma: no cover - die() does not return


def say(message: str) -> None:
    """Progress and notes for people: stderr, so stdout stays the report (or the policy); paths
    and comms in it escaped (:func:`iped.textsafe.escape_controls`)."""
    from iped.textsafe import escape_controls

    print(f"iped: {escape_controls(message)}", file=sys.stderr, flush=True)
