"""The test tree mirrors the package: the tests of ``iped/x/y.py`` are ``tests/x/test_y.py`` (or
``tests/x/test_y_<aspect>.py`` when one module has several files), so a module's tests are found
by its path and nowhere else.

The rule (tests/README.md maps the tree):

* a folder of tests/ is either a mirror (``tests/x/`` of the package ``iped/x/``; tests/ itself
  mirrors ``iped/``; tests/helpers/ mirrors itself) or one of the named suites in :data:`SUITES`;
* in a mirror, every ``test_*.py`` names a module of the mirrored package: ``y.py``, a
  subpackage ``y/``, or a C extension ``_y.c``, followed by nothing or by ``_<aspect>``;
* in a named suite, no ``test_*.py`` has a module's exact name: a file called ``test_metrics.py``
  holds the tests of a ``metrics.py`` and belongs beside its mirror;
* no test file or conftest imports another (shared code is in tests/helpers/).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT, TESTS

#: suites named for what they run, not for one module (each says why in tests/README.md)
SUITES = frozenset({"integration", "project", "fleet", "docs", "mutation", "corpus", "lab", "lab_guest"})


def module_names(package: Path) -> set[str]:
    """The names a test file in ``package``'s mirror may start with."""
    names = {p.stem for p in package.glob("*.py") if not p.name.startswith("__")}
    names |= {p.stem.lstrip("_") for p in package.glob("*.c")}
    names |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    return names


def names_a_module(stem: str, modules: set[str]) -> bool:
    """``stem`` (without ``test_``) is a module's name, or a module's name then ``_<aspect>``."""
    return any(stem == m or stem.startswith(f"{m}_") for m in modules)


def misplaced(tests: Path, package: Path) -> list[str]:
    """Every folder or test file of ``tests`` that breaks the rule, with the reason."""
    everywhere = {p.stem for p in package.rglob("*.py") if not p.name.startswith("__")}
    found = []
    mirrors: list[tuple[Path, Path]] = [(tests, package)]
    for folder in sorted(p for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))):
        if folder.name in SUITES:
            for test in sorted(folder.rglob("test_*.py")):
                if test.stem.removeprefix("test_") in everywhere:
                    found.append(f"{test.relative_to(tests.parent)}: a module's tests, in a named suite")
        elif folder.name == "helpers":
            mirrors.append((folder, folder))
        elif (package / folder.name / "__init__.py").is_file():
            mirrors.append((folder, package / folder.name))
        else:
            found.append(f"{folder.relative_to(tests.parent)}/: neither a package's mirror nor a named suite")
    for folder, mirrored in mirrors:
        modules = module_names(mirrored)
        for test in sorted(folder.glob("test_*.py")):
            if not names_a_module(test.stem.removeprefix("test_"), modules):
                where = mirrored.relative_to(mirrored.parents[1] if mirrored.name == "helpers" else package.parent)
                found.append(f"{test.relative_to(tests.parent)}: names no module of {where}/")
    return found


def test_the_tree_mirrors_the_package() -> None:
    assert misplaced(TESTS, ROOT / "iped") == []


def test_no_test_file_is_a_library() -> None:
    """Shared code lives in tests/helpers/: no test file or conftest imports another (the lab's
    own packages, which run inside guests, are left as they are)."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.relative_to(TESTS).parts[0] in ("lab", "lab_guest"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names
                      if n.rsplit(".", 1)[-1].startswith(("test_", "conftest"))]
    assert found == []


def test_the_readme_maps_every_folder() -> None:
    readme = (TESTS / "README.md").read_text(encoding="utf-8")
    folders = [p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    assert [name for name in folders if f"`{name}/`" not in readme] == []


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A package ``pkg`` (modules a.py, sub/b.py, sub/_fast.c) and its test tree, all in place."""
    package, tests = tmp_path / "pkg", tmp_path / "tests"
    for path in ("a.py", "sub/__init__.py", "sub/b.py", "sub/_fast.c"):
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).touch()
    for path in ("test_a.py", "sub/test_b.py", "sub/test_b_races.py", "sub/test_fast.py", "integration/test_e2e.py",
                 "helpers/x.py", "helpers/test_x.py"):
        (tests / path).parent.mkdir(parents=True, exist_ok=True)
        (tests / path).touch()
    return tests, package


def test_a_tree_in_place_passes(tree: tuple[Path, Path]) -> None:
    assert misplaced(*tree) == []


@pytest.mark.parametrize(("path", "why"), [
    ("integration/test_b.py", "tests/integration/test_b.py: a module's tests, in a named suite"),
    ("sub/test_a.py", "tests/sub/test_a.py: names no module of pkg/sub/"),
    ("test_b.py", "tests/test_b.py: names no module of pkg/"),
    ("helpers/test_y.py", "tests/helpers/test_y.py: names no module of tests/helpers/"),
    ("fleet2/test_a.py", "tests/fleet2/: neither a package's mirror nor a named suite"),
])
def test_a_misplaced_test_file_is_found(tree: tuple[Path, Path], path: str, why: str) -> None:
    tests, package = tree
    (tests / path).parent.mkdir(exist_ok=True)
    (tests / path).touch()
    assert misplaced(tests, package) == [why]
