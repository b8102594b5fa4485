"""The shipped package has no switch an environment can flip for tests.

Test hooks (scripted backend faults, a pause after a plan step) live in the tests' own entry point,
tests/helpers/iped_with_hooks.py; a variable such as IPED_EMULATOR_FAULT or
IPED_TEST_PAUSE_AFTER_STEP set for a production daemon must do nothing, so no name of that kind
may appear in ``iped/`` at all (read directly, or through a constant).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import iped

PACKAGE = Path(iped.__file__).parent
#: an environment variable for tests: IPED_TEST_*, or any IPED_* naming a fault
TEST_SWITCH = re.compile(r"^IPED_\w*(TEST|FAULT)")
READS = {"getenv", "get", "environ"}


def _strings(tree: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_test_switch_is_named_in_the_package() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}: {text}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for text in _strings(ast.parse(path.read_bytes(), str(path))) if TEST_SWITCH.match(text)]
    assert not found, "test-only environment switches in the shipped package:\n" + "\n".join(found)


def test_every_environment_variable_the_package_reads_is_not_a_test_switch() -> None:
    """Every os.environ / os.getenv read with a literal name (the rule above catches names held in
    constants); the list is not empty, so the scan does see the reads."""
    names: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in READS \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str) \
                    and ("environ" in ast.unparse(node.func) or node.func.attr == "getenv"):
                names.append(node.args[0].value)
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ") \
                    and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                names.append(node.slice.value)
    assert names, "no environment read found: the scan is broken"
    assert not [n for n in names if TEST_SWITCH.match(n) or "TEST" in n], names
