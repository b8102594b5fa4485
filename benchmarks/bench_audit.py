"""Audit parse + group throughput: iped.audit vs libauparse, the same task on the same log.

Generates an auditd-format log of N records (default 1,000,000; whole events, so a few more):
mostly IPE access events (1420 + SYSCALL + PROCTITLE + EOE), with some policy loads (1422,
half of them 6.16-style failures) and activations (1421 + 1422). Then runs each side in its
own process, one after the other, so CPU time and peak RSS (ru_maxrss) are per side.

The consumer task, identical on both sides: read the file, group the records into events, and
produce for each event

* the types of its records, in order (EOE excluded: auparse does not surface it);
* for each IPE-relevant record a tuple of its fields, decoded the way iped's typed records are:
  - 1420: op, hook, enforcing (bool), pid (int), comm, path, dev (untrusted strings decoded:
    quotes removed or hex decoded, ``?`` -> None), ino (int), rule (the text inside ``rule="..."``);
  - 1422: policy name, version, digest (quotes removed, ``?`` -> None), auid, ses (int, unset
    -> None), res, errno (int or None);
  - 1421: old name/version/digest, new name/version/digest, auid, ses, res;
  - 1404 with ``lsm=ipe``: enforcing, old_enforcing (bool), auid, ses, res;
  - SYSCALL: exe (decoded), uid, auid (int, unset -> None), success (bool), syscall (int);
  - PROCTITLE: argv (hex decoded, split at NUL).

iped: ``iter_file_events`` (for auditd logs the bulk path of ``iped.audit.bulk``: whole access
events found by the C block scanner ``iped.audit._scan``, which also builds their typed records,
the grouper's bookkeeping inline; every other line through the general path) + ``Event.typed``.
"iped (Python)" is the same with the bulk path's pure-Python scanner (a regex per block, the
records module's parsers), what a checkout without the compiled scanner runs.
auparse (Debian python3-audit): ``AuParser`` over the file,
``parse_next_event``/``next_record``/``get_type``, and per needed record ``find_field`` for each
needed field in the kernel's print order (one forward pass through the record's fields, the
fastest of the auparse access patterns measured: per-name ``first_field`` + ``find_field``
and iterating every field with ``get_field_name`` were slower); numbers converted with
``int()``, strings decoded with the same rules as iped, in Python. auparse splits
``rule="DEFAULT action=DENY"`` at the space, so the rule is taken from ``get_record_text()``.

Counts: records in events (both sides, EOE excluded) and events must match, as must the number
of field tuples; a sample of events (the first 300 and every 10,007th) is compared value by
value. Rates are file records (the N lines, EOE included, the same denominator for both) per
CPU second (``time.process_time``) so a busy machine skews the ratio less. Both sides run on
the same interpreter (the one with auparse, /usr/bin/python3) unless ``--iped-python``.
Prints records/s of each, the ratios to auparse (target >= 1.5 for iped) and peak RSS. CPU time
on a shared virtual machine varies from run to run by tens of percent (the same process, the
same input); the sides are alternated and the median of ``--runs`` reported, with the best run
of each side beside it.

``--instructions N`` adds a measure that does not vary: each side runs under valgrind's
cachegrind on a log of N records and on an empty log, and the difference in instructions
executed is reported per record (the import and start-up cost cancels out).

Usage: python benchmarks/bench_audit.py [--records N] [--keep FILE] [--runs K] [--iped-python PY]
                                        [--instructions N]
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
from pathlib import Path
from typing import Any

#: events sampled for the value-by-value comparison
SAMPLE_FIRST = 300
SAMPLE_EVERY = 10_007

AUPARSE_SIDE = r"""
import auparse, json, resource, sys, time
path, sample_first, sample_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
UNSET = 4294967295

def untrusted(v):
    if v is None or v == "?" or v == "(null)":
        return None
    if v[:1] == '"':
        return v[1:-1] if len(v) > 1 and v[-1] == '"' else v[1:]
    try:
        return bytes.fromhex(v).decode("utf-8", "backslashreplace")
    except ValueError:
        return v

def quoted(v):
    if v is None or v == "?":
        return None
    return v[1:-1] if len(v) > 1 and v[0] == '"' and v[-1] == '"' else v

def num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None

def uid(v):
    n = num(v)
    return None if n == UNSET else n

def flag(v):
    return None if v not in ("0", "1") else v == "1"

