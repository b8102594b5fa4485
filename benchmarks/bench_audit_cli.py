#!/usr/bin/env python3
"""``iped audit --source LOG --json`` vs ``ausearch -if LOG -m 1420,1421,1422,1404 -i``, end to end.

What a person runs to read IPE events out of an auditd log, on both sides: the whole command,
start-up included, every event printed (to /dev/null). Three logs of 1,000,000 records
(~250k IPE access events 1420 + SYSCALL + PROCTITLE + EOE) by default, generated here
(``--shapes``, :data:`SHAPES`): ``repeat``, bench_audit.py's (two distinct rules, policy loads
and activations); ``digests``, every event a different ``fsverity_digest=`` rule; ``distinct``,
nothing repeats from event to event (rule, path, comm, exe, argv, pid, ppid) at 2000 events a
second -- the worst case for caches keyed by value. ausearch is auditd's (Debian package
``auditd``); ``-i`` interprets the fields, as iped's JSON does. For each log a child runs
iped's pipeline in process and prints every cache it keeps: its size, bound and hit rate. The
goal, per log: >= 1.5x ausearch's wall time and a peak RSS <= 64 MiB (the summary at the end).

The sides run one after the other, alternating, ``--runs`` times; each run's wall time, CPU
time (user + system) and peak RSS (``ru_maxrss`` of that child, from ``wait4``; a child's starts
from its parent's at fork, so this parent stays small) are recorded, and the medians and the
ratio ausearch/iped of the median wall times are printed (goal: >= 1.5), with the ratio of
the CPU times beside it (steadier when other work shares the machine). Before timing, one
checked run of each writes its output to a file: both must show the same events (the set of
audit serials), and unless ``--no-reference`` iped's bytes are compared with the reference
rendering (``event_objects`` + ``json.dumps``, what ``iped audit`` printed before the fast
renderer) over the whole log.

``--instructions N`` adds cachegrind's instruction counts per record for both commands on an
N-record log minus an empty one (start-up cancelled out): noise-free where wall time on a
shared VM varies by tens of percent.

Usage: .venv/bin/python benchmarks/bench_audit_cli.py [--records N] [--shapes repeat,digests,distinct]
       [--runs K] [--keep FILE] [--iped PATH] [--policy FILE] [--no-reference] [--instructions N]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_audit import generate, instructions

AUSEARCH_TYPES = "1420,1421,1422,1404"
_AUSEARCH_SERIAL = re.compile(r"type=\S+ msg=audit\([^)]*:(\d+)\) :")


#: the logs measured (--shapes): what repeats from event to event decides how much the renderer's
#: caches can keep, so each shape defeats more of them
SHAPES: dict[str, str] = {
    "repeat": "rules repeat: two distinct rule= texts, as a small policy gives (bench_audit.py's log)",
    "digests": "every access event matched a different rule (a fsverity_digest= rule per file, as the "
    "digest-list policy iped suggest writes gives)",
    "distinct": "nothing repeats: every access event a different rule, path, comm, exe, argv, pid and ppid "
    "(the worst case for caches keyed by value), 2000 events a second (the most stamps kept for late duplicates)",
}


def generate_shape(path: Path, n_records: int, shape: str) -> None:
    """Write an auditd raw log of about ``n_records`` records in ``shape`` (see :data:`SHAPES`)."""
    if shape == "repeat":
        generate(path, n_records)
        return
    distinct = shape == "distinct"
    sec, serial, written, i = 1_700_000_000, 1000, 0, 0
    with open(path, "w") as fh:
        while written < n_records:
            i += 1
            serial += 1
            stamp = f"{sec + (i // 2000 if distinct else i // 50)}.{i % 1000:03d}:{serial}"
            digest = f"{i:064x}"
            rule = f'op=EXECUTE fsverity_digest="sha256":{digest} action={"DENY" if i % 7 == 0 else "ALLOW"}'
            tool = f"tool{i}" if distinct else f"tool{i % 400}"
            comm = f"c{i % 10**9:09d}" if distinct else "bash"
            exe = f"/opt/app{i}/bin/run" if distinct else "/usr/bin/bash"
            uid = 1000  # (distinct uids would time ausearch -i's user lookups, not its reading)
            ppid = 2 + (i % 4_000_000 if distinct else 0)
            title = f"/usr/local/bin/{tool}\0--run={i}" if distinct else "/usr/local/bin/tool\0--help"
            recs = [
                ("1420", f'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid={i} comm="{comm}" path="/usr/local/bin/{tool}" dev="vda1" ino={i} rule="{rule}"'),  # noqa: E501
                ("SYSCALL", f'arch=c000003e syscall=59 success=yes exit=0 a0=55e a1=55f a2=560 a3=8 items=2 ppid={ppid} pid={i} auid={uid} uid={uid} gid=1000 euid={uid} suid={uid} fsuid={uid} egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="{comm}" exe="{exe}" subj=unconfined key=(null)'),  # noqa: E501
                ("PROCTITLE", "proctitle=" + title.encode().hex().upper()),
                ("EOE", ""),
            ]  # fmt: skip
            for rtype, body in recs:
                fh.write(f"type={rtype} msg=audit({stamp}): {body}\n")
            written += len(recs)


def timed(cmd: list[str], stdout: str = os.devnull) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of ``cmd``, stdout to ``stdout``."""
    with open(stdout, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
    # ausearch exits 1 when nothing matched; anything else is a failure here
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {err[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def same_events(iped_out: Path, ausearch_out: Path) -> int:
    """Both outputs name the same audit serials; returns how many events."""
    import json

    ours = set()
    with open(iped_out) as fh:
        for line in fh:
            ours.add(json.loads(line)["serial"])
    theirs = set()
    with open(ausearch_out, errors="replace") as fh:
        for line in fh:
            m = _AUSEARCH_SERIAL.match(line)
            if m:
                theirs.add(int(m.group(1)))
    if ours != theirs:
        raise AssertionError(f"events differ: {len(ours - theirs)} only in iped, {len(theirs - ours)} only in ausearch")
    return len(ours)


def reference_lines(log: str, out: str, policy: str | None) -> None:
    """The reference rendering of the log (event_objects + json.dumps per object), one line each."""
    from itertools import chain

    from iped.audit.explain import PolicyIndex
    from iped.audit.files import iter_file_events
    from iped.audit.group import Grouper
    from iped.audit.render import event_objects, json_line

    index = PolicyIndex.from_file(policy) if policy else None
    grouper = Grouper(2.0)
    with open(out, "w") as fh:
        for event in chain(iter_file_events(log, grouper), grouper.flush()):
            if event.is_ipe:
                fh.writelines(json_line(obj) + "\n" for obj in event_objects(event, index))


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def cache_stats(log: str) -> None:
    """``iped audit --source LOG --json``'s pipeline in this process (its grouper and renderer,
    output to nowhere), then every cache it keeps: size, bound and hit rate."""
    from itertools import chain

    from iped.audit import _scan
    from iped.audit.files import iter_file_events
    from iped.audit.group import Grouper
    from iped.audit.render import JsonLines
    from iped.commands.audit import _DONE_MAX

    grouper = Grouper(2.0, done_max=_DONE_MAX)
    renderer = JsonLines(None)
    most_done = 0
    for n, event in enumerate(chain(iter_file_events(log, grouper), grouper.flush())):
        if event.is_ipe:
            renderer.lines(event)
        if n % 4096 == 0:
            most_done = max(most_done, len(grouper._done))
    for name, table in renderer.cache_stats().items():
        hit = 1 - table["misses"] / table["lookups"] if table["lookups"] else 0.0
        print(f"  renderer {name:<9}: {table['size']:>5} kept, bound {table['bound']}, hit rate {hit:6.1%}")
    print(f"  grouper done stamps: at most {most_done} kept, bound {_DONE_MAX} (+1/4, checked once per block)")
    fields = ", ".join(f"{name} {hits / lookups:.0%}" for name, (lookups, hits) in _scan.cache_stats().items()
                       if lookups)  # fmt: skip
    print(f"  C scanner, last value per field (bound 1 each), hit rates: {fields}")


def measure(args: argparse.Namespace, ausearch: str, log: Path, tmp: str) -> tuple[float, float]:
    """One log side by side; returns (ratio of the median wall times, iped's largest peak RSS)."""
    size, lines = log.stat().st_size, count_lines(log)
    print(f"log: {size / 1e6:.0f} MB, {lines} records; {os.cpu_count()} CPUs; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; iped {args.iped}; {ausearch}")  # fmt: skip

    def iped_cmd(path: Path) -> list[str]:
        policy = ["--policy", args.policy] if args.policy else []
        return [args.iped, "audit", "--source", str(path), "--json", *policy]

    def ausearch_cmd(path: Path) -> list[str]:
        return [ausearch, "-if", str(path), "-m", AUSEARCH_TYPES, "-i"]

    # one checked run each: the same events, and iped's bytes those of the reference rendering
    iped_out, au_out, ref_out = Path(tmp) / "iped.jsonl", Path(tmp) / "ausearch.txt", Path(tmp) / "ref.jsonl"
    timed(iped_cmd(log), str(iped_out))
    timed(ausearch_cmd(log), str(au_out))
    subprocess.run([sys.executable, __file__, "--same-events", str(iped_out), str(au_out)], check=True)
    if not args.no_reference:
        policy = ["--policy", args.policy] if args.policy else []
        subprocess.run([sys.executable, __file__, "--reference", str(log), str(ref_out), *policy], check=True)
        if not same_bytes(iped_out, ref_out):
            raise AssertionError("iped audit --json differs from the reference rendering")
        print("iped's output: byte for byte the reference rendering (event_objects + json.dumps)")
    for path in (iped_out, au_out, ref_out):
        path.unlink(missing_ok=True)
    subprocess.run([sys.executable, __file__, "--cache-stats", str(log)], check=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if own > 32:  # (a child's peak starts from this process's: its figure would be this one's)
        print(f"warning: this process's peak RSS is {own:.1f} MiB; no child's peak below it can be measured")
    walls: dict[str, list[float]] = {"iped": [], "ausearch": []}
    cpus: dict[str, list[float]] = {"iped": [], "ausearch": []}
    rss: dict[str, list[float]] = {"iped": [], "ausearch": []}
    for run in range(args.runs):
        sides = ["iped", "ausearch"] if run % 2 == 0 else ["ausearch", "iped"]
        for side in sides:
            wall, cpu, peak = timed(iped_cmd(log) if side == "iped" else ausearch_cmd(log))
            walls[side].append(wall)
            cpus[side].append(cpu)
            rss[side].append(peak)
        print(f"run {run + 1}: iped {walls['iped'][-1]:5.2f}s ({cpus['iped'][-1]:.2f} CPU s)  "
              f"ausearch {walls['ausearch'][-1]:5.2f}s ({cpus['ausearch'][-1]:.2f} CPU s)  "
              f"ratio {walls['ausearch'][-1] / walls['iped'][-1]:.2f}x")  # fmt: skip
    for side, wall_times in walls.items():
        print(f"{side:<9}: {statistics.median(wall_times):5.2f} s wall median ({min(wall_times):.2f} best), "
              f"{statistics.median(cpus[side]):5.2f} CPU s (user + system), "
              f"peak RSS {statistics.median(rss[side]):6.1f} MiB")  # fmt: skip
    ratio = statistics.median(walls["ausearch"]) / statistics.median(walls["iped"])
    best = min(walls["ausearch"]) / min(walls["iped"])
    cpu_ratio = statistics.median(cpus["ausearch"]) / statistics.median(cpus["iped"])
    print(f"ratio ausearch/iped: {ratio:.2f}x wall, median of {args.runs} ({best:.2f}x best runs; "
          f"{cpu_ratio:.2f}x CPU time) (goal >= 1.5x) {'OK' if ratio >= 1.5 else 'BELOW GOAL'}")  # fmt: skip
    if args.instructions:
        small, empty = Path(tmp) / "small.log", Path(tmp) / "empty.log"
        generate_shape(small, args.instructions, args.shape_now)
        empty.write_text("")
        counts = {side: 0.0 for side in walls}
        n = count_lines(small)
        for side, cmd in (("iped", iped_cmd), ("ausearch", ausearch_cmd)):
            # (ausearch exits 1 on a log with no match: counted all the same)
            counts[side] = (instructions(cmd(small), check=False) - instructions(cmd(empty), check=False)) / n
        print(f"instructions per record ({n} records, cachegrind): iped {counts['iped']:,.0f}, "
              f"ausearch {counts['ausearch']:,.0f}; ratio {counts['ausearch'] / counts['iped']:.2f}x")  # fmt: skip
    return ratio, max(rss["iped"])


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"logs to measure, of: {', '.join(SHAPES)}")
    ap.add_argument("--runs", type=int, default=5, help="alternate the sides this many times; report medians")
    ap.add_argument("--keep", help="write the generated logs to FILE.SHAPE and keep them (reused if they exist)")
    ap.add_argument("--iped", default=str(Path(sys.executable).with_name("iped")), help="the iped command")
    ap.add_argument("--policy", help="pass --policy FILE to iped (rules located in it)")
    ap.add_argument("--no-reference", action="store_true", help="skip comparing with the reference rendering")
    ap.add_argument("--instructions", type=int, metavar="N", help="also count instructions per record (cachegrind)")
    ap.add_argument("--reference", nargs=2, metavar=("LOG", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--same-events", nargs=2, metavar=("IPED", "AUSEARCH"), help=argparse.SUPPRESS)
    ap.add_argument("--cache-stats", metavar="LOG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    # the checks run in child processes: a child's peak RSS starts from its parent's at fork,
    # so the parent that starts the timed commands must stay small
    if args.reference:
        reference_lines(args.reference[0], args.reference[1], args.policy)
        return 0
    if args.same_events:
        print(f"same events on both sides: {same_events(Path(args.same_events[0]), Path(args.same_events[1]))}")
        return 0
    if args.cache_stats:
        cache_stats(args.cache_stats)
        return 0
    ausearch = shutil.which("ausearch")
    if ausearch is None:
        sys.exit("ausearch is not installed (Debian package auditd; packaging/dev.sh setup installs it)")
    shapes = args.shapes.split(",")
    unknown = set(shapes) - set(SHAPES)
    if unknown:
        sys.exit(f"--shapes: unknown {', '.join(sorted(unknown))} (known: {', '.join(SHAPES)})")
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            print(f"== {shape}: {SHAPES[shape]}")
            log = Path(f"{args.keep}.{shape}") if args.keep else Path(tmp) / f"{shape}.log"
            if not (args.keep and log.exists()):
                generate_shape(log, args.records, shape)
            args.shape_now = shape
            results[shape] = measure(args, ausearch, log, tmp)
            if not args.keep:
                log.unlink()
    ok = True
    for shape, (ratio, peak) in results.items():
        good = ratio >= 1.5 and peak <= 64
        ok = ok and good
        print(f"{shape:<9}: ausearch/iped {ratio:.2f}x wall (goal >= 1.5x), iped peak RSS {peak:.1f} MiB "
              f"(goal <= 64) {'OK' if good else 'BELOW GOAL'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
