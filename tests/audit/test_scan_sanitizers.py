"""The C scanner, netlink reader and follower grouping under AddressSanitizer and UBSan.

``_scan.c`` and ``_netlink.c`` are compiled with ``-fsanitize=address,undefined`` into a copy
of the package, and the scanner tests (test_bulk_scan: the messy stream, the real kernel
bodies, generated blocks), the bulk-path tests, the renderer's (its digest rule split), the
netlink reader's and the follower's run against it in a child interpreter with the sanitizer
runtimes preloaded: a read past a line or the block, a use after free, a signed overflow or a
bad shift in the scanner fails here even where the result happens to come out right.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.helpers.paths import ROOT


def _runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True,
                          timeout=600).stdout
    assert os.path.isabs(path.strip()), f"gcc has no {name} (Debian: libasan8/libubsan1, pulled in by gcc)"
    return path.strip()


def test_scanner_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    # a copy of the package and the tests (pytest puts the tests' root first on sys.path)
    pkg = tmp_path / "iped"
    shutil.copytree(ROOT / "iped", pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copytree(ROOT / "tests", tmp_path / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    subprocess.run(
        ["gcc", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
         "-fno-omit-frame-pointer", "-fPIC", "-shared", f"-I{sysconfig.get_paths()['include']}",
         *(str(ROOT / "iped/audit" / c) for c in ("_scan.c", "_netlink.c")), "-o",
         str(pkg / "audit" / f"_scan{suffix}")],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),  # this copy of iped, ahead of the editable install
        "LD_PRELOAD": f"{_runtime('libasan.so')} {_runtime('libubsan.so')}",
        "ASAN_OPTIONS": "detect_leaks=0",  # (the interpreter's own allocations are not ours to judge)
        "PYTHONMALLOC": "malloc",  # every object from malloc, where ASAN sees its bounds
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    probe = subprocess.run([sys.executable, "-c", "import iped.audit._scan as s; print(s.__file__)"],
                           env=env, capture_output=True, text=True, check=True, cwd=tmp_path, timeout=600)  # fmt: skip
    assert probe.stdout.strip().startswith(str(tmp_path)), probe.stdout
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         "tests/audit/test_bulk_scan.py", "tests/audit/test_bulk.py", "tests/audit/test_netlink_reader.py",
         "tests/audit/test_render.py",
         "tests/audit/test_follow.py"],
        check=False, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    report = r.stdout[-3000:] + r.stderr[-3000:]
    assert "AddressSanitizer" not in report and "runtime error:" not in report, report
    assert r.returncode == 0, report
    assert " passed" in r.stdout, report
