"""The manual pages and shell completions, generated from the one declaration of each.

* ``iped(8)``: every verb, its synopsis and options from the argparse table (:mod:`iped.cli` and
  each verb's ``add_arguments``); EXIT STATUS from :class:`ExitCode` and :data:`EXIT_MEANINGS`;
  FILES from the settings' defaults.
* ``iped.toml(5)``: every key of :mod:`iped.settings` with its TOML type, default, limits
  and the meaning written in its section's docstring.
* bash and zsh completion from the same argparse table, by shtab; policy files in the drop-in
  directory are offered where an option takes a policy.

Both pages come from a small roff writer here rather than argparse-manpage: iped.toml(5) has no
parser to give it, and for iped(8) argparse-manpage lists the verbs under "POSITIONAL ARGUMENTS"
and refills argparse's pre-wrapped usage lines (packaging/README.md). The outputs are committed
under ``packaging/generated/`` and shipped by both packages (no generator at build time, no build
dependency); ``tests/project/test_manual.py`` regenerates them and fails on any difference, so an option
or key changed without ``python -m iped.docgen`` fails CI. shtab is imported inside
:func:`completion` only (a test extra, not a runtime dependency); nothing at run time imports
this module.

    .venv/bin/python -m iped.docgen [DIR]   # (re)write DIR (default: packaging/generated/)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import types
from enum import StrEnum
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from iped import __version__
from iped.cli import Verb, build_parser, load_verb
from iped.commands import EXIT_MEANINGS, ExitCode
from iped.daemon.readiness import EXIT_START_REFUSED

#: the files written by :func:`write_all`, relative to the output directory
OUTPUTS = ("iped.8", "iped.toml.5", "iped.bash", "_iped")

#: shell code that lists policy files (*.pol, *.p7s) and directories, and, for a bare word, the
#: policies in the default drop-in directory (one glob each: cheap)
_BASH_POLICIES = """
_shtab_iped_policy_files() {
  compgen -d -- "$1"
  compgen -f -X '!*.pol' -- "$1"
  compgen -f -X '!*.p7s' -- "$1"
  case "$1" in */*) ;; *) compgen -G "/etc/iped/policies.d/$1*.pol"; compgen -G "/etc/iped/policies.d/$1*.p7s" ;; esac
}
"""
# a {...} action is shell code to zsh's _arguments: both lists are offered
_ZSH_POLICIES = "{_files -g '*.(pol|p7s)'; _files -W /etc/iped/policies.d -g '*.(pol|p7s)'}"
_POLICY_COMPLETE = {"bash": "_shtab_iped_policy_files", "zsh": _ZSH_POLICIES}


def _checkout() -> Path:
    return Path(__file__).resolve().parent.parent


def full_parser() -> argparse.ArgumentParser:
    """The whole command line, every verb with its arguments (``iped`` itself builds only the
    selected verb's, to start fast)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for verb in Verb:
        load_verb(verb).add_arguments(sub.choices[verb.value])
    return parser


def _release_date() -> str:
    """The date of the newest packaging/debian/changelog entry: the manual's date, reproducible."""
    import email.utils

    text = (_checkout() / "packaging" / "debian" / "changelog").read_text(encoding="utf-8")
    m = re.search(r"^ -- .*?  (.+)$", text, re.MULTILINE)
    if m is None:
        raise ValueError("packaging/debian/changelog has no trailer line")
    return email.utils.parsedate_to_datetime(m.group(1)).strftime("%Y-%m-%d")


def _roff(text: str) -> str:
    """Plain text as roff body text: backslashes and hyphens escaped, no line starting with a
    control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _rst_literals(text: str) -> str:
    """``literal`` (the docstrings' markup) as bold roff."""
    return re.sub(r"``(.+?)``", lambda m: f"\\fB{m.group(1)}\\fR", text)


def _files() -> list[tuple[str, str]]:
    from iped.paths import DEFAULT_CONFIG
    from iped.settings import DaemonSettings, PolicySettings

    daemon, policies = DaemonSettings(), PolicySettings()
    return [
        (DEFAULT_CONFIG, "the configuration (iped.toml(5)); another with --config"),
        (str(policies.dir), "the drop-in directory of policies: *.p7s signed, *.pol plain text"),
        (str(daemon.state_dir), "plan records, the rollback chain, deployed texts, rolled-forward/ policies"),
        (str(daemon.control_socket), "the daemon's control socket (status, reload, plan, rollback)"),
        ("/sys/kernel/security/ipe", "the kernel's IPE interface (securityfs), written by the daemon"),
        ("/usr/lib/systemd/system/iped.service", "the systemd unit (Type=notify; ExecReload= runs iped reload)"),
        ("/usr/share/doc/iped/", "README.md and the references in docs/ that error messages name"),
    ]


def _metavar(action: argparse.Action) -> str:
    if action.choices is not None and not isinstance(action.choices, dict):
        return "|".join(str(c) for c in action.choices)
    if isinstance(action.metavar, str):
        return action.metavar
    return action.dest.upper()


def _usage_item(action: argparse.Action) -> str:
    """One option or operand as the synopsis writes it: bold words, italic values."""
    if not action.option_strings:
        word = f"\\fI{_roff(_metavar(action))}\\fR"
        return {"+": f"{word} ...", "*": f"[{word} ...]", "?": f"[{word}]"}.get(str(action.nargs), word)
    flag = f"\\fB{_roff(action.option_strings[-1])}\\fR"
    item = flag if action.nargs == 0 else f"{flag} \\fI{_roff(_metavar(action))}\\fR"
    if action.required:
        return item
    return f"[{item}]" + (" ..." if isinstance(action, argparse._AppendAction) else "")


def _shown(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def _option_entry(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{_roff(o)}\\fR" + ("" if action.nargs == 0 else f" \\fI{_roff(_metavar(action))}\\fR")
                      for o in action.option_strings) or f"\\fI{_roff(_metavar(action))}\\fR"
    help_text = str(action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
    return f".TP\n{names}\n{_roff(help_text)}"


def iped_8() -> str:
    """``iped(8)``: every verb with its synopsis and options, the global options, exit status,
    files."""
    parser = full_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = [f'.TH IPED 8 "{_release_date()}" "iped {__version__}" "System Administration"', ".ad l",
           ".SH NAME", "iped \\- userspace daemon and tools for Linux IPE (Integrity Policy Enforcement)",
           ".SH SYNOPSIS", ".B iped", "[\\fB\\-\\-debug\\fR] \\fIVERB\\fR [\\fIOPTIONS\\fR]", ".br",
           ".B iped", "\\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR",
           ".SH DESCRIPTION", _roff(str(parser.description)),
           _roff("Every verb also takes --help. Every error is one line on stderr, naming the file and line, "
                 "the errno and what it means for IPE; --debug adds logging and tracebacks."),
           ".SH OPTIONS"]
    out += [_option_entry(a) for a in _shown(parser) if a.option_strings]
    out.append(".SH VERBS")
    for name, verb_parser in sub.choices.items():
        actions = _shown(verb_parser)
        out += [f".SS iped {_roff(name)}", f"\\fBiped {_roff(name)}\\fR " + " ".join(_usage_item(a) for a in actions),
                ".PP", _roff(str(verb_parser.description)), ".RS"]
        out += [_option_entry(a) for a in actions]
        out.append(".RE")
    out.append(".SH EXIT STATUS")
    out += [f".TP\n.B {int(code)}\n{_roff(EXIT_MEANINGS[code])}" for code in ExitCode]
    out.append(f".TP\n.B {EXIT_START_REFUSED}\n" + _roff(
        "iped daemon only: its declared active policy was rejected, or refused by the kernel, at start "
        "(sysexits' EX_CONFIG); the kernel is left as it was and the unit does not restart on it"))
    out.append(".SH FILES")
    out += [f".TP\n.I {_roff(path)}\n{_roff(what)}" for path, what in _files()]
    out += [".SH SEE ALSO", ".BR iped.toml (5),", ".BR systemctl (1),", ".BR journalctl (1)", ".PP",
            _roff("/usr/share/doc/iped/README.md and the references in /usr/share/doc/iped/docs/.")]
    return "\n".join(out) + "\n"


def _toml_type(tp: Any) -> str:
    """A settings field's type as iped.toml spells it."""
    if tp is Path:
        return "path"
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return " | ".join(f'"{m.value}"' for m in tp)
    if tp is bool:
        return "boolean (true or false)"
    if tp is int:
        return "integer"
    if tp is str:
        return "string"
    origin, args = get_origin(tp), get_args(tp)
    if origin is tuple:
        return f"array of {_toml_type(args[0])}s"
    if origin in (Union, types.UnionType):
        return _toml_type(next(a for a in args if a is not type(None)))
    raise TypeError(f"no TOML spelling for {tp!r}")


def _toml_default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_default(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return f'"{value}"'


def _limits(metadata: Any) -> str:
    words = {"ge": "at least {}", "le": "at most {}", "min_length": "at least {} character(s)",
             "max_path_bytes": "at most {} bytes once resolved"}
    return ", ".join(words[k].format(v) for k, v in metadata.items() if k in words)


def key_meanings(cls: type) -> dict[str, str]:
    """``name: meaning`` entries of a settings class's docstring (continuation lines indented)."""
    meanings: dict[str, str] = {}
    current: str | None = None
    for line in (cls.__doc__ or "").splitlines():
        if m := re.match(r"^    (\w+): (.*)$", line):
            current = m.group(1)
            meanings[current] = m.group(2)
        elif current is not None and line.startswith("        "):
            meanings[current] += " " + line.strip()
        else:
            current = None
    return meanings


def iped_toml_5() -> str:
    """``iped.toml(5)``: every section and key, with type, default, limits and meaning."""
    from iped.config import SECTIONS

    out = [f'.TH IPED.TOML 5 "{_release_date()}" "iped {__version__}" "File Formats"', ".ad l",
           ".SH NAME", "iped.toml \\- configuration of iped, the userspace daemon for Linux IPE",
           ".SH SYNOPSIS", ".I /etc/iped/iped.toml",
           ".SH DESCRIPTION",
           _roff("TOML. Validation is strict: an unknown section or key and a value of the wrong type are "
                 "errors (a string is not a boolean), each reported as FILE:LINE: key: problem, all at once "
                 "(iped check-config FILE checks a file with the daemon's rules). Relative paths are relative "
                 "to the file's directory. [policies] changes apply on reload; [daemon] and [audit] changes "
                 "need a restart.")]
    for name, cls in SECTIONS.items():
        intro = " ".join((cls.__doc__ or "").split("\n\n")[0].split(":", 1)[1].split())
        out += [f".SH [{name}]", _rst_literals(_roff(intro[:1].upper() + intro[1:]))]
        meanings = key_meanings(cls)
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            facts = [_toml_type(hints[f.name]), f"default {_toml_default(default)}"]
            if limits := _limits(f.metadata):
                facts.append(limits)
            out += [".TP", f".B {f.name}", f"({_roff('; '.join(facts))})", ".br",
                    _rst_literals(_roff(meanings[f.name]))]
    out += [".SH EXAMPLE", _roff("/usr/share/doc/iped/examples/iped.toml, every key with its default."),
            ".SH SEE ALSO", ".BR iped (8)"]
    return "\n".join(out) + "\n"


def completion(shell: str) -> str:
    """The bash or zsh completion script of the argparse table (shtab)."""
    import shtab

    parser = full_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, verb_parser in sub.choices.items():
        for action in verb_parser._actions:
            policy = action.dest == "policy" or (name == "validate" and action.dest == "files")
            if policy:
                complete: Any = _POLICY_COMPLETE
            elif action.metavar in ("FILE", "KEY", "CERT", "PATH") or action.dest in ("source", "record"):
                complete = shtab.FILE
            elif action.metavar == "DIR":
                complete = shtab.DIRECTORY
            else:
                continue
            setattr(action, "complete", complete)  # shtab's attribute  # noqa: B010
    return str(shtab.complete(parser, shell=shell, preamble=_BASH_POLICIES if shell == "bash" else ""))


def render(name: str) -> str:
    """One of :data:`OUTPUTS`, with a fixed help width (argparse wraps at $COLUMNS)."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        if name == "iped.8":
            return iped_8()
        if name == "iped.toml.5":
            return iped_toml_5()
        return completion({"iped.bash": "bash", "_iped": "zsh"}[name])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def write_all(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        (directory / name).write_text(render(name), encoding="utf-8")


if __name__ == "__main__":
    write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else _checkout() / "packaging" / "generated")
