"""The verbs of the ``iped`` command line, one module per verb, and what they share.

Each verb module ``iped/commands/<verb>.py`` exposes::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

and keeps heavy imports (pydantic, cryptography, the emulator, systemd, pyudev) inside
``run()``: the CLI imports a verb module only when that verb was asked for, and ``iped status``
must stay cheap. The verb table itself lives in :mod:`iped.cli`.

What the verbs share lives here: :class:`ExitCode` (every exit code), :func:`outcome_exit`, and
the one error path, :class:`CliError`/:func:`die` (``iped.cli.main`` prints it). Verbs that talk
to the daemon go through :func:`iped.commands.remote.ask`; without a daemon they call the same
:mod:`iped.daemon.service` functions the daemon does.

This module must stay import-light: it is imported on every ``iped`` invocation.
"""

from __future__ import annotations

import enum

from iped.errors import UserError
from iped.outcome import Outcome

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


class ExitCode(enum.IntEnum):
    """The only exit codes ``iped`` uses (mapped in one place, :func:`iped.cli.main`)."""

    OK = 0
    FAILED = 1  # failed operation or invalid input (validate: some file is invalid); plan rejected
    USAGE = 2  # bad command line
    UNREACHABLE = 3  # no daemon answers on the control socket
    APPLY_FAILED = 4  # the kernel refused a write mid-apply
    UNCHANGED = 9  # reload/apply: nothing to change
    INTERRUPTED = 130  # SIGINT


#: what a reconcile's outcome means as the exit code of ``reload``, ``apply --once``,
#: ``rollback`` (``dry-run``) and ``plan`` (``would-apply``): the README's exit-code table
OUTCOME_EXIT: dict[str, ExitCode] = {
    Outcome.APPLIED: ExitCode.OK, Outcome.WOULD_APPLY: ExitCode.OK, Outcome.DRY_RUN: ExitCode.OK,
    Outcome.REJECTED: ExitCode.FAILED, Outcome.FAILED: ExitCode.APPLY_FAILED, Outcome.UNCHANGED: ExitCode.UNCHANGED,
}


def outcome_exit(outcome: object) -> ExitCode:
    """The exit code of a reconcile's ``outcome``; anything unknown is a failure (1)."""
    return OUTCOME_EXIT.get(str(outcome), ExitCode.FAILED)


class CliError(UserError):
    """A verb's user-facing failure (:class:`iped.errors.UserError`, exit code 1 unless ``code``
    says otherwise); ``main()`` prints it."""

    def __init__(self, message: str, *, hint: str | None = None, code: int = ExitCode.FAILED) -> None:
        super().__init__(message, hint=hint, code=code)


def die(message: str, *, hint: str | None = None, code: int = ExitCode.FAILED) -> NoReturn:
    """Stop the verb with a one-line error; ``main()`` prints it and returns ``code``."""
    raise CliError(message, hint=hint, code=code)


def warn(message: str) -> None:
    """One ``iped: warning: ...`` line on stderr (the run goes on)."""
    import sys

    print(f"iped: warning: {message}", file=sys.stderr, flush=True)


def add_deprecated_alias(parser: Any, old: str, new: str, *, dest: str | None = None, takes_value: bool = True,
                         const: object = True) -> None:
    """Accept ``old``, an earlier spelling of ``new`` (README "Command-line conventions"): it sets
    ``dest`` as ``new`` would, is hidden from ``--help`` (and the man pages generated from it),
    and says on stderr ``iped: warning: OLD is deprecated, use NEW``.

    ``old`` an option: ``dest`` None for a spelling that sets nothing (``apply --once``, now what
    ``apply`` always does). ``old`` a positional (``check-config FILE``): it goes to ``dest`` (its
    own, so the verb can refuse it beside ``new``), None when not given."""
    import argparse

    said = old if old.startswith("-") else f"{parser.prog.rsplit(' ', 1)[-1]} {old}"  # check-config FILE

    class _Deprecated(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            if values is None:  # an optional positional that was not given
                return
            warn(f"{said} is deprecated, use {new}")
            if self.dest != argparse.SUPPRESS:
                setattr(namespace, self.dest, values if takes_value else const)

    if old.startswith("-"):
        parser.add_argument(old, action=_Deprecated, dest=dest or argparse.SUPPRESS, nargs=None if takes_value else 0,
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    else:
        assert dest is not None, "a positional alias needs its own dest"
        parser.add_argument(dest, action=_Deprecated, nargs="?", default=None, metavar=old, help=argparse.SUPPRESS)
