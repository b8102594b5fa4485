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

``--production`` measures the installed shape after the first boot: ``--signed``'s config, the
daemon run through the tests' entry point (tests/helpers/iped_with_hooks.py) with
``IPED_EMULATOR_STATE``, whose journal -- written by one priming start, each blob verified by the
emulator then -- makes every measured start's emulator hold exactly the declared ``.p7s`` blobs,
as a kernel holds them across a daemon's restarts (replayed without a second verification). Two
shapes alternate with the baseline: ``held`` (the daemon compares each file with the kernel's
``pkcs7`` read-back and verifies nothing) and ``new blob`` (the same texts re-signed: bytes the
kernel does not hold, so each start verifies them first, in a short-lived child, and the plan
records their signer). Goals: READY <= 5x ``python3 -c pass``, VmRSS at READY <= 30 MB, in both.

Before measuring, the package (and ``--compare DIR``'s) is byte-compiled, as an installed one is:
under ``PYTHONDONTWRITEBYTECODE`` every start would otherwise compile its modules from source.

``--compare DIR`` also runs another checkout's daemon (``PYTHONPATH=DIR``, e.g. /work/main before
a change) in the same alternation, so before and after are measured side by side (with
``--production``: its held shape, through its own entry point).

    .venv/bin/python benchmarks/bench_daemon_start.py [--runs 20] [--signing | --signed | --production] [--compare DIR]
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
#: --production: READY within this many times ``python3 -c pass``, and this VmRSS at READY
GOAL_PRODUCTION_RATIO = 5.0
GOAL_PRODUCTION_RSS_MB = 30.0
HOOKS = ROOT / "tests" / "helpers" / "iped_with_hooks.py"
#: the baseline's own RSS, printed by itself as it exits
BASELINE_RSS = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"


def sign_policies(tmp: Path, policies: Path) -> None:
    """The checkout's policies signed offline (`iped sign`) into ``policies`` (ECDSA: every
    signing gives other bytes), with the key and certificate under ``tmp/offline-keys``."""
    from iped.daemon.devkey import ensure_dev_key

    key, cert = ensure_dev_key(tmp / "offline-keys")
    policies.mkdir(exist_ok=True)
    for pol in sorted((ROOT / "etc" / "policies.d").glob("*.pol")):
        out = policies / (pol.stem + ".p7s")
        subprocess.run([str(Path(sys.executable).with_name("iped")), "sign", "--key", str(key), "--cert",
                        str(cert), "-o", str(out), str(pol)], check=True, capture_output=True)  # fmt: skip


def write_config(tmp: Path, signing: bool, signed: bool = False, policies: Path | None = None) -> Path:
    """etc/iped.toml made runnable unprivileged: emulator backend, paths under ``tmp``."""
    text = (ROOT / "etc" / "iped.toml").read_text()
    if signed:  # the checkout's policies signed offline (`iped sign`), the certificate a trust anchor
        from iped.daemon.devkey import ensure_dev_key

        _, cert = ensure_dev_key(tmp / "offline-keys")
        if policies is None:
            policies = tmp / "policies.d"
            sign_policies(tmp, policies)
    else:
        policies = ROOT / "etc" / "policies.d"
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


def byte_compile(root: Path) -> None:
    """The package's bytecode, as an installed package has it (pip and dpkg byte-compile): with
    PYTHONDONTWRITEBYTECODE set, or a tree never imported, every start would compile ~60
    modules' sources, a cost no installed daemon pays (and most of the CPU the gap to 5x was)."""
    import compileall

    compileall.compile_dir(root / "iped", quiet=1)
    compileall.compile_dir(root / "tests" / "helpers", quiet=1)


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_ms(pid: int) -> float:
    """CPU time of ``pid``'s threads so far: /proc/PID/task/*/schedstat (nanoseconds; the clock
    ticks of /proc/PID/stat are 10 ms, a twelfth of a start), else utime + stime from stat."""
    try:
        return sum(int(Path(t, "schedstat").read_text().split()[0])
                   for t in Path(f"/proc/{pid}/task").iterdir()) / 1e6  # fmt: skip
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


class Run(NamedTuple):
    wall_ms: float  # exec -> READY=1 (daemon) or exit (baseline)
    cpu_ms: float  # user + system CPU over the same span: what an idle machine's wall time would be
    rss_kib: int


def start_to_ready(config: Path, notify: socket.socket, env: dict[str, str], hooks: bool | Path = False) -> Run:
    """One daemon start, measured at READY=1 (``hooks``: through the tests' entry point, this
    tree's or the one at that path)."""
    entry = [str(hooks if isinstance(hooks, Path) else HOOKS)] if hooks else ["-m", "iped"]
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *entry, "daemon", "--config", str(config)],
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


def summary(label: str, runs: list[Run]) -> str:
    wall, cpu = [r.wall_ms for r in runs], [r.cpu_ms for r in runs]
    rss = statistics.median(r.rss_kib for r in runs) / 1024
    return (f"  {label:<34} wall p50 {statistics.median(wall):7.1f} ms  p95 {pct(wall, 0.95):7.1f} ms   "
            f"cpu p50 {statistics.median(cpu):6.1f} ms   VmRSS p50 {rss:5.1f} MB")  # fmt: skip


