#!/usr/bin/env python3
"""``iped survey --collection DIR`` over a synthetic fleet vs one ``iped survey --source`` per host.

A fleet's audit records as its collector keeps them: ``--hosts`` (default 500) auditd logs of
``--events`` (default 10,000) IPE access events each (1420 + SYSCALL + EOE, written by the
emulator under a permissive starter policy; programs on a dm-verity volume, fs-verity files, the
initramfs, anonymous memory, a kernel module), one file per host. ``--variants`` distinct logs
(default 8, each a different mix) are hard-linked under the host names: every host's file is
read and parsed on its own, the disk holds only the variants.

Measured, as a child process each (wall, CPU = user + system, peak RSS from ``wait4``):

* iped: ``iped survey --policy P --collection DIR --facts F --json`` once for the whole fleet;
* the baseline: what one does without ``--collection``, ``iped survey --policy P --source LOG
  --facts F --json`` once per host, over ``--baseline-hosts`` (default 25) hosts, scaled to the
  fleet by its per-host median.

Printed: hosts/s and events/s of both, the ratio, and iped's peak RSS; the fleet's verdict is
checked (the hosts of the variant that runs a denied program are no-go, the others go).

Usage: .venv/bin/python benchmarks/bench_fleet_survey.py [--hosts N] [--events N] [--variants K]
       [--baseline-hosts M] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iped.audit.records import AUDIT_EOE, AUDIT_IPE_ACCESS, AUDIT_SYSCALL, RawRecord
from iped.rollout import engine
from iped.rollout.facts import load_facts
from iped.rollout.policies import starter_policy
from iped.rollout.shadow import Process, syscall_body

IPED = Path(sys.executable).parent / "iped"
DENIED = "c3" * 32
FACTS: dict[str, dict[str, object]] = {
    "/init/bin/busybox": {"dev": "rootfs", "ino": 15, "boot_verified": True},
    **{f"/usr/bin/tool{i}": {"dev": "dm-0", "ino": 100 + i, "dmverity_roothash": "sha256:" + "a1" * 32,
                             "dmverity_signature": True} for i in range(40)},
    **{f"/opt/app{i}/run": {"dev": "vda2", "ino": 200 + i, "fsverity_digest": "sha256:" + f"{i:02x}" * 32}
       for i in range(20)},
    "/opt/app/evil": {"dev": "vda2", "ino": 8, "fsverity_digest": f"sha256:{DENIED}"},
    "/usr/lib/modules/fs.ko": {"dev": "dm-0", "ino": 300, "dmverity_roothash": "sha256:" + "a1" * 32},
}
POLICY = (b"policy_name=site policy_version=1.0.0\nDEFAULT action=ALLOW\n"
          b"op=EXECUTE fsverity_digest=sha256:" + DENIED.encode() + b" action=DENY\n")


def host_log(path: Path, variant: int, events: int, files: Mapping[str, Any]) -> None:
    """One host's log: ``events`` accesses over a mix of programs that depends on ``variant``;
    variant 0 also runs the denied program."""
    emu = engine.PolicyEngine(starter_policy("site"))
    programs = [p for p in FACTS if p != "/opt/app/evil" and (hash((p, variant)) % 3 or p.startswith("/init"))]
    if variant == 0:
        programs.append("/opt/app/evil")
    bodies = {}
    for p in programs:
        op, hook = ("KMODULE", "KERNEL_READ") if p.endswith(".ko") else ("EXECUTE", "BPRM_CHECK")
        comm = Path(p).name[:15]
        bodies[p] = (emu.evaluate_body(op, hook, files[p], engine.Task(4242, comm)),
                     syscall_body(Process(4242, 1, 0, comm, p)).rsplit(" key=", 1)[0])
    lines = []
    for n in range(events):
        body, syscall = bodies[programs[n % len(programs)]]
        sec, serial = 1_790_000_000 + n // 10, 1000 + n
        for rtype, text in ((AUDIT_IPE_ACCESS, body), (AUDIT_SYSCALL, syscall), (AUDIT_EOE, "")):
            lines.append(RawRecord(rtype, sec, (n % 10) * 100, serial, text).to_log_line())
    path.write_text("\n".join(lines) + "\n")


def timed(cmd: list[str]) -> tuple[float, float, float, int, str]:
    """Wall s, CPU s, peak RSS MiB, exit code and stdout of ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--variants", type=int, default=8)
    ap.add_argument("--baseline-hosts", type=int, default=25)
    ap.add_argument("--keep", metavar="DIR", help="keep the generated fleet here")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="iped-fleet-"))
    try:
        variants, coll = work / "variants", work / "collector"
        variants.mkdir(parents=True, exist_ok=True)
        coll.mkdir(exist_ok=True)
        facts, policy = work / "facts.json", work / "site.pol"
        facts.write_text(json.dumps(FACTS))
        policy.write_bytes(POLICY)
        files = load_facts(str(facts)).files
        t0 = time.perf_counter()
        for v in range(args.variants):
            if not (variants / f"v{v}.log").exists():
                host_log(variants / f"v{v}.log", v, args.events, files)
        hosts = [f"host{h:04d}" for h in range(args.hosts)]
        for h, name in enumerate(hosts):
            target = coll / f"{name}.log"
            if not target.exists():
                os.link(variants / f"v{h % args.variants}.log", target)
        size = sum((variants / f"v{v}.log").stat().st_size for v in range(args.variants))
        print(f"fleet: {args.hosts} hosts x {args.events} events ({args.hosts * args.events:,} events, "
              f"{size / args.variants / 1e6:.1f} MB per host log), generated in {time.perf_counter() - t0:.1f} s")

        common = ["--policy", str(policy), "--facts", str(facts), "--json"]
        wall, cpu, rss, code, out = timed([str(IPED), "survey", "--collection", str(coll), *common])
        doc = json.loads(out)
        no_go = sorted(doc["by_verdict"]["no-go"])
        assert code == 1 and no_go == [n for h, n in enumerate(hosts) if h % args.variants == 0], no_go
        assert len(doc["by_verdict"]["go"]) == args.hosts - len(no_go)
        events = args.hosts * args.events
        print(f"iped survey --collection: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss:.0f} MiB: "
              f"{args.hosts / wall:.1f} hosts/s, {events / wall:,.0f} events/s "
              f"({events / cpu:,.0f} per CPU second); verdict {doc['verdict']}, {len(no_go)} hosts no-go")

        sample = hosts[: args.baseline_hosts]
        walls, cpus, rsss = [], [], []
        for name in sample:
            w, c, r, code, _ = timed([str(IPED), "survey", "--source", str(coll / f"{name}.log"), *common])
            assert code in (0, 1)
            walls.append(w)
            cpus.append(c)
            rsss.append(r)
        per_host = statistics.median(walls)
        print(f"baseline, one iped survey --source per host ({len(sample)} hosts measured): "
              f"median {per_host:.2f} s wall, {statistics.median(cpus):.2f} s CPU, peak RSS {max(rsss):.0f} MiB: "
              f"{1 / per_host:.1f} hosts/s, {args.events / per_host:,.0f} events/s; "
              f"the fleet would take {per_host * args.hosts:.0f} s")
        print(f"ratio (baseline time / iped time, whole fleet): {per_host * args.hosts / wall:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
