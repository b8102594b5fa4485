"""Every wait of the suite on a child process is bounded: a hang fails its test, it never stalls the run.

(A test of the READY=1 promise was once caught only because an unbounded ``os.waitpid`` hung.)
Read from the source: ``subprocess.run``/``check_output`` and ``Popen.wait``/``communicate``
take a ``timeout``; ``os.waitpid`` is only called through ``tests.helpers.daemon.wait_child``
(or right after SIGKILL inside it). The QEMU lab runs under its own guest time-outs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import TESTS

#: the lab's host and guest code, bounded by the lab harness's own timeouts
EXEMPT_DIRS = {"lab", "lab_guest"}
#: where os.waitpid may be called directly: the bounded helper itself
WAITPID_ALLOWED = {"tests/helpers/daemon.py:wait_child"}


def unbounded_waits(path: Path, rel: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed_functions = {name.split(":", 1)[1] for name in WAITPID_ALLOWED if name.split(":", 1)[0] == rel}
    exempt_lines: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.name in allowed_functions:
            exempt_lines.update(range(fn.lineno, (fn.end_lineno or fn.lineno) + 1))
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, owner = node.func.attr, ast.unparse(node.func.value)
        bounded = any(k.arg == "timeout" for k in node.keywords)
        where = f"{rel}:{node.lineno}"
        if owner == "subprocess" and name in ("run", "check_output", "check_call", "call") and not bounded:
            out.append(f"{where}: subprocess.{name} without timeout=")
        elif name in ("wait", "communicate") and owner.endswith("proc") and not node.args and not bounded:
            out.append(f"{where}: {owner}.{name}() without a timeout")
        elif owner == "os" and name == "waitpid" and node.lineno not in exempt_lines:
            out.append(f"{where}: os.waitpid (use tests.helpers.daemon.wait_child)")
    return out


def test_every_wait_on_a_child_is_bounded() -> None:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS.parent).as_posix()
        if path.relative_to(TESTS).parts[0] in EXEMPT_DIRS:
            continue
        found += unbounded_waits(path, rel)
    assert found == []


@pytest.mark.parametrize("call", ["subprocess.run(['true'])", "proc.wait()", "os.waitpid(pid, 0)"])
def test_an_unbounded_wait_is_found(tmp_path: Path, call: str) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(f"def test() -> None:\n    {call}\n", encoding="utf-8")
    assert len(unbounded_waits(sample, "tests/test_sample.py")) == 1
