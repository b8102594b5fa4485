#!/usr/bin/env python3
"""``iped daemon`` start -> READY=1 and its RSS after start, vs ``python3 -c pass``.

The daemon runs on the emulator backend with the example configuration (etc/iped.toml and
etc/policies.d, copied to a temporary directory with the state directory, control socket and
backend pointed there, and a development signing key). The benchmark listens on a
``NOTIFY_SOCKET`` of its own, as systemd does for a ``Type=notify`` unit, and times from
``Popen`` to the READY=1 datagram; then it reads the daemon's VmRSS and VmHWM from /proc and
stops it with SIGTERM. ``python3 -c pass`` (same interpreter) is timed the same way, to its
exit, alternating with the daemon runs; medians of ``--runs``. Goals (issue 15): READY
<= 0.3 s, RSS <= 35 MB.

``--importtime`` also runs the daemon once under ``python -X importtime`` and prints the
modules that cost most (cumulative microseconds, as ``-X importtime`` reports them).

Usage: .venv/bin/python benchmarks/bench_daemon_start.py [--runs N] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
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


def example_config(tmp: Path) -> Path:
    """etc/iped.toml with the backend, policies dir, state dir and socket in ``tmp``, and a dev key."""
    from iped.daemon.devkey import ensure_dev_key

    key, cert = ensure_dev_key(tmp / "keys")
    shutil.copytree(ROOT / "etc" / "policies.d", tmp / "policies.d")
    text = (ROOT / "etc" / "iped.toml").read_text()
    values = {
        "dir": f'"{tmp / "policies.d"}"',
        "backend": '"emulator"',
        "state_dir": f'"{tmp / "state"}"',
        "control_socket": f'"{tmp / "ctl.sock"}"',
    }
    for key_name, value in values.items():
        text = re.sub(rf"(?m)^{key_name}\s*=.*$", f"{key_name} = {value}", text)
    text = re.sub(r"(?m)^\[policies\]$", f'[policies]\nsigning_key = "{key}"\nsigning_cert = "{cert}"', text)
    config = tmp / "iped.toml"
    config.write_text(text)
    return config


def vm(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def start_daemon(config: Path, tmp: Path, extra: list[str] | None = None) -> tuple[float, float, float, str]:
    """Seconds to READY=1, RSS and peak RSS (MiB) right after, and the daemon's stderr."""
    notify_path = tmp / "notify.sock"
    notify_path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(60)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        env.pop("WATCHDOG_USEC", None)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *(extra or []), "-m", "iped", "daemon", "--config", str(config)],
                                env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            while True:
                try:
                    msg = notify.recv(4096).decode()
                except TimeoutError:
                    raise RuntimeError("no READY=1 within 60 s") from None
                if "READY=1" in msg.split("\n"):
                    ready = time.perf_counter() - t0
                    break
            rss, hwm = vm(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    return ready, rss, hwm, err.decode(errors="replace")


def python_pass() -> tuple[float, float]:
    """Wall seconds of ``python3 -c pass``, and the peak RSS (MiB) of such an interpreter.

    The RSS comes from a second run that prints its own VmHWM: a child's ``ru_maxrss`` starts
    from its parent's at fork, and this parent holds more than a bare interpreter.
    """
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    wall = time.perf_counter() - t0
    out = subprocess.run([sys.executable, "-c", "print(open('/proc/self/status').read())"],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    hwm = next(line for line in out.splitlines() if line.startswith("VmHWM:"))
    return wall, int(hwm.split()[1]) / 1024


def importtime(config: Path, tmp: Path, top: int = 20) -> None:
    *_, err = start_daemon(config, tmp, ["-X", "importtime"])
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(1)), len(m.group(3)) // 2, m.group(4)))
    total = sum(own for _, own, _, _ in rows)
    print(f"-X importtime: {len(rows)} modules, {total / 1000:.0f} ms of imports in all; the top {top} (cumulative):")
    for cumulative, own, depth, name in sorted(rows, reverse=True)[:top]:
        print(f"  {cumulative / 1000:7.1f} ms cumulative {own / 1000:6.1f} ms own  {'  ' * min(depth, 6)}{name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--importtime", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="iped-start-") as name:
        tmp = Path(name)
        config = example_config(tmp)
        ready: list[float] = []
        rss: list[float] = []
        hwm: list[float] = []
        base: list[float] = []
        base_rss: list[float] = []
        for run in range(args.runs):
            for side in ("daemon", "python") if run % 2 == 0 else ("python", "daemon"):
                if side == "daemon":
                    r, m, h, _ = start_daemon(config, tmp)
                    ready.append(r)
                    rss.append(m)
                    hwm.append(h)
                else:
                    t, m = python_pass()
                    base.append(t)
                    base_rss.append(m)
            print(f"run {run + 1}: READY after {ready[-1]:.3f} s, RSS {rss[-1]:.1f} MiB (peak {hwm[-1]:.1f}); "
                  f"python3 -c pass {base[-1]:.3f} s")  # fmt: skip
        r, b = statistics.median(ready), statistics.median(base)
        print(f"iped daemon start -> READY=1: {r:.3f} s median of {args.runs} ({min(ready):.3f} best); "
              f"python3 -c pass {b:.3f} s; ratio {r / b:.1f}x; goal <= 0.3 s: {'OK' if r <= 0.3 else 'NOT MET'}")
        m = statistics.median(rss)
        print(f"RSS after start: {m:.1f} MiB median (peak {statistics.median(hwm):.1f}); python3 -c pass "
              f"{statistics.median(base_rss):.1f} MiB; goal <= 35 MB ({35e6 / 2**20:.1f} MiB): "
              f"{'OK' if m * 2**20 <= 35e6 else 'NOT MET'}")  # fmt: skip
        if args.importtime:
            importtime(config, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
