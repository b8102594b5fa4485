#!/usr/bin/env python3
"""The daemon's audit follower: IPE access events/s on one core, and what it does with overload.

Records travel as the kernel multicasts them on the audit netlink group -- one record per
datagram, ``struct nlmsghdr`` + ``audit(S.MS:N): body`` -- over a ``socketpair(AF_UNIX,
SOCK_SEQPACKET)`` (message boundaries kept; an 8 MiB buffer like the follower's netlink receive
buffer). The sender, ``audit_frames send`` (benchmarks/audit_frames.c, compiled here with gcc),
writes IPE access events shaped as with ``success_audit=1`` (1420 ALLOW, SYSCALL, PROCTITLE,
EOE; a new serial each) at a paced rate, non-blocking: a record that finds the buffer full is
dropped and counted, as the kernel drops a multicast record when the reader is behind (rate 0:
as fast as the reader takes them, blocking, nothing dropped).

Two readers take the same stream in turn:

* iped: the daemon's path, ``Follower(_Netlink(counters, src=NetlinkSource.over(sock)))`` --
  ``NetlinkSource.read_runs`` (frames, stamps), the grouper (serial gaps tracked, as on
  netlink), the IPE filter and the counters -- driven by a selector as the daemon's loop
  drives it;
* baseline: ``audit_frames read``, a C loop that only receives the datagrams and walks their
  frames, as auditd's own netlink reader does before it formats anything.

For each rate: events sent and records the sender dropped, then per reader the events it
delivered, its CPU seconds (the reader's own, from its first datagram on), events per CPU
second -- the rate one core sustains -- and the ratio iped/baseline. A last pair reads in
batches (``--nap-ms`` after each wake-up, then at most 1024 datagrams), as a busy daemon does.
For iped, every serial must be accounted for: emitted as an event (whole, or incomplete/without
its 1420 when records were dropped), counted as a serial gap, or an EOE with nothing before it
-- the follower counts, never drops silently. It ends with the reader process's peak RSS (the
grouper keeps a bounded number of done stamps, whatever the rate) and the range of events per
CPU second over the runs without loss. The goal: >= 100,000 events/s on one core, every run.

``--soak N`` instead runs N events (e.g. 10,000,000) whose every one names another rule (a
``fsverity_digest=`` rule per file), path and process through the follower and the renderer of
``iped audit --follow --json`` (``--soak-path follow``) or through the follower alone as the
daemon's loop drives it (``--soak-path daemon``: counted, the Prometheus textfile and the
status document kept up), sampling VmRSS every ``--soak-every`` events: it must stay flat
after warm-up (every table bounded; the slope, MB per million events, says how flat), and the
renderer's tables, bounds and hit rates are printed.

Usage: .venv/bin/python benchmarks/bench_follower.py [--events N] [--rates 25000,50000,...,0] [--nap-ms MS]
       .venv/bin/python benchmarks/bench_follower.py --soak 10000000 [--soak-every 1000000] [--soak-path follow|daemon]
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iped.audit.counters import AuditCounters
from iped.audit.follow import Follower, _Netlink
from iped.audit.netlink import DEFAULT_RCVBUF, NetlinkSource

SO_SNDBUFFORCE = 32  # (socket module has no name for it)
C_SOURCE = Path(__file__).resolve().parent / "audit_frames.c"


@dataclass(frozen=True)
class Sent:
    """What ``audit_frames send`` reports: events sent, records it had to drop, its wall time."""

    events: int
    dropped_records: int
    seconds: float


@dataclass(frozen=True)
class Read:
    """A reader's side: IPE events delivered, its CPU seconds, and (iped) whether every serial
    was accounted for, with the counts that say how."""

    events: int
    cpu: float
    accounted: bool = True
    detail: str = ""


Runner = Callable[[Path, int, int], tuple[Sent, Read]]


def build(tmp: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        sys.exit("no C compiler (gcc) for benchmarks/audit_frames.c")
    exe = tmp / "audit_frames"
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(exe), str(C_SOURCE)], check=True)
    return exe


def channel() -> tuple[socket.socket, socket.socket]:
    """(sender end, reader end), the sender's buffer the size of the follower's netlink one."""
    send, recv = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        send.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, DEFAULT_RCVBUF)
    except PermissionError:
        send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DEFAULT_RCVBUF)
    return send, recv


def start_sender(exe: Path, sock: socket.socket, events: int, rate: int,
                 distinct: bool = False) -> subprocess.Popen[str]:  # fmt: skip
    fd = sock.fileno()
    mode = ["distinct"] if distinct else []
    return subprocess.Popen([str(exe), "send", str(fd), str(events), str(rate), *mode], pass_fds=[fd],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def vm_rss_mb() -> float:
    """This process's resident size now (VmRSS), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def slope_mb_per_million(samples: list[tuple[int, float]]) -> float:
    """Least-squares slope of VmRSS over events, MB per million events: "flat" as a number."""
    n = len(samples)
    mx = sum(e for e, _ in samples) / n
    my = sum(mb for _, mb in samples) / n
    sxx = sum((e - mx) ** 2 for e, _ in samples)
    sxy = sum((e - mx) * (mb - my) for e, mb in samples)
    return sxy / sxx * 1_000_000 if sxx else 0.0


