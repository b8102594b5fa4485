"""iped.toml -> Settings: strict pydantic v2 validation at the edge, frozen dataclasses inside.

Only this module imports pydantic. Errors are rendered ``FILE:LINE: key.path: problem``; tomllib
keeps no positions, so :func:`key_lines` does a cheap scan of the source to map a pydantic ``loc``
back to the line that set the key (or the section header, or line 1).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from iped.daemon.settings import (
    AuditSettings,
    AuditSource,
    BackendKind,
    DaemonSettings,
    PolicySettings,
    Settings,
)

FlexPath = Annotated[Path, Strict(False)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class PoliciesModel(_Model):
    dir: FlexPath = Path("/etc/iped/policies.d")
    active: str | None = Field(default=None, min_length=1)
    enforce: bool = True
    success_audit: bool = False
    trust_anchors: list[FlexPath] = []
    signing_key: FlexPath | None = None
    signing_cert: FlexPath | None = None
    protect: list[str] = []


class DaemonModel(_Model):
    backend: Literal["auto", "kernel", "emulator"] = "auto"
    state_dir: FlexPath = Path("/var/lib/iped")
    control_socket: FlexPath = Path("/run/iped/control.sock")
    control_group: str | None = "iped"
    history: int = Field(default=20, ge=1, le=10000)
    debounce_ms: int = Field(default=200, ge=0, le=60000)


class AuditModel(_Model):
    source: Literal["auto", "netlink", "journal", "none"] = "auto"
    receive_buffer: int = Field(default=1 << 20, ge=4096)
    prometheus_textfile: FlexPath | None = None


class ConfigModel(_Model):
    policies: PoliciesModel = PoliciesModel()
    daemon: DaemonModel = DaemonModel()
    audit: AuditModel = AuditModel()


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


def _problems_from(err: ValidationError, path: Path, source: str) -> list[ConfigProblem]:
    lines = key_lines(source)
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo? see docs/daemon.md for the keys iped.toml accepts)"
        out.append(ConfigProblem(path, _line_for(loc, lines), key or "(top)", msg))
    return sorted(out, key=lambda p: p.line)


def parse_config(source: str, path: Path) -> Settings:
    """Validate TOML text; raise ConfigError with every problem, each as FILE:LINE: key: problem."""
    try:
        data: dict[str, Any] = tomllib.loads(source)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ConfigError([ConfigProblem(path, int(m.group(1)) if m else 1, "(toml)", str(e))]) from None
    try:
        model = ConfigModel.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_problems_from(e, path, source)) from None
    return to_settings(model, path)


def _rel(base: Path, p: Path) -> Path:
    """Relative paths in iped.toml are relative to the file's directory, not to the cwd."""
    return p if p.is_absolute() else base / p


def to_settings(model: ConfigModel, path: Path) -> Settings:
    """Freeze a validated model into the Settings dataclasses the core uses."""
    base = path.parent
    p, d, a = model.policies, model.daemon, model.audit
    return Settings(
        policies=PolicySettings(
            dir=_rel(base, p.dir),
            active=p.active,
            enforce=p.enforce,
            success_audit=p.success_audit,
            trust_anchors=tuple(_rel(base, x) for x in p.trust_anchors),
            signing_key=_rel(base, p.signing_key) if p.signing_key else None,
            signing_cert=_rel(base, p.signing_cert) if p.signing_cert else None,
            protect=tuple(p.protect),
        ),
        daemon=DaemonSettings(
            backend=BackendKind(d.backend),
            state_dir=_rel(base, d.state_dir),
            control_socket=_rel(base, d.control_socket),
            control_group=d.control_group,
            history=d.history,
            debounce_ms=d.debounce_ms,
        ),
        audit=AuditSettings(
            source=AuditSource(a.source),
            receive_buffer=a.receive_buffer,
            prometheus_textfile=_rel(base, a.prometheus_textfile) if a.prometheus_textfile else None,
        ),
        path=path,
    )


def load_settings(path: Path) -> Settings:
    """Read and validate ``path``; a missing file is a ConfigError too (line 1)."""
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([ConfigProblem(path, 1, "(file)", e.strerror or str(e))]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(path, 1, "(file)", f"not UTF-8: {e}")]) from None
    return parse_config(source, path)
