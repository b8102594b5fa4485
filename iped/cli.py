"""The ``iped`` command line: one verb table, lazy verb modules, exit codes from one place.

``main()`` returns an exit code and never raises, so tests call it directly (osbuild's
``osbuild_cli()``, mkosi's ``uncaught_exception_handler``):

* the codes of :class:`iped.commands.ExitCode`: 0 success; 1 failed operation or invalid input;
  2 usage error; 3 daemon unreachable; 4 kernel error mid-apply; 9 nothing to change;
  130 interrupted;
* every error goes through :class:`iped.errors.UserError` (verbs call ``die()`` or raise
  :class:`iped.commands.CliError`; the daemon's wiring and client raise it too) and is printed
  here, ``iped: error: ...`` on stderr; ``--debug`` adds the traceback.

Only the selected verb's module is imported (``iped/commands/<verb>.py``), and only after the
command line names it: the table below carries each verb's help text, so ``iped --help`` and
``iped status`` never import cryptography, pydantic or the emulator, and a verb whose module is
missing or broken fails alone, with a clear message.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import os
import re
import sys
from types import ModuleType

from iped import __version__
from iped.commands import CliError, ExitCode
from iped.errors import UserError

# typing costs milliseconds at start-up and is only needed by the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


class Verb(enum.StrEnum):
    """Every ``iped`` verb; the value is both the command word and the module name."""

    validate = enum.auto()
    sign = enum.auto()
    daemon = enum.auto()
    reload = enum.auto()
    status = enum.auto()
    plan = enum.auto()
    apply = enum.auto()
    rollback = enum.auto()
    audit = enum.auto()
    explain = enum.auto()
    survey = enum.auto()
    suggest = enum.auto()
    shadow = enum.auto()
    check_config = "check-config"
    boot_check = "boot-check"

    @property
    def help(self) -> str:
        return _VERB_HELP[self]

    @property
    def module(self) -> str:
        return f"iped.commands.{self.value.replace('-', '_')}"


_VERB_HELP: dict[Verb, str] = {
    Verb.validate: "check policy files (plain or signed) exactly as the kernel would parse them",
    Verb.sign: "validate a policy and sign it into the DER PKCS#7 blob the kernel loads",
    Verb.daemon: "run the daemon: keep the kernel's IPE policies in the declared state",
    Verb.reload: "ask the running daemon to re-read its configuration and policies",
    Verb.status: "show the kernel's (or emulator's) IPE state and the daemon's view of it",
    Verb.plan: "show what apply would change, without changing anything",
    Verb.apply: "load, update and activate policies to reach the declared state",
    Verb.rollback: "roll forward to the previous content, re-signed with a higher version",
    Verb.audit: "follow or search IPE audit records",
    Verb.explain: "explain an IPE audit record or decision: which rule matched and why",
    Verb.survey: "go/no-go: what that ran would a policy deny once enforced (from audit records)",
    Verb.suggest: "rules that allow what a policy would deny, from the files' IPE properties",
    Verb.shadow: "without IPE: evaluate real executions (fanotify, notification only) and log them as IPE would",
    Verb.check_config: "check an iped.toml with the daemon's rules, and that its key files are readable",
    Verb.boot_check: "at boot (iped-boot.service): record the policy PID 1 loaded; fail closed when asked",
}


#: a relative time as ``--since`` takes it (``-7d``, ``-10m``, ``-2h``, ``-30s``): a value, never an option
_RELATIVE_TIME = re.compile(r"-\d+[smhd]")


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter without ``import shutil`` (and the bz2/lzma it pulls: a fifth of
    ``iped status``'s own start-up): ``add_argument`` makes one to check every option, though
    only ``--help`` prints. The width as ``shutil.get_terminal_size`` gives it."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:  # fmt: skip
        if width is None:
            try:
                columns = int(os.environ.get("COLUMNS", "0"))
            except ValueError:
                columns = 0
            if columns <= 0:
                try:
                    columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
                except (AttributeError, ValueError, OSError):
                    columns = 0
            width = (columns if columns > 0 else 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 through :class:`CliError`, and
    ``--since -7d`` (the documented form) reads ``-7d`` as the option's value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise CliError(_with_suggestion(message), hint=f"see '{self.prog} --help'", code=ExitCode.USAGE)

    def _parse_optional(self, arg_string: str) -> Any:
        # argparse takes every "-x..." for an option unless it looks like a negative number;
        # no iped option is spelt like a relative time, so one is always an argument
        if _RELATIVE_TIME.fullmatch(arg_string):
            return None
        return super()._parse_optional(arg_string)


def _with_suggestion(message: str) -> str:
    """argparse's "invalid choice: 'stauts' (choose from ...)" with the nearest choice named
    (a mistyped verb, or a value of an option with choices); other messages unchanged."""
    import re

    m = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)$", message)
    if m is None:
        return message
    from iped.didyoumean import did_you_mean

    # the choices are quoted up to Python 3.12, bare from 3.12.8/3.13.1 on
    hint = did_you_mean(m.group(1), (c.strip("'") for c in m.group(2).split(", ")))
    return message[: m.end(1) + 1] + hint + message[m.end(1) + 1 :] if hint else message


def _selected_verb(argv: list[str]) -> Verb | None:
    """The verb word: the first argument that is not an option (global options take no value)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            try:
                return Verb(arg)
            except ValueError:
                return None
    return None


