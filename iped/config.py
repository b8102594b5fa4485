"""iped.toml -> Settings: strict pydantic v2 validation at the edge, frozen dataclasses inside.

Only this module imports pydantic. The keys are declared once, as the dataclasses of
:mod:`iped.settings`; the pydantic models here are derived from them (:func:`model_for`),
and a validated model is frozen back into them (:func:`to_settings`), relative paths resolved
against the file's directory. Errors are rendered ``FILE:LINE: key.path: problem``; tomllib keeps
no positions, so :func:`key_lines` does a cheap scan of the source to map a pydantic ``loc`` back
to the line that set the key (or the section header, or line 1).

pydantic (and pydantic-core, the largest import of the daemon's start) is imported only when a
file needs it: :func:`plain_values` accepts what is plainly valid without it -- the right TOML
type, within its limits, no unknown key -- and declines everything else, which pydantic then
judges and words. Both give the same values for what both accept (tests/test_config_fast_path.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tomllib
import types
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

from iped.settings import Settings

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


def _model_type(tp: Any) -> Any:
    """The pydantic type that validates a settings field's TOML value."""
    if tp is Path:
        from typing import Annotated

        from pydantic import Strict

        return Annotated[Path, Strict(False)]
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return Literal[tuple(m.value for m in tp)]
    origin, args = get_origin(tp), get_args(tp)
    if origin is tuple:
        return list[_model_type(args[0])]  # type: ignore[misc]
    if origin in (Union, types.UnionType):
        return Union[tuple(_model_type(a) for a in args)]  # noqa: UP007 (built at run time)
    return tp


def _model_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value.value if isinstance(value, StrEnum) else value


#: field metadata checked here after resolving, not by pydantic
_RESOLVED_LIMITS = ("max_path_bytes",)


def model_for(cls: type) -> type[BaseModel]:
    """The strict pydantic model of one settings dataclass (a ``[section]`` of iped.toml)."""
    from pydantic import ConfigDict, Field, create_model

    hints = get_type_hints(cls)
    fields: dict[str, Any] = {
        f.name: (_model_type(hints[f.name]),
                 Field(default=_model_default(f.default),
                       **{k: v for k, v in f.metadata.items() if k not in _RESOLVED_LIMITS}))
        for f in dataclasses.fields(cls)
    }
    return create_model(f"{cls.__name__}Model", __config__=ConfigDict(strict=True, extra="forbid", frozen=True),
                        **fields)


#: section name -> its settings dataclass (the fields of Settings whose type is a dataclass)
SECTIONS: dict[str, type] = {
    name: tp for name, tp in get_type_hints(Settings).items() if isinstance(tp, type) and dataclasses.is_dataclass(tp)
}


@functools.cache
def config_model() -> type[BaseModel]:
    """The strict pydantic model of the whole file, built (and pydantic imported) on first use."""
    from pydantic import ConfigDict, create_model

    return create_model(  # type: ignore[call-overload, no-any-return]
        "ConfigModel", __config__=ConfigDict(strict=True, extra="forbid", frozen=True),
        **{name: (model, model()) for name, model in ((n, model_for(c)) for n, c in SECTIONS.items())},
    )


class _NotPlainError(Exception):
    """A value :func:`plain_values` leaves to pydantic (to reject it, or to accept it its way)."""


#: the field limits :func:`_plain` checks itself; a field with any other metadata goes to pydantic
_PLAIN_LIMITS = frozenset({"ge", "le", "min_length", *_RESOLVED_LIMITS})
_INT64_MAX = (1 << 63) - 1


def _plain(value: Any, tp: Any, limits: dict[str, Any]) -> Any:
    """``value`` as the pydantic model would hold it, when it is plainly valid for ``tp``."""
    if tp is Path:
        if type(value) is str and value and "\0" not in value:
            return Path(value)
    elif isinstance(tp, type) and issubclass(tp, StrEnum):
        if type(value) is str and value in tp._value2member_map_:
            return value
    elif tp is bool:
        if type(value) is bool:
            return value
    elif tp is int:
        if (type(value) is int and abs(value) <= _INT64_MAX and value >= limits.get("ge", value)
                and value <= limits.get("le", value)):
            return value
    elif tp is str:
        if type(value) is str and len(value) >= limits.get("min_length", 0):
            return value
    elif get_origin(tp) is tuple:
        if type(value) is list:
            return [_plain(v, get_args(tp)[0], {}) for v in value]
    elif get_origin(tp) in (Union, types.UnionType):
        arms = [a for a in get_args(tp) if a is not type(None)]
        if len(arms) == 1:  # TOML has no null: X | None holds an X
            return _plain(value, arms[0], limits)
    raise _NotPlainError


