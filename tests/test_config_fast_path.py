"""The pydantic-free path of the config loader: what it accepts, pydantic accepts with the same
values; what it declines goes to pydantic, whose errors (FILE:LINE: key: problem) stay the loader's."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from iped.config import SECTIONS, config_model, parse_config, plain_values

ACCEPTED = [
    "",
    "[policies]\n",
    '[policies]\ndir = "p.d"\nactive = "x"\nenforce = false\nsuccess_audit = true\ntrust_anchors = ["a.crt", "/b"]\n'
    'signing_key = "k"\nsigning_cert = "c"\nprotect = ["base*", "x"]\n',
    '[daemon]\nbackend = "emulator"\nstate_dir = "s"\ncontrol_socket = "c.sock"\ncontrol_group = "wheel"\n'
    "history = 1\ndebounce_ms = 0\n",
    "[daemon]\nhistory = 10000\ndebounce_ms = 60000\n",
    '[audit]\nsource = "none"\nreceive_buffer = 4096\nprometheus_textfile = "m.prom"\n',
]

#: each is left to pydantic: some it rejects, some it accepts its own way
DECLINED = [
    "[policies]\nenforce = 1\n",
    '[policies]\nenforce = "yes"\n',
    '[policies]\nactive = ""\n',
    "[policies]\nbogus = 1\n",
    '[deamon]\nbackend = "auto"\n',
    "policies = 3\n",
    "[daemon]\nhistory = 0\n",
    "[daemon]\nhistory = 10001\n",
    "[daemon]\nhistory = true\n",
    "[daemon]\nhistory = 2.0\n",
    '[daemon]\nbackend = "kernal"\n',
    '[daemon]\nstate_dir = ""\n',
    "[daemon]\nstate_dir = 5\n",
    '[policies]\ntrust_anchors = "a.crt"\n',
    "[policies]\ntrust_anchors = [1]\n",
    "[audit]\nreceive_buffer = 99999999999999999999\n",
]


def pydantic_values(text: str) -> dict[str, dict[str, object]]:
    model = config_model().model_validate(tomllib.loads(text))
    return {name: {f.name: getattr(getattr(model, name), f.name) for f in dataclasses.fields(cls)}
            for name, cls in SECTIONS.items()}


@pytest.mark.parametrize("text", ACCEPTED)
def test_plain_values_equal_pydantic_values(text: str) -> None:
    got = plain_values(tomllib.loads(text))
    assert got is not None
    assert got == pydantic_values(text)
    assert {type(v) for s in got.values() for v in s.values()} == {
        type(v) for s in pydantic_values(text).values() for v in s.values()}


@pytest.mark.parametrize("text", DECLINED)
def test_anything_not_plain_goes_to_pydantic(text: str) -> None:
    assert plain_values(tomllib.loads(text)) is None


def test_declined_but_valid_gives_the_same_settings(tmp_path: Path) -> None:
    """A declined file that pydantic accepts (a path as a TOML string pydantic takes) loads as before."""
    path = tmp_path / "iped.toml"
    declined = '[daemon]\nstate_dir = ""\n'
    assert plain_values(tomllib.loads(declined)) is None
    assert parse_config(declined, path).daemon.state_dir == tmp_path / Path("")
