#!/usr/bin/env python3
"""Benchmark shadow mode: the exec latency it adds, and the executions per second it sustains.

Side by side, on a private tmpfs holding a copy of /bin/true (root needed: mount + fanotify):

* **exec latency**: an exec loop (posix_spawn + wait) without any watcher (the baseline), then
  with ``iped shadow`` watching that filesystem, alternating rounds so drift hits both alike.
  Shadow mode only receives notifications (FAN_OPEN_EXEC, never a permission event), so the
  goal is no measurable difference;
* **sustained rate**: the watcher's own CPU time (user + system, from wait4) over the executions
  it handled gives its cost per event, i.e. executions/s on one core; and, pinned to one CPU,
  the in-process cost of evaluating and logging one execution (``Shadow.on_exec`` on a real fd).
  Goal: >= 5,000 executions/s on one core. Lost events (queue overflows) are reported.

Prints numbers and ratios only (no pass/fail):

    .venv/bin/python benchmarks/bench_shadow.py [--execs 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POLICY = b"policy_name=bench policy_version=0.0.1\nDEFAULT action=ALLOW\nop=EXECUTE boot_verified=FALSE action=DENY\n"


def exec_loop(prog: str, n: int) -> list[float]:
    """Wall time of each of ``n`` executions of ``prog`` (spawn to reaped), in microseconds."""
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        pid = os.posix_spawn(prog, [prog], {})
        os.waitpid(pid, 0)
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def watched_round(prog: str, mnt: Path, policy: Path, n: int) -> tuple[list[float], dict[str, object], float]:
    """The exec loop with ``iped shadow`` watching: latencies, its counters, its CPU seconds.

    With ``n`` 0 the watcher starts and stops at once: the CPU it takes is its start-up cost.
    """
    stop = ["--count", str(n), "--duration", "600"] if n else ["--duration", "0"]
    argv = [sys.executable, "-m", "iped", "shadow", "--policy", str(policy), "--watch", str(mnt),
            *stop, "--json", "-o", os.devnull]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stderr is not None
    ready = proc.stderr.readline()
    if "evaluating executions" not in ready:
        proc.kill()
        raise SystemExit(f"iped shadow did not start: {ready}{proc.stderr.read()}")
    lat = exec_loop(prog, n)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    counters = json.loads(proc.stderr.read().strip().splitlines()[-1])
    return lat, counters, usage.ru_utime + usage.ru_stime


def in_process_rate(prog: Path, n: int) -> float:
    """``Shadow.on_exec`` per second on one CPU, on a real fd of the executable."""
    from iped.rollout.shadow import Shadow, ShadowLog

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    shadow = Shadow(POLICY, ShadowLog(io.StringIO()))
    fd = os.open(prog, os.O_RDONLY)
    pid = os.getpid()
    try:
        shadow.on_exec(fd, pid)
        t = time.perf_counter()
        for _ in range(n):
            shadow.on_exec(fd, pid)
        return n / (time.perf_counter() - t)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=2000, help="executions per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_shadow: needs root (tmpfs mount, fanotify filesystem marks)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="iped-bench-shadow-") as tmp:
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "iped-bench", str(mnt)], check=True)
        try:
            prog = mnt / "true"
            shutil.copy2("/bin/true", prog)
            policy = Path(tmp) / "bench.pol"
            policy.write_bytes(POLICY)
            base: list[float] = []
            watched: list[float] = []
            cpu = 0.0
            handled = overflows = 0
            for _ in range(args.rounds):
                base += exec_loop(str(prog), args.execs)
                lat, counters, seconds = watched_round(str(prog), mnt, policy, args.execs)
                watched += lat
                cpu += seconds
                shadow = counters["shadow"]
                assert isinstance(shadow, dict)
                handled += int(shadow["execs"])
                overflows += int(shadow["overflows"])
            _, _, startup = watched_round(str(prog), mnt, policy, 0)
            cpu -= startup * args.rounds
            rate = in_process_rate(prog, 20000)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    print(f"exec latency over {len(base)} executions per side (us)   p50     p95     mean")
    for name, xs in (("baseline (no watcher)", base), ("with iped shadow", watched)):
        print(f"  {name:<24} {pct(xs, 0.5):9.0f} {pct(xs, 0.95):7.0f} {statistics.fmean(xs):8.0f}")
    print(f"  ratio shadow/baseline      p50 {pct(watched, 0.5) / pct(base, 0.5):.3f}  "
          f"mean {statistics.fmean(watched) / statistics.fmean(base):.3f}")  # fmt: skip
    per_exec = cpu / max(handled, 1) * 1e6
    per_s = handled / cpu if cpu > 0 else 0.0
    print(f"watcher: {handled} executions handled, {overflows} queue overflows, {cpu:.2f} s CPU beyond start-up "
          f"-> {per_exec:.0f} us/exec = {per_s:,.0f} execs/s on one core")  # fmt: skip
    print(f"in-process Shadow.on_exec on one CPU: {rate:,.0f} execs/s (goal >= 5,000)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