def soak(exe: Path, events: int, every: int, path: str) -> int:
    """``events`` events, each naming another rule, path and process, unpaced (nothing dropped)
    through the daemon's follower; ``path`` "follow": each IPE event then rendered as ``iped
    audit --follow --json`` renders it (JsonLines, to nowhere); "daemon": as the daemon's loop
    drives it (events only counted, the Prometheus textfile written at most once a second and
    the status document built at each sample). VmRSS sampled every ``every`` events. Flat after
    warm-up: the largest sample after the first ``every`` events at most 4 MB over that first
    sample; the slope over those samples says how flat."""
    from iped.audit import counters as counters_module
    from iped.audit.follow import DONE_MAX
    from iped.audit.render import JsonLines

    send, recv = channel()
    counters = AuditCounters()
    src = NetlinkSource.over(recv)
    daemon = path == "daemon"
    with tempfile.TemporaryDirectory() as tmp:
        textfile = Path(tmp) / "iped.prom" if daemon else None
        follower = Follower(_Netlink(counters, src=src), counters=counters, textfile=textfile)
        printer = None if daemon else JsonLines(None)
        sel = selectors.DefaultSelector()
        sel.register(follower.fileno(), selectors.EVENT_READ)
        sender = start_sender(exe, send, events, 0, distinct=True)
        send.close()
        samples: list[tuple[int, float]] = []
        next_sample = every
        t0 = time.process_time()
        while src.stats.control == 0:
            timeout = follower.timeout()
            if sel.select(1.0 if timeout is None else min(timeout, 1.0)):
                got = follower.on_readable()
                if printer is not None:
                    for event in got:
                        printer.lines(event)
            late = follower.on_timeout(time.monotonic())
            if printer is not None:
                for event in late:
                    printer.lines(event)
            if counters.events >= next_sample:
                if daemon:
                    follower.counters()  # what 'iped status' asks the daemon for
                samples.append((counters.events, vm_rss_mb()))
                print(f"  {counters.events:>11,} events: VmRSS {samples[-1][1]:6.1f} MB, "
                      f"{len(counters.accesses)} rule tallies, {len(follower.grouper._done)} done stamps, "
                      f"{time.process_time() - t0:7.1f} CPU s, load {os.getloadavg()[0]:.1f}", flush=True)
                next_sample += every
        cpu = time.process_time() - t0
        sent_of(sender)
        follower.close()
    print(f"soak ({path} path): {counters.events:,} events in {cpu:.1f} CPU s ({counters.events / cpu:,.0f}/CPU s); "
          f"bounds: rule tallies {counters_module.ACCESS_KEYS_MAX} (+1/4), done stamps {DONE_MAX} (+1/4)")
    if printer is not None:
        for name, table in printer.cache_stats().items():
            hit = 1 - table["misses"] / table["lookups"] if table["lookups"] else 0.0
            print(f"  --follow renderer {name}: {table['size']} kept (bound {table['bound']}), hit rate {hit:.1%}")
    if len(samples) < 3:
        print("soak: too few samples to judge (raise --soak or lower --soak-every)")
        return 1
    warm, rest = samples[0][1], [mb for _, mb in samples[1:]]
    flat = max(rest) - warm <= 4.0
    slope = slope_mb_per_million(samples[1:])
    print(f"soak ({path} path): VmRSS {warm:.1f} MB after warm-up ({samples[0][0]:,} events), "
          f"{min(rest):.1f}-{max(rest):.1f} MB after, slope {slope:+.3f} MB per million events: "
          f"{'flat (OK)' if flat else 'GROWING'}; goal <= 64 MB: {'OK' if max(rest) <= 64 else 'OVER'}")
    return 0 if flat and max(rest) <= 64 else 1


def sent_of(proc: subprocess.Popen[str]) -> Sent:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"audit_frames send failed ({proc.returncode})")
    _, events, _, dropped, _, seconds = out.split()
    return Sent(int(events), int(dropped), float(seconds))


def run_iped(exe: Path, events: int, rate: int, nap: float = 0.0) -> tuple[Sent, Read]:
    """The follower on the stream; ``nap``: seconds to wait after each wake-up before reading,
    so that each read finds a batch, as when the daemon is busy (0: read at once)."""
    send, recv = channel()
    counters = AuditCounters()
    src = NetlinkSource.over(recv)
    follower = Follower(_Netlink(counters, src=src), counters=counters)
    sel = selectors.DefaultSelector()
    sel.register(follower.fileno(), selectors.EVENT_READ)
    sender = start_sender(exe, send, events, rate)
    send.close()
    cpu0: float | None = None
    while src.stats.control == 0:  # until the sender's closing NLMSG_NOOP
        timeout = follower.timeout()
        if sel.select(1.0 if timeout is None else min(timeout, 1.0)):
            if cpu0 is None:
                cpu0 = time.process_time()
            if nap:
                time.sleep(nap)
            follower.on_readable()
        follower.on_timeout(time.monotonic())
    cpu = time.process_time() - (cpu0 or 0.0)
    sent = sent_of(sender)
    follower.on_timeout(time.monotonic() + 3600)  # whatever is still in flight is overdue now
    follower.close()
    g = counters.group
    # every serial sent is one of: an event emitted (whole or damaged), a gap, an EOE alone
    seen = g.events + g.serial_gaps + g.spurious_eoe
    detail = (f"{counters.events} IPE events counted, {g.events - counters.events} without their 1420, "
              f"{g.incomplete_events} incomplete, {g.serial_gaps} serial gaps, {g.spurious_eoe} lone EOEs, "
              f"{counters.unparsed} unparsed")  # fmt: skip
    return sent, Read(counters.events, cpu, seen == sent.events, detail)


