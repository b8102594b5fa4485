#!/usr/bin/env python3
"""Benchmark `status` latency on the control socket while hostile clients abuse it.

Baseline: status requests on an idle daemon. Under abuse, run side by side against the same
daemon: clients that flood `status` requests and never read the replies, hundreds of idle
connections (more than the client cap), and a thread that connects, writes garbage and hangs up
in a loop. Prints p50/p99 of each and the ratio to the baseline (no pass/fail): the goal is
p99 <= 100 ms under abuse (issue 13).

    .venv/bin/python benchmarks/bench_control_abuse.py [--requests 300] [--hogs 10] [--idle 400]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_daemon import start_daemon  # noqa: E402 (benchmarks/ is the script's directory)

from tests.helpers.daemon import clients  # noqa: E402


def status_ms(sock: Path) -> float:
    """One `status` through the CLI's own client (it waits on a full accept queue)."""
    from iped.daemon.client import request

    t = time.perf_counter()
    reply = request(sock, "status", timeout=60)
    assert reply["ok"], reply
    return (time.perf_counter() - t) * 1000


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def series(sock: Path, n: int) -> list[float]:
    return [status_ms(sock) for _ in range(n)]


def garbage_loop(sock: Path, stop: multiprocessing.synchronize.Event) -> None:
    junk = [os.urandom(4096), b"[" * 30000 + b"\n", b'{"op": "reload", "dry_run": true}\n', b"\xff\n" * 500]
    i = 0
    while not stop.is_set():
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(os.fspath(sock))
            s.sendall(junk[i % len(junk)])
        i += 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--hogs", type=int, default=10, help="clients that flood requests and never read")
    ap.add_argument("--idle", type=int, default=400, help="idle connections held open")
    args = ap.parse_args()
    daemon, sock, _ = start_daemon(Path(tempfile.mkdtemp(prefix="iped-bench-abuse-")))
    stop = multiprocessing.Event()
    try:
        baseline = series(sock, args.requests)
        with clients(sock, args.hogs) as hogs, clients(sock, args.idle) as idle:
            for s in hogs:
                with contextlib.suppress(OSError):
                    s.send(b'{"op": "status"}\n' * 4000)
            # a process, not a thread: the measuring client must not wait for the flooder's GIL
            flooder = multiprocessing.Process(target=garbage_loop, args=(sock, stop), daemon=True)
            flooder.start()
            abused = series(sock, args.requests)
            stop.set()
            flooder.join()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)
    print(f"status requests: {args.requests} each; abuse: {len(hogs)} never-reading flooders, "
          f"{len(idle)} idle connections, a garbage connect loop")
    for label, xs in (("baseline (idle daemon)", baseline), ("under abuse", abused)):
        print(f"  {label:<24} p50 {statistics.median(xs):7.2f} ms   p99 {pct(xs, 0.99):7.2f} ms   "
              f"max {max(xs):7.2f} ms")
    p99 = pct(abused, 0.99)
    print(f"  p99 under abuse / baseline p99: {p99 / pct(baseline, 0.99):.2f}x; "
          f"target p99 <= 100 ms: {p99:.2f} ms -> ratio {p99 / 100:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
