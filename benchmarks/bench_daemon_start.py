#!/usr/bin/env python3
"""Benchmark the daemon's start: exec -> READY=1, and its RSS right after READY (issue 15, rows 2-3).

Each run starts ``iped daemon --config <the example config, emulator backend>`` with a
``NOTIFY_SOCKET`` this script binds (an AF_UNIX datagram socket, as systemd's), times exec to the
``READY=1`` datagram, reads ``VmRSS`` from ``/proc/PID/status`` at once, and stops it with SIGTERM.
Runs alternate with the baseline, ``python3 -c pass`` on the same interpreter (its RSS read by
itself at exit). Prints p50/p95, the ratios, and whether the goals hold: p50 <= 300 ms, RSS <= 35 MB.

The config is etc/iped.toml with backend = emulator and the state dir, control socket and the
checkout's etc/policies.d put under a temp dir; ``--signing`` adds a dev signing key and
``active = "allow_all"`` (what ``iped daemon --dev`` runs: every start signs its .pol files).

    .venv/bin/python benchmarks/bench_daemon_start.py [--runs 20] [--signing]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_READY_MS = 300.0
GOAL_RSS_MB = 35.0
#: the baseline's own RSS, printed by itself as it exits
BASELINE_RSS = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"


def write_config(tmp: Path, signing: bool) -> Path:
    """etc/iped.toml made runnable unprivileged: emulator backend, paths under ``tmp``."""
    text = (ROOT / "etc" / "iped.toml").read_text()
    subs = {
        r'(?m)^dir = .*$': f'dir = "{ROOT / "etc" / "policies.d"}"',
        r'(?m)^backend = .*$': 'backend = "emulator"',
        r'(?m)^state_dir = .*$': 'state_dir = "state"',
        r'(?m)^control_socket = .*$': 'control_socket = "ctl.sock"',
        r'(?m)^control_group = .*$': '',
    }
    if signing:
        from iped.daemon.devkey import ensure_dev_key

        key, cert = ensure_dev_key(tmp / "keys")
        subs[r'(?m)^# active = .*$'] = 'active = "allow_all"'
        subs[r'(?m)^# signing_key = .*$'] = f'signing_key = "{key}"'
        subs[r'(?m)^# signing_cert = .*$'] = f'signing_cert = "{cert}"'
    for pattern, repl in subs.items():
        text, n = re.subn(pattern, repl, text)
        assert n == 1, f"etc/iped.toml changed shape: {pattern!r} matched {n} times"
    path = tmp / "iped.toml"
    path.write_text(text)
    return path


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_to_ready(config: Path, notify: socket.socket, env: dict[str, str]) -> tuple[float, int]:
    """One daemon start: (ms from exec to READY=1, VmRSS KiB right after READY)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "iped", "daemon", "--config", str(config)],
                            env=env, cwd=config.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = t + 60
        while True:
            notify.settimeout(max(0.01, deadline - time.perf_counter()))
            msg = notify.recv(4096).decode()
            if "READY=1" in msg.split("\n"):
                ms = (time.perf_counter() - t) * 1000
                return ms, vm_rss_kib(proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode} before READY=1")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def baseline(env: dict[str, str]) -> tuple[float, int]:
    """``python3 -c pass``, timed to its exit; its RSS from a second, self-reporting run."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    ms = (time.perf_counter() - t) * 1000
    out = subprocess.run([sys.executable, "-c", BASELINE_RSS], env=env, check=True, capture_output=True, text=True)
    return ms, int(out.stdout)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--signing", action="store_true", help="dev signing key + active policy (as --dev)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="iped-bench-start-"))
    config = write_config(tmp, args.signing)
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "WATCHDOG_USEC")}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(os.fspath(tmp / "notify.sock"))
        env["NOTIFY_SOCKET"] = os.fspath(tmp / "notify.sock")
        start_to_ready(config, notify, env)  # warm-up: page cache, state dir created
        ready, rss, base, base_rss = [], [], [], []
        for _ in range(args.runs):  # alternating, so both see the same machine load
            ms, kib = start_to_ready(config, notify, env)
            ready.append(ms)
            rss.append(kib / 1024)
            ms, kib = baseline(env)
            base.append(ms)
            base_rss.append(kib / 1024)
    p50, p50b = statistics.median(ready), statistics.median(base)
    r50 = statistics.median(rss)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}; "
          f"runs {args.runs}; config: example, emulator backend{', signing key + active' if args.signing else ''}")
    print(f"  iped daemon exec -> READY=1   p50 {p50:7.1f} ms   p95 {pct(ready, 0.95):7.1f} ms")
    print(f"  python3 -c pass               p50 {p50b:7.1f} ms   p95 {pct(base, 0.95):7.1f} ms")
    print(f"  ratio daemon/baseline (p50)   {p50 / p50b:.2f}x")
    print(f"  VmRSS after READY             p50 {r50:7.1f} MB   max {max(rss):7.1f} MB   "
          f"(bare interpreter {statistics.median(base_rss):.1f} MB)")
    print(f"  goal READY p50 <= {GOAL_READY_MS:.0f} ms: {'met' if p50 <= GOAL_READY_MS else 'NOT met'} "
          f"({p50 / GOAL_READY_MS:.2f} of it)")
    print(f"  goal RSS <= {GOAL_RSS_MB:.0f} MB: {'met' if r50 <= GOAL_RSS_MB else 'NOT met'} "
          f"({r50 / GOAL_RSS_MB:.2f} of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
