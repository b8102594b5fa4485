"""Guest-side entry point: ``python -m tests.lab.guest --out DIR``, run inside the lab VM.

It runs as root on a real IPE kernel, in a chroot of the host's (read-only) root, and leaves
everything for the host in ``DIR`` (the shared results directory):

* ``facts.json``      - what the kernel looks like (release, LSMs, IPE securityfs,
  ``.platform`` keyring contents, command line), collected first, before any step can
  change kernel state;
* ``corpus.log``      - step 1, :func:`tests.lab.corpus.in_guest.run_kernel` (when that module exists);
* ``guest-pytest.log`` and ``guest-junit.xml`` - step 2, ``pytest tests/lab_guest``;
* ``steps.json``      - per step: status, exit code, duration, log file.

Each step runs in its own process with its output in its own file, so one step crashing
(even the interpreter) never hides the others' results.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.lab import GUEST_BUSYBOX, GUEST_ENV_FLAG, GUEST_TMP

CHECKOUT = Path(__file__).resolve().parents[2]
GUEST_TESTS = CHECKOUT / "tests" / "lab_guest"
_SYS_KEYCTL = 250  # x86_64
_KEYCTL_READ = 11


@dataclass(frozen=True)
class StepResult:
    """One step's outcome as recorded in ``steps.json``.

    ``status``: ``ok``, ``failed``, ``absent`` (nothing to run) or ``empty`` (pytest found
    no test).
    """

    name: str
    status: str
    returncode: int | None
    seconds: float
    log: str
    detail: str = ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.guest", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="results directory (shared with the host)")
    parser.add_argument("--step", choices=["corpus"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.step == "corpus":
        return _corpus_in_process(out)

    _write_json(out / "facts.json", collect_facts())
    steps = [_corpus_step(out), _pytest_step(out)]
    _write_json(out / "steps.json", [asdict(s) for s in steps])
    for step in steps:
        print(f"tests.lab.guest: {step.name}: {step.status} (rc={step.returncode}, {step.seconds:.1f} s) "
              f"{step.detail}".rstrip(), flush=True)
    return 1 if any(s.status == "failed" for s in steps) else 0


# --------------------------------------------------------------------------- facts


def collect_facts() -> dict[str, object]:
    """Kernel facts the host asserts on; failures to read become ``"error: ..."`` strings."""
    proc_keys = _read("/proc/keys")
    platform_lines: list[str] | str
    try:
        platform_lines = _platform_keyring(proc_keys)
    except OSError as exc:
        platform_lines = f"error: {exc}"
    return {
        "uname_r": os.uname().release,
        "lsm": _read("/sys/kernel/security/lsm").strip(),
        "ipe_securityfs": Path("/sys/kernel/security/ipe").is_dir(),
        "ipe_files": sorted(p.name for p in Path("/sys/kernel/security/ipe").glob("*")),
        "platform_keyring": platform_lines,
        "proc_keys": proc_keys.splitlines(),
        "cmdline": _read("/proc/cmdline").strip(),
        "initramfs_busybox": Path(GUEST_BUSYBOX).is_file(),
        "python": sys.version.split()[0],
    }


def _platform_keyring(proc_keys: str) -> list[str]:
    """``/proc/keys`` lines of the ``.platform`` keyring and of every key linked in it.

    /proc/keys shows all keys but not which keyring holds them; the membership comes from
    ``keyctl(KEYCTL_READ)`` on the keyring's serial.
    """
    lines = proc_keys.splitlines()
    ring = next((ln for ln in lines if ln.split()[7:9] == ["keyring", ".platform:"]), None)
    if ring is None:
        raise OSError("no .platform keyring in /proc/keys")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(4096)
    size = libc.syscall(ctypes.c_long(_SYS_KEYCTL), ctypes.c_long(_KEYCTL_READ),
                        ctypes.c_long(int(ring.split()[0], 16)), buf, ctypes.c_long(len(buf)))
    if size < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"keyctl read .platform: {os.strerror(err)}")
    members = {
        f"{int.from_bytes(buf.raw[i:i + 4], sys.byteorder):08x}" for i in range(0, min(size, len(buf)), 4)
    }
    return [ring, *(ln for ln in lines if ln.split()[0] in members)]


# --------------------------------------------------------------------------- steps


def _corpus_step(out: Path) -> StepResult:
    log = out / "corpus.log"
    if importlib.util.find_spec("tests.lab.corpus.in_guest") is None:
        log.write_text("tests.lab.corpus.in_guest does not exist: step skipped\n")
        return StepResult("corpus", "absent", None, 0.0, log.name, "no tests.lab.corpus.in_guest module")
    return _run_step("corpus", [sys.executable, "-m", "tests.lab.guest", "--out", str(out), "--step", "corpus"],
                     log)


def _corpus_in_process(out: Path) -> int:
    """Body of the corpus step (own process). An ImportError is a failure, not a crash."""
    try:
        corpus = importlib.import_module("tests.lab.corpus.in_guest")
    except Exception:
        print("FAILED to import tests.lab.corpus.in_guest:\n" + traceback.format_exc(), flush=True)
        return 3
    run_kernel = getattr(corpus, "run_kernel", None)
    if run_kernel is None:
        print("tests.lab.corpus.in_guest has no run_kernel(out_dir): nothing to run", flush=True)
        return 4
    run_kernel(out)
    return 0


def _pytest_step(out: Path) -> StepResult:
    log = out / "guest-pytest.log"
    if not GUEST_TESTS.is_dir():
        log.write_text(f"{GUEST_TESTS} does not exist: step skipped\n")
        return StepResult("pytest", "absent", None, 0.0, log.name, "no tests/lab_guest")
    argv = [sys.executable, "-m", "pytest", str(GUEST_TESTS), "-p", "no:cacheprovider",
            f"--junitxml={out / 'guest-junit.xml'}", "-o", "junit_family=xunit2", "-v"]
    return _run_step("pytest", argv, log)


def _run_step(name: str, argv: list[str], log: Path) -> StepResult:
    env = dict(os.environ, HYPOTHESIS_STORAGE_DIRECTORY=f"{GUEST_TMP}/hypothesis")
    start = time.monotonic()
    with log.open("wb") as fh:
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=CHECKOUT, env=env, check=False).returncode
        except OSError as exc:
            fh.write(f"cannot start {argv}: {exc}\n".encode())
            rc = 127
    seconds = time.monotonic() - start
    status = "ok" if rc == 0 else "failed"
    if (name, rc) == ("pytest", 5):
        status = "empty"
    elif (name, rc) == ("corpus", 4):
        status = "absent"
    detail = {3: "import failed", 4: "no run_kernel"}.get(rc, "") if name == "corpus" else ""
    return StepResult(name, status, rc, seconds, log.name, detail)


# --------------------------------------------------------------------------- host-side reader


@dataclass(frozen=True)
class JunitCase:
    """One guest pytest test: ``outcome`` is passed, failed, error or skipped."""

    nodeid: str
    outcome: str
    message: str


@dataclass(frozen=True)
class GuestOutput:
    """Host-side reader of what :func:`main` left in a results directory."""

    outdir: Path

    def facts(self) -> dict[str, Any]:
        data = json.loads((self.outdir / "facts.json").read_text())
        assert isinstance(data, dict)
        return data

    def steps(self) -> dict[str, dict[str, Any]]:
        """Step name -> its ``steps.json`` entry."""
        return {s["name"]: s for s in json.loads((self.outdir / "steps.json").read_text())}

    def log(self, name: str, lines: int = 60) -> str:
        """The last ``lines`` lines of a file in the results dir (for assertion messages)."""
        text = _read(str(self.outdir / name))
        return f"--- {name}, last {lines} lines ---\n" + "\n".join(text.rstrip().splitlines()[-lines:])

    def junit(self) -> dict[str, JunitCase]:
        """Guest pytest results keyed by ``<junit classname>::<name>``, e.g.
        ``tests.lab_guest.test_boot_guest::test_untrusted_signer_policy_rejected``."""
        import xml.etree.ElementTree as ET

        cases: dict[str, JunitCase] = {}
        for tc in ET.parse(self.outdir / "guest-junit.xml").getroot().iter("testcase"):
            nodeid = f"{tc.get('classname', '')}::{tc.get('name', '')}"
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = tc.find(tag)
                if node is not None:
                    outcome = "failed" if tag == "failure" else tag
                    message = f"{node.get('message', '')}\n{node.text or ''}".strip()
                    break
            cases[nodeid] = JunitCase(nodeid, outcome, message)
        return cases

    def unpassed(self, expected: Sequence[str]) -> list[str]:
        """Why the guest tests do not prove anything yet: one line per problem, empty when all passed.

        Every id in ``expected`` (:func:`expected_guest_tests`) must have run and *passed*: a skip
        is a problem like a failure (a module-level ``skipif`` would otherwise hide a whole file),
        and so are an empty expectation, an empty guest run and a guest test the host did not
        expect (host and guest disagree on what exists).
        """
        if not expected:
            return ["the host expects no guest test: collecting tests/lab_guest found none"]
        try:
            cases = self.junit()
        except (OSError, ValueError) as exc:
            return [f"no guest junit results ({exc})"]
        problems = [f"{nodeid}: did not run in the guest" for nodeid in expected if nodeid not in cases]
        problems += [f"{c.nodeid}: {c.outcome}\n{c.message}" for nodeid, c in cases.items()
                     if nodeid in expected and c.outcome != "passed"]
        problems += [f"{nodeid}: ran in the guest but the host does not expect it" for nodeid in cases
                     if nodeid not in expected]
        return problems


def expected_guest_tests() -> list[str]:
    """The ids (junit keys, see :meth:`GuestOutput.junit`) of every test in tests/lab_guest.

    Collected on the host exactly as the guest collects them (``IPED_LAB_GUEST=1``, which only
    un-hides the files; collecting runs no test).
    """
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(GUEST_TESTS)]
    proc = subprocess.run(argv, cwd=CHECKOUT, env=dict(os.environ, **{GUEST_ENV_FLAG: "1"}), capture_output=True,
                          text=True, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode not in (0, 5):  # 5: nothing collected, reported by unpassed()
        raise RuntimeError(f"collecting {GUEST_TESTS} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return [junit_key(line) for line in proc.stdout.splitlines() if "::" in line]


def junit_key(nodeid: str) -> str:
    """``tests/lab_guest/test_x.py::Cls::test_y[p]`` -> ``tests.lab_guest.test_x.Cls::test_y[p]``."""
    path, *scope, name = nodeid.split("::")
    return ".".join([path.removesuffix(".py").replace("/", "."), *scope]) + "::" + name


# --------------------------------------------------------------------------- helpers


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"error: {exc}"


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
