"""Fuzzing the iped.toml loader (iped.config): any text gives Settings or ConfigError, and every
problem is located (FILE:LINE within the file, a key). 0 crashes.

Small example counts in the normal run; ``IPED_FUZZ_LONG=1`` runs 100 times as many.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iped.config import SECTIONS, ConfigError, load_settings, parse_config
from iped.settings import Settings

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


def loads(source: str) -> Settings | ConfigError:
    try:
        return parse_config(source, PATH)
    except ConfigError as e:
        lines = source.count("\n") + 1
        for p in e.problems:
            assert p.file == PATH and 1 <= p.line <= lines and p.key and p.problem, p
        return e


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