def signers_recorded(state: Path) -> set[str]:
    """The signers the newest plan record names (a held blob: the kernel's verdict; a verified
    one: its certificate's subject)."""
    import json

    plans = sorted((state / "plans").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not plans:
        return set()
    found: set[str] = set()

    def walk(x: object) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "signer" and isinstance(v, str):
                    found.add(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(json.loads(plans[-1].read_text()))
    return found


def production(runs: int, compare: Path | None = None) -> int:
    """``--production``: see the module docstring."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="iped-bench-prod-"))
    held_dir, new_dir = tmp / "held", tmp / "new"
    held_dir.mkdir()
    new_dir.mkdir()
    held_cfg = write_config(held_dir, False, signed=True)
    # the same texts re-signed with the same key: bytes the kernel does not hold
    shutil.copytree(held_dir / "offline-keys", new_dir / "offline-keys")
    sign_policies(new_dir, new_dir / "policies.d")
    new_cfg = write_config(new_dir, False, signed=True, policies=new_dir / "policies.d")
    assert all((held_dir / "policies.d" / p.name).read_bytes() != p.read_bytes()
               for p in (new_dir / "policies.d").iterdir())  # fmt: skip
    journal = tmp / "emulator.journal"
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "WATCHDOG_USEC")}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(os.fspath(tmp / "notify.sock"))
        env["NOTIFY_SOCKET"] = os.fspath(tmp / "notify.sock")

        def start(config: Path, other: Path | None = None) -> Run:
            run_journal = config.parent / "emulator.journal"
            shutil.copyfile(journal, run_journal)  # the kernel as the priming start left it
            run_env = {**env, "IPED_EMULATOR_STATE": os.fspath(run_journal)}
            if other is None:
                return start_to_ready(config, notify, run_env, hooks=True)
            # the other checkout's entry point and package (cwd is the config's dir, not a tree)
            other_hooks = other / HOOKS.relative_to(ROOT)
            return start_to_ready(config, notify, {**run_env, "PYTHONPATH": os.fspath(other)}, hooks=other_hooks)

        # priming: the first boot, the emulator verifies and takes the blobs (journaled)
        start_to_ready(held_cfg, notify, {**env, "IPED_EMULATOR_STATE": os.fspath(journal)}, hooks=True)
        start(held_cfg)  # warm-up: page cache
        start(new_cfg)
        if compare is not None:
            start(held_cfg, compare)
        held, new, base, other = [], [], [], []
        for _ in range(runs):  # alternating, so all see the same machine load
            held.append(start(held_cfg))
            base.append(baseline(env))
            new.append(start(new_cfg))
            if compare is not None:
                other.append(start(held_cfg, compare))
    from iped.daemon.reconcile import KERNEL_VERIFIED

    held_signers, new_signers = signers_recorded(held_dir / "state"), signers_recorded(new_dir / "state")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {load}; runs {runs}; production shape: "
          f"offline-signed .p7s + trust anchor + active, the emulator holding the blobs from an earlier start "
          f"(IPED_EMULATOR_STATE)")
    print(summary("held: kernel holds these blobs", held))
    print(summary("new blob: verified first", new))
    print(summary("python3 -c pass", base))
    if compare is not None:
        print(summary(f"held, {compare}", other))
    print(f"  plan records: held -> signers {sorted(held_signers)}; new blob -> {sorted(new_signers)}")
    ok = True
    if held_signers != {KERNEL_VERIFIED} or not new_signers or KERNEL_VERIFIED in new_signers:
        print("  the shapes did not do what they say (held blobs verified, or new blobs not): NOT a valid run")
        ok = False
    b_wall, b_cpu = statistics.median(r.wall_ms for r in base), statistics.median(r.cpu_ms for r in base)
    for label, xs in (("held", held), ("new blob", new)):
        wall, cpu = statistics.median(r.wall_ms for r in xs), statistics.median(r.cpu_ms for r in xs)
        rss = statistics.median(r.rss_kib for r in xs) / 1024
        r_wall, r_cpu = wall / b_wall, cpu / b_cpu
        print(f"  {label}: READY {r_wall:.2f}x python3 -c pass wall, {r_cpu:.2f}x cpu "
              f"(goal <= {GOAL_PRODUCTION_RATIO:g}x: wall {'met' if r_wall <= GOAL_PRODUCTION_RATIO else 'NOT met'}, "
              f"cpu {'met' if r_cpu <= GOAL_PRODUCTION_RATIO else 'NOT met'}); VmRSS {rss:.1f} MB "
              f"(goal <= {GOAL_PRODUCTION_RSS_MB:g} MB: {'met' if rss <= GOAL_PRODUCTION_RSS_MB else 'NOT met'})")
    if compare is not None:
        o_wall, o_cpu = statistics.median(r.wall_ms for r in other), statistics.median(r.cpu_ms for r in other)
        print(f"  held, {compare}: READY {o_wall / b_wall:.2f}x python3 -c pass wall, {o_cpu / b_cpu:.2f}x cpu; "
              f"this tree / it: wall {statistics.median(r.wall_ms for r in held) / o_wall:.2f}x, "
              f"cpu {statistics.median(r.cpu_ms for r in held) / o_cpu:.2f}x")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--signing", action="store_true", help="dev signing key + active policy (as --dev)")
    ap.add_argument("--signed", action="store_true",
                    help="policies signed offline (.p7s), their certificate a trust anchor, one active")  # fmt: skip
    ap.add_argument("--production", action="store_true",
                    help="--signed with the emulator already holding the blobs (held) and re-signed ones (new blob)")
    ap.add_argument("--compare", metavar="DIR", type=Path, help="another checkout to run side by side")
    args = ap.parse_args()
    byte_compile(ROOT)
    if args.compare:
        byte_compile(args.compare.resolve())
    if args.production:
        return production(args.runs, args.compare.resolve() if args.compare else None)
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
