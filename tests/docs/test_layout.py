"""The README's layout table and ``iped/daemon/__init__.py``'s module list name exactly the
modules that exist: a new module is described where a reader looks for it, a removed one is
not described any more."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import iped
import iped.daemon

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(iped.__file__).parent
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def layout_rows() -> dict[str, str]:
    """The README's "Layout" table: its first cell (the paths) -> its second (what)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            rows[cells[0]] = cells[1]
    return rows


def modules(package: Path) -> set[str]:
    """The modules of one package directory, a compiled one by its stub (``_scan.pyi``)."""
    return {p.stem for p in [*package.glob("*.py"), *package.glob("*.pyi")]} - {"__init__"}


def named(text: str, quote: str) -> set[str]:
    """The module-like names quoted in ``text`` (``loop``, not ``iped plan --json`` or ``find_active()``)."""
    return {m for m in re.findall(rf"{quote}([^`]+?){quote}", text) if IDENTIFIER.fullmatch(m)}


@pytest.mark.parametrize("package", ["daemon", "audit", "emulator", "rollout"])
def test_layout_row_of_a_package_names_its_modules_and_c_files(package: str) -> None:
    what = layout_rows()[f"`iped/{package}/`"]
    assert named(what, "`") == modules(PACKAGE / package)
    assert set(re.findall(r"`(\w+\.c)`", what)) == {p.name for p in (PACKAGE / package).glob("*.c")}


def test_layout_table_names_every_top_level_module_and_package() -> None:
    paths = set(re.findall(r"`(iped/[^`]+)`", " ".join(layout_rows())))
    expected = {f"iped/{p.name}" for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    expected |= {f"iped/{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert expected <= paths, sorted(expected - paths)
    assert {p for p in paths if not (ROOT / p).exists()} == set()


def test_daemon_package_docstring_names_its_modules() -> None:
    assert iped.daemon.__doc__ is not None
    assert named(iped.daemon.__doc__, "``") == modules(PACKAGE / "daemon")
