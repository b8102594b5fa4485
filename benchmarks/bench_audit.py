"""Audit parsing + grouping throughput: iped.audit vs libauparse, on the same generated log.

Generates an auditd-format log of N records (default 1,000,000): mostly IPE access events
(1420 + SYSCALL + PROCTITLE + EOE), with some policy loads (1422, incl. 6.16 failures) and
activations (1421). Then, each in its own process so peak RSS is per side:

* iped: read lines, parse, group into events, build the typed record of every record;
* auparse (Debian python3-audit, importable by /usr/bin/python3 only): AuParser over the file,
  iterate events, records and fields, reading every field's name and value.

Rates use CPU time (process_time) so a busy machine does not skew the ratio.
Prints records/s of both, the ratio (target >= 1.5) and peak memory (ru_maxrss).
Usage: python benchmarks/bench_audit.py [--records N] [--keep FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AUPARSE_SIDE = r"""
import auparse, json, resource, sys, time
path = sys.argv[1]
t0 = time.process_time()
p = auparse.AuParser(auparse.AUSOURCE_FILE, path)
records = events = fields = 0
while p.parse_next_event():
    events += 1
    while True:
        records += 1
        p.first_field()
        while True:
            name = p.get_field_name(); value = p.get_field_str()
            fields += 1
            if not p.next_field():
                break
        if not p.next_record():
            break
dt = time.process_time() - t0
print(json.dumps({"records": records, "events": events, "fields": fields, "seconds": dt,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def generate(path: Path, n_records: int) -> None:
    """Write an auditd raw log with ``n_records`` records (realistic IPE mix)."""
    sec, serial, written = 1_700_000_000, 1000, 0
    hexdigest = "A1" * 32
    with open(path, "w") as fh:
        i = 0
        while written < n_records:
            i += 1
            serial += 1
            stamp = f"{sec + i // 50}.{i % 1000:03d}:{serial}"
            if i % 97 == 0:
                body = (
                    f'policy_name="pol{i}" policy_version=1.0.{i % 65536} policy_digest=sha256:{hexdigest} '
                    "auid=0 ses=2 lsm=ipe res=1 errno=0"
                    if i % 2
                    else "policy_name=? policy_version=? policy_digest=? auid=0 ses=2 lsm=ipe res=0 errno=-126"
                )
                recs = [("1422", body)]
                if i % 2:
                    recs.append(
                        (
                            "1421",
                            f'old_active_pol_name="pol{i - 2}" old_active_pol_version=1.0.0 old_policy_digest=sha256:{hexdigest} '  # noqa: E501
                            f'new_active_pol_name="pol{i}" new_active_pol_version=1.0.1 new_policy_digest=sha256:{hexdigest} '  # noqa: E501
                            "auid=0 ses=2 lsm=ipe res=1",
                        )
                    )
                recs.append(
                    (
                        "SYSCALL",
                        f'arch=c000003e syscall=1 success=yes exit=1024 a0=3 a1=55d a2=400 a3=0 items=0 ppid=1 pid={i} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=2 comm="iped" exe="/usr/bin/python3.11" subj=unconfined key=(null)',  # noqa: E501
                    )
                )
            else:
                deny = i % 3 != 0
                rule = (
                    "DEFAULT action=DENY" if deny else f'op=EXECUTE fsverity_digest="sha256":{hexdigest} action=ALLOW'
                )
                recs = [
                    ("1420", f'ipe_op=EXECUTE ipe_hook=BPRM_CHECK enforcing=1 pid={i} comm="bash" path="/usr/local/bin/tool{i % 400}" dev="vda1" ino={i} rule="{rule}"'),  # noqa: E501
                    ("SYSCALL", f'arch=c000003e syscall=59 success={"no" if deny else "yes"} exit={-13 if deny else 0} a0=55e a1=55f a2=560 a3=8 items=2 ppid=1 pid={i} auid=1000 uid=1000 gid=1000 euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="bash" exe="/usr/bin/bash" subj=unconfined key=(null)'),  # noqa: E501
                ]  # fmt: skip
            recs.append(("PROCTITLE", "proctitle=2F7573722F6C6F63616C2F62696E2F746F6F6C002D2D68656C70"))
            recs.append(("EOE", ""))
            for rtype, body in recs:
                fh.write(f"type={rtype} msg=audit({stamp}): {body}\n")
            written += len(recs)


def iped_side(path: str, typed_too: bool) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from iped.audit.files import iter_file
    from iped.audit.group import Grouper
    from iped.audit.records import parse_typed

    t0 = time.process_time()
    grouper = Grouper(2.0, track_gaps=True)
    events = typed = 0
    for event in grouper.feed_many(iter_file(path)):
        events += 1
        if typed_too:
            for r in event.records:
                typed += parse_typed(r) is not None
    events += len(grouper.flush())
    records = grouper.stats.records
    dt = time.process_time() - t0
    print(json.dumps({"records": records, "events": events, "typed": typed, "seconds": dt,
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write the generated log here and keep it")
    ap.add_argument("--typed", action="store_true", help="iped side also builds every typed record")
    ap.add_argument("--side", choices=["iped"], help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "iped":
        iped_side(args.log, args.typed)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "audit.log"
        t0 = time.perf_counter()
        generate(path, args.records)
        print(
            f"generated {path} ({path.stat().st_size / 1e6:.1f} MB, {args.records} records) in {time.perf_counter() - t0:.1f}s"  # noqa: E501
        )
        cmd = [sys.executable, __file__, "--side", "iped", "--log", str(path), *(["--typed"] if args.typed else [])]
        ours = json.loads(subprocess.run(cmd,
                                         check=True, capture_output=True, text=True).stdout)  # fmt: skip
        theirs = json.loads(subprocess.run(["/usr/bin/python3", "-c", AUPARSE_SIDE, str(path)],
                                           check=True, capture_output=True, text=True).stdout)  # fmt: skip
    # the same denominator for both: records in the file (auparse does not surface EOE records)
    r_ours = args.records / ours["seconds"]
    r_theirs = args.records / theirs["seconds"]
    print(f"iped.audit : {ours['records']:>9} records {ours['events']:>8} events {ours['seconds']:7.2f}s "
          f"{r_ours:>11,.0f} records/s  peak RSS {ours['maxrss_kb'] / 1024:7.1f} MiB")  # fmt: skip
    print(f"libauparse : {theirs['records']:>9} records {theirs['events']:>8} events {theirs['seconds']:7.2f}s "
          f"{r_theirs:>11,.0f} records/s  peak RSS {theirs['maxrss_kb'] / 1024:7.1f} MiB")  # fmt: skip
    ratio = r_ours / r_theirs
    print(f"ratio iped/auparse: {ratio:.2f}x (target >= 1.5x) {'OK' if ratio >= 1.5 else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
