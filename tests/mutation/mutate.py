"""Mutation testing of the README's promises: one realistic one-line mutation each, against the tests
that should catch it. Run by hand (not in CI, it takes minutes):

    .venv/bin/python tests/mutation/mutate.py            # every mutation
    .venv/bin/python tests/mutation/mutate.py anchors    # the ones whose id contains "anchors"

Each mutation is applied to a copy of the checkout (``iped/`` and ``tests/``, with the built
``_scan``) in a temporary directory, never to the checkout itself; the listed test files then
run there with ``-x``. A mutation the tests pass is a **survivor**: a promise no test guards.
The exit code is the number of survivors (a stale entry counts as one).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutation:
    id: str
    promise: str  # the README's words, or the docs' it rests on
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("empty-anchors-trust-anyone", "a signer outside the configured trust anchors is ENOKEY",
             "iped/policyfile.py", "if material.anchors is None else", "if not material.anchors else",
             ("tests/daemon/test_declared.py",)),
    Mutation("unchanged-ok-swallows-kernel-error", "systemctl reload fails on a kernel error (exit 4)",
             "iped/commands/reload.py", "code == ExitCode.UNCHANGED else code", "code != ExitCode.FAILED else code",
             ("tests/commands/test_reload.py",)),
    Mutation("texts-pruned-past-history", "iped rollback works after the plan log rotated and a restart",
             "iped/daemon/planlog.py",
             "keep = {d for links in self._chains().values() for d in links}.union(*map(_digests, self.recent()))",
             "keep = set().union(*map(_digests, self.recent()))",
             ("tests/daemon/test_runtime_state_dir.py", "tests/daemon/test_planlog.py")),
    Mutation("ready-on-any-active-policy", "READY=1 comes only once the declared policy is active",
             "iped/daemon/readiness.py", "return record.active_after is not None and record.active_after.name == want",
             "return record.active_after is not None",
             ("tests/daemon/test_readiness.py", "tests/daemon/test_loop_stop_and_ready.py",
              "tests/integration/test_as_deployed.py")),
    Mutation("kernel-error-exit-1", "a kernel error mid-apply exits 4",
             "iped/commands/__init__.py", "Outcome.FAILED: ExitCode.APPLY_FAILED", "Outcome.FAILED: ExitCode.FAILED",
             ("tests/integration/test_e2e.py", "tests/integration/test_cli_verbs.py")),
    Mutation("refused-start-restarts", "a refused start exits 78 (RestartPreventExitStatus=78)",
             "iped/daemon/readiness.py", "EXIT_START_REFUSED = 78", "EXIT_START_REFUSED = 1",
             ("tests/integration/test_as_deployed.py", "tests/project/test_systemd_unit.py")),
    Mutation("update-to-equal-version", "updates only under the kernel's anti-rollback rule (strictly higher)",
             "iped/daemon/plan.py", "if p.version.as_u64() > cur.version.as_u64():",
             "if p.version.as_u64() >= cur.version.as_u64():",
             ("tests/daemon/test_plan.py",)),
    Mutation("activate-lower-version", "never activates a lower version than the active policy's",
             "iped/daemon/plan.py", "if target.version.as_u64() < cur_v.as_u64():",
             "if target.version.as_u64() < cur_active.version.as_u64():",
             ("tests/daemon/test_plan.py",)),
    Mutation("no-read-back-of-activation", "each step read back",
             "iped/daemon/apply.py", 'ok = _read_back(backend, step, f"policies/{step.name}/active", _parse_flag)',
             "ok = True",
             ("tests/daemon/test_apply_faults.py",)),
    Mutation("delete-the-protected", "protected policies are never deleted",
             "iped/daemon/plan.py", "and not decl.protected(lp.name):", ":",
             ("tests/daemon/test_plan.py",)),
    Mutation("emulator-permissive-denies", "permissive mode audits what it would deny and blocks nothing",
             "iped/emulator/eval.py", "if deny and state.enforce:", "if deny:",
             ("tests/emulator/test_eval.py", "tests/emulator/test_hooks.py")),
    Mutation("stop-enforcing-when-declared", "never weakens enforcement: enforce off only when declared off",
             "iped/daemon/plan.py", "if not decl.enforce and actual.enforce:", "if actual.enforce:",
             ("tests/daemon/test_plan.py",)),
    Mutation("control-group-may-write", "the control group may read (status, plan), only root may change state",
             "iped/daemon/control.py", "if spec is None or not spec.read_only or self.read_gid is None:",
             "if spec is None or self.read_gid is None:",
             ("tests/daemon/test_control.py", "tests/integration/test_e2e.py")),
    Mutation("emulator-stale-update-einval", "the emulator gives the kernel's errno (ESTALE for a stale update)",
             "iped/emulator/policy.py",
             "raise kernel_error(errno.ESTALE, f\"version", "raise kernel_error(errno.EINVAL, f\"version",
             ("tests/emulator/test_policy_lifecycle.py", "tests/emulator/test_fs.py")),
    Mutation("unchanged-exits-0", "iped reload: nothing to change exits 9",
             "iped/commands/__init__.py", "Outcome.UNCHANGED: ExitCode.UNCHANGED", "Outcome.UNCHANGED: ExitCode.OK",
             ("tests/integration/test_cli_verbs.py", "tests/integration/test_e2e.py")),
    Mutation("survey-go-on-breaks", "iped survey: exit 0 = nothing that ran would be denied",
             "iped/commands/survey.py",
             'report.lines())))\n    return ExitCode.FAILED if report.breaks else ExitCode.OK',
             'report.lines())))\n    return ExitCode.OK',
             ("tests/rollout/test_survey.py",)),
    Mutation("validate-line-off-by-one", "iped validate: errors name the file and the line",
             "iped/commands/validate.py", 'where = self.path if self.line is None else f"{self.path}:{self.line}"',
             'where = self.path if self.line is None else f"{self.path}:{self.line + 1}"',
             ("tests/commands/test_validate.py",)),
    Mutation("in-sync-only-after-applied", "the metrics say in sync after an applied or unchanged reconcile",
             "iped/outcome.py", "IN_SYNC_OUTCOMES = frozenset({Outcome.APPLIED, Outcome.UNCHANGED})",
             "IN_SYNC_OUTCOMES = frozenset({Outcome.APPLIED})",
             ("tests/daemon/test_metrics.py",)),
    Mutation("rollback-keeps-the-version", "rollback re-signs with a higher version (the kernel's rule)",
             "iped/daemon/plan.py", "        return Version(v.major, v.minor, v.rev + 1)",
             "        return Version(v.major, v.minor, v.rev)",
             ("tests/daemon/test_runtime_state_dir.py", "tests/daemon/test_plan.py")),
    Mutation("relative-paths-from-cwd", "relative paths in iped.toml are relative to the file's directory",
             "iped/config.py", "    return p if p.is_absolute() else base / p", "    return p",
             ("tests/test_config.py", "tests/test_config_fast_path.py")),
    Mutation("apply-goes-on-after-a-failure", "a kernel error stops the apply; the steps after it are not written",
             "iped/daemon/apply.py",
             "            return ApplyResult(Outcome.FAILED, tuple(done), StepFailure(step, num, msg))",
             "            continue",
             ("tests/daemon/test_apply_faults.py",)),
    Mutation("rollback-writes-the-dropin-dir", "iped rollback writes to the state dir, never to /etc",
             "iped/daemon/rollback.py", "target = rec.plan_log.rolled_forward / f\"{cur.name}{dp.source.suffix}\"",
             "target = dp.source",
             ("tests/integration/test_e2e.py", "tests/integration/test_as_deployed.py")),
)


def copy_checkout(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", "*.egg-info")
    for part in ("iped", "tests", "etc", "systemd", "packaging", "docs"):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, dest / part, ignore=ignore, symlinks=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)


def run(m: Mutation, timeout: float) -> tuple[str, float]:
    """``killed``, ``SURVIVED``, ``timeout`` or ``stale`` (the code no longer holds the original line
    exactly once: update the table), and the seconds it took."""
    with tempfile.TemporaryDirectory(prefix=f"iped-mutant-{m.id}-") as tmp:
        work = Path(tmp)
        copy_checkout(work)
        target = work / m.file
        text = target.read_text(encoding="utf-8")
        if text.count(m.original) != 1:
            return "stale", 0.0
        target.write_text(text.replace(m.original, m.mutated), encoding="utf-8")
        env_probe = subprocess.run([sys.executable, "-c", "import iped; print(iped.__file__)"], cwd=work,
                                   env={"PYTHONPATH": str(work), "PATH": "/usr/bin:/bin"},
                                   capture_output=True, text=True, check=True, timeout=60)
        if not env_probe.stdout.startswith(str(work)):
            raise SystemExit(f"the mutant copy is not the iped imported: {env_probe.stdout.strip()}")
        start = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests],
                                  cwd=work, env={**_env(), "PYTHONPATH": str(work)},
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - start
        return ("killed" if proc.returncode != 0 else "SURVIVED"), time.monotonic() - start


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("IPED_")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run the mutations whose id contains one of these words")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutation (a hang is caught too)")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(w in m.id for w in args.only)]
    survivors = 0
    for m in chosen:
        verdict, took = run(m, args.timeout)
        survivors += verdict in ("SURVIVED", "stale")
        print(f"{verdict:<9} {took:6.1f}s  {m.id}: {m.promise} ({m.file})", flush=True)
    print(f"{len(chosen)} mutations, {survivors} survived")
    return survivors


if __name__ == "__main__":
    sys.exit(main())