def plain_values(data: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Each section's field values as the pydantic model would give them (defaults filled in),
    or None when anything in ``data`` is not plainly valid: then pydantic decides."""
    if not data.keys() <= SECTIONS.keys():
        return None
    out: dict[str, dict[str, Any]] = {}
    try:
        for name, cls in SECTIONS.items():
            given = data.get(name, {})
            fields = dataclasses.fields(cls)
            if type(given) is not dict or not given.keys() <= {f.name for f in fields}:
                return None
            hints = get_type_hints(cls)
            values = {}
            for f in fields:
                if not f.metadata.keys() <= _PLAIN_LIMITS:
                    return None
                values[f.name] = (_plain(given[f.name], hints[f.name], dict(f.metadata)) if f.name in given
                                  else _model_default(f.default))
            out[name] = values
    except _NotPlainError:
        return None
    return out


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One validation error: where (file, line, dotted key) and what."""

    file: Path
    line: int
    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.problem}"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error found (not just the first)."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=")


def key_lines(source: str) -> dict[tuple[str, ...], int]:
    """Map ``(section, key)`` and ``(section,)`` to the 1-based line that defines them.

    A cheap scan, not a TOML parser: it understands ``[a.b]`` headers and ``key = ...`` lines,
    which is all iped.toml uses. Continuation lines of multi-line arrays are skipped because they
    do not look like ``key =``.
    """
    lines: dict[tuple[str, ...], int] = {}
    section: tuple[str, ...] = ()
    for n, text in enumerate(source.splitlines(), 1):
        if m := _SECTION.match(text):
            section = tuple(m.group(1).split("."))
            lines.setdefault(section, n)
        elif m := _KEY.match(text):
            lines.setdefault((*section, m.group(1).strip('"')), n)
    return lines


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str, ...], int]) -> int:
    keys = tuple(str(p) for p in loc if isinstance(p, str))
    while keys:
        if keys in lines:
            return lines[keys]
        keys = keys[:-1]
    return 1


_BOOLEAN_HINT = " (a boolean is written true or false, unquoted)"


def _did_you_mean_key(loc: tuple[str | int, ...]) -> str:
    """"; did you mean 'enforce'?" for an unknown section or key, from the settings dataclasses."""
    from iped.didyoumean import did_you_mean

    if len(loc) == 1:
        return did_you_mean(str(loc[0]), SECTIONS)
    if len(loc) == 2 and loc[0] in SECTIONS:
        return did_you_mean(str(loc[1]), (f.name for f in dataclasses.fields(SECTIONS[str(loc[0])])))
    return ""


def _toml_error_hint(source: str, line: int) -> str:
    """A TOML syntax error on a boolean key's line (``enforce = yes``): say how TOML writes one."""
    section: tuple[str, ...] = ()
    for n, text in enumerate(source.splitlines(), 1):
        if m := _SECTION.match(text):
            section = tuple(m.group(1).split("."))
        elif n == line and (m := _KEY.match(text)) and len(section) == 1 and section[0] in SECTIONS:
            cls = SECTIONS[section[0]]
            if get_type_hints(cls).get(m.group(1).strip('"')) is bool:
                return _BOOLEAN_HINT
    return ""


def _problems_from(err: ValidationError, path: Path, source: str) -> list[ConfigProblem]:
    lines = key_lines(source)
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            hint = _did_you_mean_key(loc)
            msg = f"unknown key{hint} (see docs/daemon.md for the keys iped.toml accepts)" if hint else (
                "unknown key (typo? see docs/daemon.md for the keys iped.toml accepts)")
        elif e["type"] == "bool_type":
            msg += _BOOLEAN_HINT
        out.append(ConfigProblem(path, _line_for(loc, lines), key or "(top)", msg))
    return sorted(out, key=lambda p: p.line)