t0 = time.process_time()
p = auparse.AuParser(auparse.AUSOURCE_FILE, path)
find, first = p.find_field, p.first_field
records = events = nvals = 0
sample = {}
while p.parse_next_event():
    types = []
    vals = []
    while True:
        t = p.get_type()
        types.append(t)
        if t == 1420:
            first()
            op = find("ipe_op"); hook = find("ipe_hook"); enf = find("enforcing"); pid = find("pid")
            comm = find("comm"); fpath = find("path"); dev = find("dev"); ino = find("ino")
            rule = p.get_record_text().partition(' rule="')[2]
            vals.append((op, hook, flag(enf), num(pid), untrusted(comm), untrusted(fpath), untrusted(dev),
                         num(ino), rule[:-1] if rule[-1:] == '"' else rule))
        elif t == 1300:
            first()
            nr = find("syscall"); ok = find("success"); au = find("auid"); u = find("uid"); exe = find("exe")
            vals.append((untrusted(exe), uid(u), uid(au), ok == "yes", num(nr)))
        elif t == 1327:
            first()
            v = find("proctitle")
            if v[:1] == '"':
                vals.append((v[1:-1],))
            else:
                vals.append(tuple(bytes.fromhex(v).decode("utf-8", "backslashreplace").split("\x00")))
        elif t == 1422:
            first()
            name = find("policy_name"); ver = find("policy_version"); dig = find("policy_digest")
            au = find("auid"); ses = find("ses"); res = find("res"); err = find("errno")
            vals.append((quoted(name), quoted(ver), quoted(dig), uid(au), uid(ses), num(res), num(err)))
        elif t == 1421:
            first()
            on = find("old_active_pol_name"); ov = find("old_active_pol_version"); od = find("old_policy_digest")
            nn = find("new_active_pol_name"); nv = find("new_active_pol_version"); nd = find("new_policy_digest")
            au = find("auid"); ses = find("ses"); res = find("res")
            vals.append((quoted(on), quoted(ov), quoted(od), quoted(nn), quoted(nv), quoted(nd),
                         uid(au), uid(ses), num(res)))
        elif t == 1404:
            first()
            if p.find_field("lsm") == "ipe":
                first()
                enf = find("enforcing"); old = find("old_enforcing"); au = find("auid"); ses = find("ses")
                res = find("res")
                vals.append((flag(enf), flag(old), uid(au), uid(ses), num(res)))
        if not p.next_record():
            break
    records += len(types)
    nvals += len(vals)
    if events < sample_first or events % sample_every == 0:
        sample[events] = [types, vals]
    events += 1
