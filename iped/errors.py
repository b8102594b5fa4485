"""The one failure a person can act on: :class:`UserError`, printed by ``iped.cli.main``.

It sits below every floor so that the daemon's wiring (:mod:`iped.daemon.runtime`) and the
control-socket client can raise it without importing the command line; the CLI's
:class:`iped.commands.CliError` is the same error raised by a verb.
"""

from __future__ import annotations

#: the exit codes a lower floor's UserError may carry besides 1: the values of
#: iped.commands.ExitCode.USAGE and .UNREACHABLE (tests/test_cli.py holds them equal)
USAGE = 2  # the command line named something unusable
UNREACHABLE = 3  # no daemon answers on the control socket


class UserError(Exception):
    """A user-facing failure: printed as ``iped: error: MESSAGE[ (hint: HINT)]``, one such line per
    line of MESSAGE (an invalid configuration has one problem per line); ``code`` is the exit
    code (1: the operation failed, unless the raiser documents another, as the client's 3)."""

    def __init__(self, message: str, *, hint: str | None = None, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} (hint: {self.hint})"