def run_baseline(exe: Path, events: int, rate: int, nap: float = 0.0) -> tuple[Sent, Read]:
    send, recv = channel()
    fd = recv.fileno()
    reader = subprocess.Popen([str(exe), "read", str(fd), str(nap * 1000)], pass_fds=[fd], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    recv.close()
    sender = start_sender(exe, send, events, rate)
    send.close()
    sent = sent_of(sender)
    out, _ = reader.communicate()
    _, _records, _, got, _, cpu = out.split()
    return sent, Read(int(got), float(cpu))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000, help="events sent per rate")
    ap.add_argument("--rates", default="25000,50000,100000,150000,0",
                    help="offered events/s, comma-separated; 0 = as fast as the reader takes them")  # fmt: skip
    ap.add_argument("--nap-ms", type=float, default=5.0,
                    help="the batched run: the follower reads this long after each wake-up")  # fmt: skip
    ap.add_argument("--soak", type=int, metavar="N",
                    help="instead: N events, every one another rule, path and process, VmRSS sampled (e.g. 10000000)")
    ap.add_argument("--soak-every", type=int, default=1_000_000, metavar="K", help="--soak: sample every K events")
    ap.add_argument("--soak-path", choices=("follow", "daemon"), default="follow",
                    help="--soak: follower + --follow's renderer, or the follower as the daemon drives it")
    args = ap.parse_args()
    if args.soak:
        with tempfile.TemporaryDirectory() as tmp:
            return soak(build(Path(tmp)), args.soak, args.soak_every, args.soak_path)
    rates = [int(r) for r in args.rates.split(",")]
    print(f"{os.cpu_count()} CPUs; {args.events} events per rate, 4 records each (1420, SYSCALL, PROCTITLE, EOE)")
    lossless: dict[str, list[float]] = {"iped": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        plan: list[tuple[str, str, int, Runner]] = []
        for rate in rates:
            offered = f"{rate:,}/s" if rate else "unpaced"
            plan += [("iped", offered, rate, run_iped), ("baseline", offered, rate, run_baseline)]
        # unpaced, each side reading in batches as a busy daemon does (after a wake-up it waits
        # --nap-ms, then drains what gathered): the cost per event when records wait a while
        # in the socket (read at once, a wake-up finds a few records and its cost dominates)
        nap = args.nap_ms / 1000

        def batched(exe: Path, n: int, rate: int) -> tuple[Sent, Read]:
            return run_iped(exe, n, rate, nap)

        def batched_baseline(exe: Path, n: int, rate: int) -> tuple[Sent, Read]:
            return run_baseline(exe, n, rate, nap)

        plan += [("iped", f"batched {args.nap_ms:g}ms", 0, batched),
                 ("baseline", f"batched {args.nap_ms:g}ms", 0, batched_baseline)]  # fmt: skip
        iped_per_cpu = 0.0
        for side, offered, rate, run in plan:
            sent, read = run(exe, args.events, rate)
            per_cpu = read.events / read.cpu if read.cpu > 0 else float("inf")
            if sent.dropped_records == 0:
                lossless[side].append(per_cpu)
            print(f"{offered:>16} {side:<8}: sent {sent.events / sent.seconds:>9,.0f} events/s, "
                  f"dropped {sent.dropped_records:>7} records; delivered {read.events:>7} events, "
                  f"{read.cpu:5.2f} CPU s = {per_cpu:>9,.0f} events/CPU s")  # fmt: skip
            if side == "iped":
                iped_per_cpu = per_cpu
                print(f"{'':>28}{read.detail}; every serial accounted for: {'yes' if read.accounted else 'NO'}")
                if not read.accounted:
                    return 1
            else:
                print(f"{'':>28}iped/baseline {iped_per_cpu / per_cpu:.2f}")
    # (maxrss: this process ran only the iped side; the grouper's done stamps are bounded)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"iped reader process: peak RSS {rss_mb:.0f} MB over all runs")
    ours, theirs = lossless["iped"], lossless["baseline"]
    print(f"events per CPU second, runs without loss: iped {min(ours):,.0f}-{max(ours):,.0f}, baseline (C raw read) "
          f"{min(theirs):,.0f}-{max(theirs):,.0f}; goal >= 100,000 in every run: "
          f"{'OK' if min(ours) >= 100_000 else 'BELOW GOAL'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