def parse_config(source: str, path: Path) -> Settings:
    """Validate TOML text; raise ConfigError with every problem, each as FILE:LINE: key: problem."""
    try:
        data: dict[str, Any] = tomllib.loads(source)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        line = int(m.group(1)) if m else 1
        raise ConfigError([ConfigProblem(path, line, "(toml)", str(e) + _toml_error_hint(source, line))]) from None
    values = plain_values(data)
    if values is None:
        from pydantic import ValidationError

        try:
            model = config_model().model_validate(data)
        except ValidationError as e:
            raise ConfigError(_problems_from(e, path, source)) from None
        values = {name: {f.name: getattr(getattr(model, name), f.name) for f in dataclasses.fields(cls)}
                  for name, cls in SECTIONS.items()}
    settings = to_settings(values, path)
    problems = _resolved_limit_problems(settings, path, source)
    lines = key_lines(source)
    problems += [ConfigProblem(path, _line_for(("boot", key), lines), f"boot.{key}", problem)
                 for key, problem in settings.boot.problems()]
    if problems:
        raise ConfigError(problems)
    return settings


def _resolved_limit_problems(settings: Settings, path: Path, source: str) -> list[ConfigProblem]:
    """The limits that hold for a value once resolved (``max_path_bytes``: a relative path counts
    with the config file's directory in front of it)."""
    lines = key_lines(source)
    out = []
    for name in SECTIONS:
        section = getattr(settings, name)
        for f in dataclasses.fields(section):
            limit = f.metadata.get("max_path_bytes")
            value = getattr(section, f.name)
            if limit is None or value is None or len(os.fsencode(value)) <= limit:
                continue
            out.append(ConfigProblem(path, _line_for((name, f.name), lines), f"{name}.{f.name}",
                                     f"path is {len(os.fsencode(value))} bytes once resolved ({value}); "
                                     f"at most {limit} fit (a unix socket path, sun_path, is 108 bytes "
                                     "with its NUL)"))
    return out


def _rel(base: Path, p: Path) -> Path:
    """Relative paths in iped.toml are relative to the file's directory, not to the cwd."""
    return p if p.is_absolute() else base / p


def _freeze(value: Any, tp: Any, base: Path) -> Any:
    """A validated model value as the settings field's type (lists -> tuples, str -> enum,
    relative paths -> relative to the config file's directory)."""
    if value is None:
        return None
    if tp is Path:
        return _rel(base, value)
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        return tp(value)
    origin, args = get_origin(tp), get_args(tp)
    if origin is tuple:
        return tuple(_freeze(v, args[0], base) for v in value)
    if origin in (Union, types.UnionType):
        return _freeze(value, next(a for a in args if a is not type(None)), base)
    return value


def to_settings(values: dict[str, dict[str, Any]], path: Path) -> Settings:
    """Freeze validated values (section -> field -> value) into the Settings dataclasses the core uses."""
    sections = {}
    for name, cls in SECTIONS.items():
        hints = get_type_hints(cls)
        sections[name] = cls(**{f.name: _freeze(values[name][f.name], hints[f.name], path.parent)
                                for f in dataclasses.fields(cls)})
    return Settings(**sections, path=path)


def load_settings(path: Path) -> Settings:
    """Read and validate ``path``; a missing file is a ConfigError too (line 1), and so is a file
    someone other than root (or iped's user) could change (:mod:`iped.trustpath`)."""
    from iped.trustpath import UntrustedPathError, check_path

    try:
        check_path(path, "the configuration")
    except UntrustedPathError as e:
        said = str(e) if e.filename != os.path.abspath(path) else f"{e.why} (hint: {e.fix})"
        raise ConfigError([ConfigProblem(path, 1, "(file)", said)]) from None
    except OSError:
        pass  # reading it says why
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([ConfigProblem(path, 1, "(file)", e.strerror or str(e))]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(path, 1, "(file)", f"not UTF-8: {e}")]) from None
    return parse_config(source, path)