dt = time.process_time() - t0
print(json.dumps({"records": records, "events": events, "values": nvals, "seconds": dt, "sample": sample,
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


def iped_side(path: str, sample_first: int, sample_every: int, scanner: str) -> None:
    """The consumer task with iped.audit (see the module docstring); prints one JSON object."""
    import resource

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from iped.audit import bulk
    from iped.audit.files import iter_file_events
    from iped.audit.group import Event, Grouper
    from iped.audit.records import Proctitle, Syscall

    if scanner == "c" and not bulk.C_SCANNER_BUILT:
        sys.exit("iped.audit._scan is not built (pip install -e . or packaging/dev.sh setup)")
    bulk.use_c_scanner = scanner == "c"
    t0 = time.process_time()
    grouper = Grouper(2.0, track_gaps=True)
    records = events = nvals = 0
    sample: dict[int, list[Any]] = {}

    def consume(event: Event) -> None:
        nonlocal records, events, nvals
        types = [r[0] for r in event.records]
        vals: list[tuple[Any, ...]] = []
        for t in event.typed:
            if isinstance(t, Syscall):
                vals.append((t.exe, t.uid, t.auid, t.success, t.syscall))
            elif isinstance(t, Proctitle):
                vals.append(t.argv)
            else:  # IpeAccess, IpePolicyLoad, IpeConfigChange, IpeMacStatus: NamedTuples of those fields
                vals.append(t)
        records += len(types)
        nvals += len(vals)
        if events < sample_first or events % sample_every == 0:
            sample[events] = [types, vals]
        events += 1

    for event in iter_file_events(path, grouper):
        consume(event)
    for event in grouper.flush():
        consume(event)
    dt = time.process_time() - t0
    print(json.dumps({"records": records, "events": events, "values": nvals, "seconds": dt, "sample": sample,
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))  # fmt: skip


def _run(cmd: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def instructions(cmd: list[str], check: bool = True) -> int:
    """Instructions the command executes (cachegrind's ``I refs``); ``check``: fail on a non-zero exit."""
    r = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", *cmd],
        check=check, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    # (stdout not kept: the command's output held here would raise the peak RSS of every child
    # started after it, which starts from this process's at fork -- bench_audit_cli's goal)
    for line in r.stderr.splitlines():
        if "I   refs:" in line:
            return int(line.rsplit(":", 1)[1].replace(",", ""))
    raise RuntimeError(f"no instruction count from cachegrind: {r.stderr[-500:]}")


def report_instructions(n_records: int, iped_python: str, auparse_python: str, tmp: Path) -> None:
    """Instructions per record of each side on an ``n_records`` log, start-up cost subtracted."""
    if shutil.which("valgrind") is None:
        print("--instructions: valgrind is not installed (apt-get install valgrind)")
        return
    log, empty = tmp / "small.log", tmp / "empty.log"
    generate(log, n_records)
    empty.write_text("")
    lines = log.read_text().count("\n")
    per_record: dict[str, float] = {}
    for side, cmd in {
        "iped": [iped_python, __file__, "--side", "iped", "--log"],
        "iped-py": [iped_python, __file__, "--side", "iped", "--scanner", "python", "--log"],
        "auparse": [auparse_python, "-c", AUPARSE_SIDE],
    }.items():
        tail = [] if side != "auparse" else [str(SAMPLE_FIRST), str(SAMPLE_EVERY)]
        work = instructions([*cmd, str(log), *tail]) - instructions([*cmd, str(empty), *tail])
        per_record[side] = work / lines
    print(f"instructions per record ({lines} records, cachegrind): " + ", ".join(
        f"{SIDES[side]} {per_record[side]:,.0f}" for side in SIDES))  # fmt: skip
    for side in ("iped", "iped-py"):
        print(f"instruction ratio libauparse/{SIDES[side]}: {per_record['auparse'] / per_record[side]:.2f}x")


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Both sides did the same work: equal counts, equal values in the sampled events."""
    for key in ("records", "events", "values"):
        assert ours[key] == theirs[key], f"{key}: iped {ours[key]} != auparse {theirs[key]}"
    assert ours["sample"].keys() == theirs["sample"].keys(), "sampled events differ"
    for idx, item in ours["sample"].items():
        assert item == theirs["sample"][idx], f"event #{idx}: iped {item} != auparse {theirs['sample'][idx]}"


SIDES = {"iped": "iped.audit", "iped-py": "iped (Python)", "auparse": "libauparse"}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--keep", help="write the generated log here and keep it (reused if it exists)")
    ap.add_argument("--runs", type=int, default=5, help="alternate the sides this many times; report medians")
    ap.add_argument("--auparse-python", default="/usr/bin/python3", help="interpreter with the auparse module")
    ap.add_argument("--iped-python", help="interpreter for the iped side (default: the auparse one)")
    ap.add_argument("--instructions", type=int, metavar="N",
                    help="also count instructions per record under cachegrind on an N-record log")  # fmt: skip
    ap.add_argument("--side", choices=["iped"], help=argparse.SUPPRESS)
    ap.add_argument("--scanner", choices=["c", "python"], default="c", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side == "iped":
        iped_side(args.log, SAMPLE_FIRST, SAMPLE_EVERY, args.scanner)
        return 0
    iped_python = args.iped_python or args.auparse_python
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "audit.log"
        if not (args.keep and path.exists()):
            t0 = time.perf_counter()
            generate(path, args.records)
            print(f"generated {path} in {time.perf_counter() - t0:.1f}s")
        with open(path, "rb") as fh:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
        print(f"log: {path.stat().st_size / 1e6:.1f} MB, {lines} records; iped on {iped_python}, "
              f"auparse on {args.auparse_python}; {os.cpu_count()} CPUs")  # fmt: skip
        commands = {
            "iped": [iped_python, __file__, "--side", "iped", "--log", str(path)],
            "iped-py": [iped_python, __file__, "--side", "iped", "--scanner", "python", "--log", str(path)],
            "auparse": [args.auparse_python, "-c", AUPARSE_SIDE, str(path), str(SAMPLE_FIRST), str(SAMPLE_EVERY)],
        }
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        rss: dict[str, list[float]] = {side: [] for side in SIDES}
        for run in range(args.runs):
            results = {side: _run(cmd) for side, cmd in commands.items()}
            compare(results["iped"], results["auparse"])
            compare(results["iped-py"], results["auparse"])
            for side, res in results.items():
                rates[side].append(lines / res["seconds"])
                rss[side].append(res["maxrss_kb"] / 1024)
            print(f"run {run + 1}: " + " | ".join(
                f"{side} {results[side]['seconds']:5.2f}s {rates[side][-1]:>9,.0f} rec/s" for side in SIDES
            ) + f" | ratio {rates['iped'][-1] / rates['auparse'][-1]:.2f}x"
              f"\n       ({results['iped']['records']} records, {results['iped']['events']} events, "
              f"{results['iped']['values']} field tuples, all equal)")  # fmt: skip
        if args.instructions:
            report_instructions(args.instructions, iped_python, args.auparse_python, Path(tmp))
    for side, name in SIDES.items():
        print(f"{name:<14}: {statistics.median(rates[side]):>11,.0f} records/s median, {max(rates[side]):>11,.0f} best;"
              f"  peak RSS {statistics.median(rss[side]):7.1f} MiB")  # fmt: skip
    for side in ("iped", "iped-py"):
        ratio = statistics.median(rates[side]) / statistics.median(rates["auparse"])
        best = max(rates[side]) / max(rates["auparse"])
        verdict = ("OK" if ratio >= 1.5 else "BELOW TARGET") if side == "iped" else "(no target)"
        print(f"ratio {SIDES[side]}/libauparse: {ratio:.2f}x median of {args.runs}, {best:.2f}x best runs "
              f"(target >= 1.5x) {verdict}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
