"""Fuzzing the iped.toml loader (iped.config): any text gives Settings or ConfigError; every
problem is located (FILE:LINE within the file, a key), and every loaded configuration round-trips
(written back as TOML, it loads to the same Settings). 0 crashes.

Small example counts in the normal run; ``IPED_FUZZ_LONG=1`` runs 100 times as many.
"""

from __future__ import annotations

import dataclasses
import math
import os
from enum import StrEnum
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iped.config import SECTIONS, ConfigError, load_settings, parse_config
from iped.settings import Settings
from tests.helpers.paths import EXAMPLE_CONFIG

SCALE = 100 if os.environ.get("IPED_FUZZ_LONG") == "1" else 1
FUZZ = settings(max_examples=60 * SCALE, deadline=None)
PATH = Path("/etc/iped/iped.toml")

KEYS = [(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
VALUES = st.one_of(
    st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=30), st.just("/" + "x" * 200), st.just(""),
    st.lists(st.one_of(st.text(max_size=10), st.integers()), max_size=3),
    st.sampled_from(["auto", "kernel", "emulator", "netlink", "journal", "none"]),
)  # fmt: skip


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').encode("unicode_escape").decode() + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def as_toml(loaded: Settings) -> str:
    """``loaded`` written back as iped.toml (None: TOML has no null, the key is left out)."""
    out = []
    for section in SECTIONS:
        values = getattr(loaded, section)
        lines = [f"{f.name} = {toml_value(_plain(getattr(values, f.name)))}"
                 for f in dataclasses.fields(values) if getattr(values, f.name) is not None]
        out.append(f"[{section}]\n" + "".join(line + "\n" for line in lines))
    return "".join(out)


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, StrEnum):
        return value.value
    return value


def loads(source: str) -> Settings | ConfigError:
    """Load ``source``: a rejection names each problem's line; a success round-trips."""
    try:
        loaded = parse_config(source, PATH)
    except ConfigError as e:
        lines = source.count("\n") + 1
        for p in e.problems:
            assert p.file == PATH and 1 <= p.line <= lines and p.key and p.problem, p
        return e
    assert parse_config(as_toml(loaded), PATH) == loaded, as_toml(loaded)
    return loaded


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([*KEYS, ("policies", "bogus"), ("nosuch", "x")]), VALUES), max_size=8))
def test_structured_configs(entries: list[tuple[tuple[str, str], object]]) -> None:
    by_section: dict[str, list[str]] = {}
    for (section, key), value in entries:
        by_section.setdefault(section, []).append(f"{key} = {toml_value(value)}")
    source = "".join(f"[{s}]\n" + "\n".join(dict.fromkeys(lines)) + "\n" for s, lines in by_section.items())
    loads(source)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(source: str) -> None:
    loads(source)


@FUZZ
@given(st.binary(max_size=120))
def test_arbitrary_file_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "iped.toml"
    path.write_bytes(data)
    try:
        load_settings(path)
    except ConfigError as e:
        assert all(p.file == path and p.line >= 1 for p in e.problems)


def test_the_example_config_and_every_key_set_round_trip() -> None:
    example = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    assert isinstance(loads(example), Settings)
    every = (
        '[policies]\ndir = "/p"\nactive = "a"\nenforce = false\nsuccess_audit = true\n'
        'trust_anchors = ["/a.crt", "b.crt"]\nsigning_key = "/k.pem"\nsigning_cert = "/k.crt"\nprotect = ["x", "y"]\n'
        '[daemon]\nbackend = "emulator"\nstate_dir = "s"\ncontrol_socket = "/run/x.sock"\ncontrol_group = "adm"\n'
        'history = 3\ndebounce_ms = 0\n'
        '[audit]\nsource = "journal"\nreceive_buffer = 8192\nprometheus_textfile = "t.prom"\n'
    )
    loaded = loads(every)
    assert isinstance(loaded, Settings) and loaded.policies.protect == ("x", "y")
