"""``iped validate x.pol | head -c20``: a reader that went away ends the output quietly; the exit
status still says whether the files are valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_text, unparsable


def validate_into_closed_pipe(*files: Path) -> subprocess.CompletedProcess[bytes]:
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line: every write is EPIPE
    try:
        return subprocess.run([sys.executable, "-m", "iped", "validate", *map(str, files)], stdout=w,
                              stderr=subprocess.PIPE, cwd=ROOT, timeout=60, check=False)
    finally:
        os.close(w)


def test_closed_stdout_keeps_the_verdict(tmp_path: Path) -> None:
    good = [tmp_path / f"p{i}.pol" for i in range(3)]
    for i, p in enumerate(good):
        p.write_bytes(policy_text(f"p{i}", "1.0.0"))
    r = validate_into_closed_pipe(*good)
    assert (r.returncode, r.stderr) == (0, b"")
    bad = tmp_path / "bad.pol"
    bad.write_bytes(unparsable("bad"))
    r = validate_into_closed_pipe(good[0], bad, good[1])
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        f"{bad}:2: EBADMSG: a rule must end with action=ALLOW or action=DENY (token 'action=ALOW') — "
        "invalid policy: syntax error, or a malformed/unsigned PKCS#7 container"]
