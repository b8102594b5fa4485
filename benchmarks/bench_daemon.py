#!/usr/bin/env python3
"""Benchmark the daemon on the emulator: reload latency and `iped status` start-up cost.

Prints numbers and ratios only (no pass/fail): targets are p50(reload -> active) <= 50 ms and
`iped status` wall time <= 2x `python3 -c pass` (CPU time printed beside it: the steadier figure on
a shared host). The package is byte-compiled first, as an installed one is.

    .venv/bin/python benchmarks/bench_daemon.py [--reloads 100]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def request(sock: Path, op: str) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.fspath(sock))
        s.sendall(json.dumps({"op": op}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(1 << 20)
    reply: dict[str, Any] = json.loads(buf)
    return reply


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def wall(argv: list[str], n: int, env: dict[str, str], cpu: list[float] | None = None) -> list[float]:
    """Wall ms of ``n`` runs of ``argv``; with ``cpu``, each run's user + system CPU ms appended to it."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        _, _, usage = os.wait4(proc.pid, 0)
        out.append((time.perf_counter() - t) * 1000)
        if cpu is not None:
            cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
    return out


def byte_compile(root: Path) -> None:
    """The package's bytecode, as an installed package has it (pip and dpkg byte-compile): with
    PYTHONDONTWRITEBYTECODE set, or a tree never imported, every start would compile the
    sources, a cost no installed daemon or CLI pays."""
    import compileall

    compileall.compile_dir(root / "iped", quiet=1)
    compileall.compile_dir(root / "tests" / "helpers", quiet=1)


def start_daemon(tmp: Path) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    """An emulator daemon on one ALLOW policy in ``tmp``, answering ping: (process, socket, env)."""
    from iped.daemon.devkey import ensure_dev_key

    key, cert = ensure_dev_key(tmp / "keys")
    (tmp / "p").mkdir()
    (tmp / "p" / "base.pol").write_text("policy_name=base policy_version=0.0.1\nDEFAULT action=ALLOW\n")
    (tmp / "iped.toml").write_text(
        f'[policies]\ndir = "p"\nactive = "base"\nsigning_key = "{key}"\nsigning_cert = "{cert}"\n'
        '[daemon]\nbackend = "emulator"\nstate_dir = "s"\ncontrol_socket = "ctl.sock"\ndebounce_ms = 60000\n')
    sock = tmp / "ctl.sock"
    env = {**os.environ}
    env.pop("NOTIFY_SOCKET", None)
    daemon = subprocess.Popen([sys.executable, "-m", "iped", "daemon", "--config", str(tmp / "iped.toml")],
                              cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if request(sock, "ping")["ok"]:
                return daemon, sock, env
        except OSError:
            time.sleep(0.05)
    daemon.kill()
    raise RuntimeError("the daemon did not answer ping within 30 s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reloads", type=int, default=100)
    ap.add_argument("--status-runs", type=int, default=20)
    args = ap.parse_args()
    byte_compile(ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="iped-bench-"))
    daemon, sock, env = start_daemon(tmp)
    try:
        cli, wire, inside = [], [], []
        for i in range(args.reloads):
            text = f"policy_name=base policy_version=0.{i + 1}.0\nDEFAULT action=ALLOW\n# rev {i}\n"
            (tmp / "p" / "base.pol").write_text(text)
            t = time.perf_counter()
            if i % 2 == 0:  # alternate: the CLI process, and the bare socket request
                rc = subprocess.run([sys.executable, "-m", "iped", "reload", "--socket", str(sock), "--json"],
                                    capture_output=True, text=True, cwd=ROOT, env=env, check=False)
                dt = (time.perf_counter() - t) * 1000
                rec = json.loads(rc.stdout)
                cli.append(dt)
            else:
                reply = request(sock, "reload")
                dt = (time.perf_counter() - t) * 1000
                rec = reply["result"]
                wire.append(dt)
            assert rec["outcome"] == "applied", rec
            inside.append(float(rec["duration_ms"]))
        st = request(sock, "status")["result"]
        assert st["active"]["version"] == f"0.{args.reloads}.0", st["active"]
        # alternated, one run of each at a time: a busy machine's load then weighs on both alike
        py: list[float] = []
        status: list[float] = []
        py_cpu: list[float] = []
        status_cpu: list[float] = []
        for _ in range(args.status_runs):
            py += wall([sys.executable, "-c", "pass"], 1, env, py_cpu)
            status += wall([sys.executable, "-m", "iped", "status", "--socket", str(sock)], 1, env, status_cpu)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)
    print(f"reloads: {args.reloads} (each a new policy version: update on the emulator, read back active)")
    for label, xs in (("daemon-side reconcile", inside), ("socket request (reload -> active)", wire),
                      ("`iped reload` process (reload -> active)", cli)):
        print(f"  {label:<42} p50 {statistics.median(xs):7.2f} ms   p95 {pct(xs, 0.95):7.2f} ms   n={len(xs)}")
    p50 = statistics.median(wire)
    print(f"  target p50 <= 50 ms (socket request): {p50:.2f} ms -> ratio {p50 / 50:.2f}")
    ps, pp = statistics.median(status), statistics.median(py)
    cs, cp = statistics.median(status_cpu), statistics.median(py_cpu)
    print(f"iped status: p50 {ps:.1f} ms, {cs:.1f} ms CPU; python3 -c pass: p50 {pp:.1f} ms, {cp:.1f} ms CPU; "
          f"ratio {ps / pp:.2f}x wall, {cs / cp:.2f}x CPU (target <= 2x); "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
