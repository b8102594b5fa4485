"""The emulator's layout: one module per kernel file, an acyclic import graph, no host I/O.

Read from the source with :mod:`ast` rather than by importing, so that an import hidden inside a
function (the usual way to break a cycle) is seen too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import iped.emulator

PACKAGE = Path(iped.emulator.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
#: modules that talk to the host; the emulator is pure computation
HOST_IO = {"iped.discovery", "pyudev", "fcntl", "ctypes"}


def _imports(node: ast.AST) -> list[str]:
    """Modules named by one import statement (``from iped.emulator import fs`` names ``iped.emulator.fs``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module is not None:
        if node.module == "iped.emulator":
            return [f"iped.emulator.{a.name}" for a in node.names]
        return [node.module]
    return []


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Imports run when the module loads (``if TYPE_CHECKING:`` blocks never run)."""
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        out += _imports(node)
    return out


def _function_level_imports(tree: ast.Module) -> list[str]:
    out: list[str] = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                out += _imports(node)
    return out


def _tree(name: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))


def test_no_module_imports_another_emulator_module_inside_a_function() -> None:
    """An import inside a function is how a cycle is hidden; only ``__init__``'s lazy names may."""
    hidden = {
        name: [m for m in _function_level_imports(_tree(name)) if m.startswith("iped.emulator")] for name in MODULES
    }
    assert {k: v for k, v in hidden.items() if v} == {}


def test_the_import_graph_of_the_emulator_is_acyclic() -> None:
    graph = {
        name: {
            m.removeprefix("iped.emulator.")
            for m in _module_level_imports(_tree(name)) + _function_level_imports(_tree(name))
            if m.startswith("iped.emulator.")
        }
        for name in MODULES
    }
    done: set[str] = set()
    stack: list[str] = []

    def visit(name: str) -> None:
        if name in stack:
            pytest.fail(f"import cycle: {' -> '.join([*stack[stack.index(name) :], name])}")
        if name in done:
            return
        stack.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        stack.pop()
        done.add(name)

    for name in MODULES:
        visit(name)


@pytest.mark.parametrize("name", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(name: str) -> None:
    """Import order cannot matter: every module loads first, on its own, without host I/O modules."""
    code = (
        f"import sys, iped.emulator.{name}; "
        f"print(sorted(m for m in {sorted(HOST_IO)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "[]"


#: modules that are not named after their C file; every other one is security/ipe/<name>.c
COUNTERPARTS = {
    "types": "security/ipe/hooks.h",
    "state": "security/ipe/ipe.h",
    "keyring": "certs/system_keyring.c",
    "securityfs": "security/inode.c",
    "kstrtox": "lib/kstrtox.c",
    "compiled": "no kernel counterpart",
}


@pytest.mark.parametrize("name", MODULES)
def test_each_module_docstring_names_its_c_counterpart(name: str) -> None:
    doc = ast.get_docstring(_tree(name)) or ""
    assert COUNTERPARTS.get(name, f"security/ipe/{name}.c") in doc


def test_only_types_builds_the_oserror_of_a_kernel_errno() -> None:
    """One errno -> OSError helper (types.kernel_error), not a private copy per module."""
    copies = [name for name in MODULES if "os.strerror(err)" in (PACKAGE / f"{name}.py").read_text(encoding="utf-8")]
    assert copies == ["types"]
