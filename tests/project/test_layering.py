"""The package's floors: every import points down (or sideways, within a floor), and none closes a circle.

Read from the source with :mod:`ast` rather than by importing (as tests/emulator/
test_emulator_layout.py does for the emulator), so that every import counts: at module level,
inside a function (the usual way to hide a circle), under ``if TYPE_CHECKING:`` (a circle the
type checker walks is still a circle), and in ``.pyi`` stubs. docs/architecture.md describes the
floors; this table is their one declaration.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

import iped

PACKAGE = Path(iped.__file__).parent

#: highest first; a module belongs to the floor of its longest matching prefix (``iped`` itself:
#: only the package's ``__init__``). A module may import from its own floor or any floor below.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("iped.cli", "iped.__main__", "iped.docgen"),  # docgen: man pages and completion from the verb table
    ("iped.commands",),  # the verbs and what they share (exit codes, CliError, daemon requests)
    ("iped.rollout",),  # survey, suggest, shadow
    ("iped.daemon",),  # declared -> plan -> apply, the loop, the control socket
    ("iped.audit",),  # records, grouping, sources, explanations
    ("iped.discovery", "iped.policyfile", "iped.backend"),  # this host, one policy file, securityfs
    ("iped.emulator",),  # the kernel's IPE, file for file
    ("iped.pkcs7",),
    ("iped.config",),  # iped.toml -> Settings (pydantic at the edge)
    # the vocabulary every floor shares
    ("iped.settings", "iped.paths", "iped.errors", "iped.outcome", "iped.fsutil", "iped.errnos", "iped.textsafe",
     "iped.trustpath", "iped.didyoumean", "iped.forked", "iped"),
)


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root`` (``.py`` and ``.pyi``), by dotted name."""
    out: dict[str, Path] = {}
    for path in sorted([*root.rglob("*.py"), *root.rglob("*.pyi")]):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.setdefault(name, path)  # a .py wins over its stub; a compiled module has only the stub
    return out


def _imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: set[str]) -> list[str]:
    """The package modules one import statement names (``from iped.audit import native`` names
    ``iped.audit.native``; ``from iped.audit.records import RawRecord`` names ``iped.audit.records``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = importer.split(".")[: (None if is_package else -1)]
            parent = parent[: len(parent) - (node.level - 1)]
            base = ".".join([*parent, base] if base else parent)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for named in names:
        module = named
        while module not in known and "." in module:
            module = module.rsplit(".", 1)[0]
        if module in known and module != importer:
            out.append(module)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports, wherever the import statement stands."""
    modules = module_names(root)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps.update(_imported(node, name, path.stem == "__init__", known))
        graph[name] = deps
    return graph


def floor_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, floor)
    for index, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            matches = module == prefix if prefix == "iped" else module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a higher floor than the importer's."""
    out = []
    for module, deps in sorted(graph.items()):
        mine = floor_of(module)
        for dep in sorted(deps):
            theirs = floor_of(dep)
            if mine is not None and theirs is not None and theirs < mine:
                out.append(f"{module} -> {dep} (floor {FLOORS[mine][0]} imports floor {FLOORS[theirs][0]})")
    return out


def circles(graph: dict[str, set[str]]) -> list[str]:
    """One ``a -> b -> ... -> a`` per circle found by a depth-first walk."""
    found: list[str] = []
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            found.append(" -> ".join([*stack[stack.index(name) :], name]))
            return
        if name in done:
            return
        stack.append(name)
        for dep in sorted(graph.get(name, ())):
            visit(dep, stack)
        stack.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    return found


def test_every_module_is_on_a_floor() -> None:
    assert [m for m in sorted(module_names(PACKAGE)) if floor_of(m) is None] == []


def test_no_import_points_up() -> None:
    assert upward_imports(import_graph(PACKAGE)) == []


def test_the_import_graph_has_no_circle() -> None:
    assert circles(import_graph(PACKAGE)) == []


def test_imports_are_seen_at_module_level_in_functions_under_type_checking_and_in_stubs() -> None:
    """The graph is only as good as what it sees: one known edge of each kind."""
    graph = import_graph(PACKAGE)
    assert "iped.settings" in graph["iped.config"]  # module level
    assert "iped.emulator.ipe" in graph["iped.emulator"]  # inside __getattr__
    assert "iped.emulator.audit" in graph["iped.emulator.state"]  # under TYPE_CHECKING
    assert "iped.audit._scan" in graph["iped.audit.native"]  # a compiled module, known by its stub


@pytest.mark.parametrize(
    "injected",
    [
        "from iped.cli import main\n",
        "def later() -> None:\n    from iped.daemon import loop\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from iped.daemon import apply\n",
    ],
    ids=["module-level", "in-a-function", "type-checking"],
)
def test_an_injected_upward_import_is_caught(tmp_path: Path, injected: str) -> None:
    copy = tmp_path / "iped"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    with (copy / "errnos.py").open("a", encoding="utf-8") as f:
        f.write("\n" + injected)
    graph = import_graph(copy)
    assert [line for line in upward_imports(graph) if line.startswith("iped.errnos ->")]
    assert [c for c in circles(graph) if "iped.errnos" in c]  # errnos is imported by the floors it reached
