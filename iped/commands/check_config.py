"""``iped check-config [--config FILE] [--relative-to DIR]``: is this iped.toml one the daemon would run with?

The daemon's own rules (:func:`iped.config.parse_config`: types, ranges, unknown keys), then what
the daemon reads at each reconcile: every trust anchor, the signing key and the signing
certificate must be readable (and the certificates parse), and key and certificate come as a pair.
Each file and directory the daemon takes with authority passes the same owner/mode rule as in the
daemon (:mod:`iped.trustpath`: root or iped's user, not writable by others; the key private).

Every problem is one line on stderr, ``FILE:LINE: key: problem``; exit 0 when there is none, 1
otherwise -- so it works as Ansible's ``template: validate: iped check-config --config %s``. Ansible validates
a temporary copy in another directory: relative paths in the file are resolved against
``--relative-to`` (default: the file's own directory, as the daemon does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iped.commands import ExitCode, die

TYPE_CHECKING = False
if TYPE_CHECKING:
    from iped.config import ConfigProblem
    from iped.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iped.commands import add_deprecated_alias

    parser.add_argument("--config", metavar="FILE", help="the configuration to check (default /etc/iped/iped.toml)")
    parser.add_argument("--relative-to", metavar="DIR",
                        help="directory that relative paths in FILE are relative to (default: FILE's directory)")
    add_deprecated_alias(parser, "FILE", "--config FILE", dest="config_positional")


def _key_file_problems(settings: Settings, path: Path, source: str) -> list[ConfigProblem]:
    """What the daemon's load_signing() would fail on, at the line that names the file: the same
    reads under the same owner/mode rule (:mod:`iped.trustpath`; the key private)."""
    from iped.config import ConfigProblem, key_lines
    from iped.trustpath import error_line, read_private_key, read_trusted

    lines = key_lines(source)
    pol = settings.policies
    files: list[tuple[str, Path, bool]] = [("policies.trust_anchors", p, True) for p in pol.trust_anchors]
    if pol.signing_key is not None:
        files.append(("policies.signing_key", pol.signing_key, False))
    if pol.signing_cert is not None:
        files.append(("policies.signing_cert", pol.signing_cert, True))
    problems = []
    for key, file, is_cert in files:
        line = lines.get(tuple(key.split(".")), 1)
        try:
            data = read_trusted(file, "a certificate") if is_cert else read_private_key(file)
        except OSError as e:
            problems.append(ConfigProblem(path, line, key, f"{error_line(e)} (the daemon reads it at every "
                                                           "reconcile)"))
            continue
        if is_cert:
            from iped.pkcs7 import load_anchor

            try:
                load_anchor(data)
            except ValueError as e:
                problems.append(ConfigProblem(path, line, key, f"{file}: {e}"))
    if (pol.signing_key is None) != (pol.signing_cert is None):
        key = "policies.signing_key" if pol.signing_key is not None else "policies.signing_cert"
        problems.append(ConfigProblem(path, lines.get(tuple(key.split(".")), 1), key,
                                      "signing_key and signing_cert must be configured together"))
    return problems


def _directory_problems(settings: Settings, path: Path, source: str) -> list[ConfigProblem]:
    """The directories the daemon takes declarations and records from, or writes the fleet's
    view to, that someone other than root (or iped's user) could change. A directory that is not
    there yet is no problem here (the daemon creates the state_dir; a missing drop-in dir is
    reported at the first reconcile)."""
    from iped.config import ConfigProblem, key_lines
    from iped.trustpath import UntrustedPathError, check_path

    lines = key_lines(source)
    dirs: list[tuple[str, Path, str, bool]] = [
        ("policies.dir", settings.policies.dir, "declared policies", False),
        ("daemon.state_dir", settings.daemon.state_dir, "the state_dir", False),
        ("daemon.state_dir", settings.daemon.state_dir / "rolled-forward", "declared (rolled-forward) policies",
         False)]
    if settings.audit.prometheus_textfile is not None:
        dirs.append(("audit.prometheus_textfile", settings.audit.prometheus_textfile.parent, "the daemon's metrics",
                     True))
    problems = []
    for key, directory, what, any_owner in dirs:
        try:
            check_path(directory, what, any_owner=any_owner)
        except UntrustedPathError as e:
            problems.append(ConfigProblem(path, lines.get(tuple(key.split(".")), 1), key, str(e)))
        except OSError:
            continue
    return problems


def check(path: Path, relative_to: Path | None = None) -> list[ConfigProblem]:
    """Every problem of the configuration at ``path`` (an empty list: the daemon would accept it)."""
    from iped.config import ConfigError, ConfigProblem, parse_config
    from iped.trustpath import UntrustedPathError, check_path

    try:
        check_path(path, "the configuration")
    except UntrustedPathError as e:  # (a copy Ansible validates sits where its user put it: checked too)
        return [ConfigProblem(path, 1, "(file)", str(e))]
    except OSError:
        pass  # reading it says why
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else f"not UTF-8: {e}"
        return [ConfigProblem(path, 1, "(file)", str(why))]
    # parse_config resolves relative paths against the directory of the path it is given
    as_if = (relative_to / path.name) if relative_to is not None else path
    try:
        settings = parse_config(source, as_if)
    except ConfigError as e:
        return [ConfigProblem(path, p.line, p.key, p.problem) for p in e.problems]
    return _key_file_problems(settings, path, source) + _directory_problems(settings, path, source)


def run(args: argparse.Namespace) -> int:
    from iped.paths import DEFAULT_CONFIG

    if args.config is not None and args.config_positional is not None:
        die("give the configuration once: --config FILE", code=ExitCode.USAGE)
    given = args.config if args.config is not None else args.config_positional
    path = Path(given if given is not None else DEFAULT_CONFIG)
    problems = check(path, Path(args.relative_to) if args.relative_to else None)
    # no FILE given and iped not set up on this host: say what to do instead
    hint = (" (hint: iped is not set up on this host: give --config FILE, or try iped from its source "
            "checkout: 'iped daemon --dev')") if given is None and not path.exists() else ""
    for problem in problems:
        print(f"{problem}{hint}", file=sys.stderr)
    if not problems:
        print(f"{path}: OK")
    return ExitCode.FAILED if problems else ExitCode.OK