def load_verb(verb: Verb) -> ModuleType:
    """Import ``iped.commands.<verb>``; a missing or broken module is a one-line error."""
    try:
        module = importlib.import_module(verb.module)
    except ModuleNotFoundError as e:
        if e.name == verb.module:
            raise CliError(f"'{verb}' is not available in this build (module {verb.module} is missing)") from e
        raise CliError(f"'{verb}' cannot be loaded: {e}") from e
    except Exception as e:
        raise CliError(f"'{verb}' cannot be loaded: {type(e).__name__}: {e}") from e
    for attr in ("add_arguments", "run"):
        if not callable(getattr(module, attr, None)):
            raise CliError(f"'{verb}' cannot be loaded: {verb.module} has no {attr}()")
    return module


def build_parser(selected: Verb | None = None, module: ModuleType | None = None) -> argparse.ArgumentParser:
    """The whole parser; only the selected verb's arguments are added (by its module)."""
    parser = _Parser(
        prog="iped",
        description="Userspace daemon and tools for Linux IPE (Integrity Policy Enforcement).",
    )
    parser.add_argument("--debug", action="store_true", help="show debug logging and tracebacks")
    parser.add_argument("--version", action="version", version=f"iped {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser)
    # With a verb selected, its subparser is the only one built: every add_parser() costs
    # gettext look-ups on disk, and `iped status` must start nearly as fast as Python does.
    for verb in Verb if selected is None else (selected,):
        vp = sub.add_parser(verb.value, help=verb.help, description=verb.help)
        if verb is selected and module is not None:
            vp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            module.add_arguments(vp)
    return parser


def _report(message: str) -> None:
    from iped.textsafe import escape_controls

    for line in message.splitlines() or [""]:  # (names and paths in it: escaped, never terminal input)
        print(f"iped: error: {escape_controls(line)}", file=sys.stderr, flush=True)


def _os_error_message(e: OSError) -> str:
    from iped.errnos import errno_name

    where = f"{os.fsdecode(e.filename)}: " if e.filename is not None else ""
    name = errno_name(e.errno) if e.errno is not None else type(e).__name__
    return f"{where}{name}: {e.strerror or e}"


def _run(argv: list[str]) -> int:
    selected = _selected_verb(argv)
    module = load_verb(selected) if selected is not None else None
    args = build_parser(selected, module).parse_args(argv)
    if getattr(module, "LOGS", True) or args.debug:
        # here, not at the top, and not for a verb that never logs (LOGS = False: `iped status`,
        # where logging and what it imports were a third of the start-up Python does not pay;
        # `iped daemon`, which reports through its own reporter) unless --debug asks for it
        import logging

        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.WARNING,
            format="iped: %(levelname)s: %(message)s",
            stream=sys.stderr,
        )
    assert module is not None  # parse_args() requires a verb and only known verbs parse
    code = module.run(args)
    sys.stdout.flush()
    return int(code)


def main(argv: list[str] | None = None) -> int:
    """Run ``iped`` with ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        return _run(args)
    except UserError as e:  # CliError, and what the daemon's wiring and client raise
        if debug and e.code != ExitCode.USAGE:
            import traceback

            traceback.print_exc()
        _report(str(e))
        return int(e.code)
    except SystemExit as e:  # --help, --version, or a verb calling sys.exit()
        if e.code is None:
            return ExitCode.OK
        if isinstance(e.code, int):
            return e.code
        _report(str(e.code))
        return ExitCode.FAILED
    except KeyboardInterrupt:
        _report("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (iped validate ... | head): nothing more to say to anyone.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.FAILED
    except Exception as e:
        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(e, OSError):
            _report(_os_error_message(e))
        else:
            _report(f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)")
        return ExitCode.FAILED
