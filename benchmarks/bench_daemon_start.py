#!/usr/bin/env python3
"""Benchmark the daemon's start: exec -> READY=1, and its RSS right after READY (issue 15, rows 2-3).

Each run starts ``iped daemon --config <the example config, emulator backend>`` with a
``NOTIFY_SOCKET`` this script binds (an AF_UNIX datagram socket, as systemd's), times exec to the
``READY=1`` datagram, reads ``VmRSS`` from ``/proc/PID/status`` at once, and stops it with SIGTERM.
Runs alternate with the baseline, ``python3 -c pass`` on the same interpreter (its RSS read by
itself at exit). Prints p50/p95, the ratios, and whether the goals hold: p50 <= 300 ms, RSS <= 35 MB.
Besides wall time it reports the CPU time (utime + stime) each process used up to READY or exit:
start-up is one CPU-bound thread, so on a busy shared host the CPU time is what an idle machine's
wall time would be.

The config is etc/iped.toml with backend = emulator and the state dir, control socket and the
checkout's etc/policies.d put under a temp dir; ``--signing`` adds a dev signing key and
``active = "allow_all"`` (what ``iped daemon --dev`` runs: every start signs its .pol files);
``--signed`` is the production shape instead: the policies signed offline with ``iped sign``
(.p7s), the certificate a trust anchor, ``active = "allow_all"`` (every start verifies).

``--compare DIR`` also runs another checkout's daemon (``PYTHONPATH=DIR``, e.g. /work/main before
a change) in the same alternation, so before and after are measured side by side.

    .venv/bin/python benchmarks/bench_daemon_start.py [--runs 20] [--signing | --signed] [--compare DIR]
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
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_READY_MS = 300.0
GOAL_RSS_MB = 35.0
#: the baseline's own RSS, printed by itself as it exits
BASELINE_RSS = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"


def write_config(tmp: Path, signing: bool, signed: bool = False) -> Path:
    """etc/iped.toml made runnable unprivileged: emulator backend, paths under ``tmp``."""
    text = (ROOT / "etc" / "iped.toml").read_text()
    policies = ROOT / "etc" / "policies.d"
    if signed:  # the checkout's policies signed offline (`iped sign`), the certificate a trust anchor
        from iped.daemon.devkey import ensure_dev_key

        key, cert = ensure_dev_key(tmp / "offline-keys")
        policies = tmp / "policies.d"
        policies.mkdir()
        for pol in sorted((ROOT / "etc" / "policies.d").glob("*.pol")):
            out = policies / (pol.stem + ".p7s")
            subprocess.run([str(Path(sys.executable).with_name("iped")), "sign", "--key", str(key), "--cert",
                            str(cert), "-o", str(out), str(pol)], check=True, capture_output=True)  # fmt: skip
    subs = {
        r'(?m)^dir = .*$': f'dir = "{policies}"',
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
    if signed:
        subs[r'(?m)^# active = .*$'] = 'active = "allow_all"'
        subs[r'(?m)^trust_anchors = .*$'] = f'trust_anchors = ["{cert}"]'
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


def cpu_ms(pid: int) -> float:
    """utime + stime of ``pid`` so far (/proc/PID/stat fields 14 and 15, clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class Run(NamedTuple):
    wall_ms: float  # exec -> READY=1 (daemon) or exit (baseline)
    cpu_ms: float  # user + system CPU over the same span: what an idle machine's wall time would be
    rss_kib: int


def start_to_ready(config: Path, notify: socket.socket, env: dict[str, str]) -> Run:
    """One daemon start, measured at READY=1."""
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
                return Run(ms, cpu_ms(proc.pid), vm_rss_kib(proc.pid))
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode} before READY=1")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def baseline(env: dict[str, str]) -> Run:
    """``python3 -c pass``, timed to its exit; its RSS from a second, self-reporting run."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    ms = (time.perf_counter() - t) * 1000
    out = subprocess.run([sys.executable, "-c", BASELINE_RSS], env=env, check=True, capture_output=True, text=True)
    return Run(ms, (usage.ru_utime + usage.ru_stime) * 1000, int(out.stdout))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--signing", action="store_true", help="dev signing key + active policy (as --dev)")
    ap.add_argument("--signed", action="store_true",
                    help="policies signed offline (.p7s), their certificate a trust anchor, one active")  # fmt: skip
    ap.add_argument("--compare", metavar="DIR", type=Path, help="another checkout to run side by side")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="iped-bench-start-"))
    config = write_config(tmp, args.signing, args.signed)
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "WATCHDOG_USEC")}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(os.fspath(tmp / "notify.sock"))
        env["NOTIFY_SOCKET"] = os.fspath(tmp / "notify.sock")
        other_env = {**env, "PYTHONPATH": os.fspath(args.compare.resolve())} if args.compare else None
        start_to_ready(config, notify, env)  # warm-up: page cache, state dir created
        if other_env is not None:
            start_to_ready(config, notify, other_env)
        daemon, base, other = [], [], []
        for _ in range(args.runs):  # alternating, so all see the same machine load
            daemon.append(start_to_ready(config, notify, env))
            base.append(baseline(env))
            if other_env is not None:
                other.append(start_to_ready(config, notify, other_env))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}; "
          f"runs {args.runs}; config: example, emulator backend{', signing key + active' if args.signing else ''}"
          f"{', offline-signed policies + trust anchor + active' if args.signed else ''}")
    rows = [("iped daemon exec -> READY=1", daemon), ("python3 -c pass", base)]
    if other:
        rows.append((f"{args.compare} daemon", other))
    for label, runs in rows:
        wall, cpu = [r.wall_ms for r in runs], [r.cpu_ms for r in runs]
        rss = statistics.median(r.rss_kib for r in runs) / 1024
        print(f"  {label:<30} wall p50 {statistics.median(wall):7.1f} ms  p95 {pct(wall, 0.95):7.1f} ms   "
              f"cpu p50 {statistics.median(cpu):6.1f} ms   VmRSS p50 {rss:5.1f} MB")
    p50, p50b = statistics.median(r.wall_ms for r in daemon), statistics.median(r.wall_ms for r in base)
    c50, c50b = statistics.median(r.cpu_ms for r in daemon), statistics.median(r.cpu_ms for r in base)
    r50 = statistics.median(r.rss_kib for r in daemon) / 1024
    print(f"  ratio daemon/baseline (p50): wall {p50 / p50b:.2f}x, cpu {c50 / c50b:.2f}x")
    if other:
        print(f"  this tree / {args.compare}: wall {p50 / statistics.median(r.wall_ms for r in other):.2f}x, "
              f"cpu {c50 / statistics.median(r.cpu_ms for r in other):.2f}x, "
              f"VmRSS {r50 / (statistics.median(r.rss_kib for r in other) / 1024):.2f}x")
    print(f"  goal READY p50 <= {GOAL_READY_MS:.0f} ms: wall {'met' if p50 <= GOAL_READY_MS else 'NOT met'} "
          f"({p50 / GOAL_READY_MS:.2f} of it); cpu {'met' if c50 <= GOAL_READY_MS else 'NOT met'} "
          f"({c50 / GOAL_READY_MS:.2f} of it)")
    print(f"  goal RSS <= {GOAL_RSS_MB:.0f} MB: {'met' if r50 <= GOAL_RSS_MB else 'NOT met'} "
          f"({r50 / GOAL_RSS_MB:.2f} of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
