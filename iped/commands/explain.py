"""``iped explain RECORD|--source FILE`` and ``iped explain --path P [--policy FILE] [--op OP]``.

On audit records (pasted as arguments, or a file / ``-`` for stdin, in any form ``iped audit``
reads, or bare record bodies such as ``ipe_op=... rule="..."``): which policy line decided
and what a failed load's errno means in IPE's terms.

On a real file path: what the policy (``--policy`` or the active one from securityfs) would
decide for ``--op`` (default EXECUTE) on that file, evaluated by the emulator with the
file's discovered properties; for a denial, every ALLOW rule of that op and the property
that does not hold for this file. Exit 0 when explained (whatever the decision), 1 when the
input holds no IPE record, an access record cut before its rule's action (its decision is
unknown, and said so), or no policy is available, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from iped.commands import ExitCode, add_deprecated_alias, die
from iped.textsafe import escape_controls

if TYPE_CHECKING:
    from iped.audit.records import RawRecord

#: a bare body (no ``type=``/``audit(`` stamp) is recognised by its first field
_BODY_TYPES = (
    ("ipe_op=", 1420),
    ("old_active_pol_name=", 1421),
    ("policy_name=", 1422),
    ("enforcing=", 1404),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("record", nargs="*", help="audit record text (one or more lines)")
    parser.add_argument("--source", metavar="FILE", help="read records from FILE ('-' = stdin), like 'iped audit'")
    add_deprecated_alias(parser, "--file", "--source", dest="source")
    parser.add_argument("--path", metavar="P", help="explain the decision for a real file instead")
    parser.add_argument("--op", default="EXECUTE", help="operation for --path (default EXECUTE)")
    parser.add_argument("--hook", default="BPRM_CHECK", help="hook for --path (default BPRM_CHECK)")
    parser.add_argument("--policy", metavar="FILE", help="policy source (default: the active policy)")
    parser.add_argument("--json", action="store_true", help="JSON output")


def records_from_text(text: str) -> tuple[list[RawRecord], set[tuple[int, int, int]]]:
    """Records from pasted text: full log lines, or bare bodies (stamp 0.000:N, one event each);
    and the stamps of the records whose form does not prove that the kernel wrote them (syslog
    lines, plain dmesg, bare bodies): explained all the same, and said so."""
    from iped.audit.records import RawRecord, RecordError, parse_log_line, parse_unproven_line

    out = []
    unproven: set[tuple[int, int, int]] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            out.append(parse_log_line(line))
            continue
        except RecordError:
            pass
        rec: RawRecord | None
        try:
            rec = parse_unproven_line(line)
        except RecordError:
            rec = next((RawRecord(rtype, 0, 0, n, line) for prefix, rtype in _BODY_TYPES if line.startswith(prefix)),
                       None)
        if rec is not None:
            out.append(rec)
            unproven.add((rec.sec, rec.msec, rec.serial))
    return out, unproven


def _explain_records(args: argparse.Namespace) -> int:
    from iped.audit.group import Grouper
    from iped.audit.render import event_objects
    from iped.commands.audit import load_index

    if args.source == "-":
        text = sys.stdin.read()
    elif args.source:
        try:
            with open(args.source, encoding="utf-8", errors="backslashreplace") as fh:
                text = fh.read()
        except OSError as exc:
            die(f"{args.source}: {exc.strerror}")
    else:
        text = "\n".join(args.record)
    index = load_index(args.policy)
    grouper = Grouper(2.0)
    events = []
    records, unproven = records_from_text(text)
    for rec in records:
        events.extend(grouper.feed(rec, float(rec.sec)))
    events.extend(grouper.flush())
    objs = []
    for event in events:
        form = "unproven" if any((r.sec, r.msec, r.serial) in unproven for r in event.records) else "kernel"
        objs += [{**obj, "provenance": form} for obj in event_objects(event, index)]
    if not objs:
        die("no IPE audit record (1420/1421/1422/1404 lsm=ipe) in the input")
    for obj in objs:
        print(json.dumps(obj, ensure_ascii=False) if args.json else escape_controls(obj["explanation"]))
    if index is None and any(o["kind"] == "access" for o in objs) and not args.json:
        print("iped: no policy to locate rules in (give --policy FILE)", file=sys.stderr)
    doubtful = sum(o["provenance"] == "unproven" for o in objs)
    if doubtful:
        print(f"iped: {doubtful} of {len(objs)} record(s) explained are in a form that does not prove the kernel "
              "wrote them (a syslog line, plain dmesg or a bare body: any local user can log such a line); "
              "their provenance is \"unproven\"", file=sys.stderr)
    incomplete = sum(o["kind"] == "access" and o["decision"] is None for o in objs)
    if incomplete:
        die(f"{incomplete} of {len(objs)} IPE records incomplete (cut before the rule's action): "
            "their decision is unknown", hint="give the whole record, as the audit log holds it")
    return ExitCode.OK


def _explain_path(args: argparse.Namespace) -> int:
    from pathlib import Path

    from iped.audit.explain import active_policy, explain_file
    from iped.discovery import file_info_from_path
    from iped.emulator.policy_parser import PolicyError

    if args.policy:
        try:
            text, name = Path(args.policy).read_bytes(), args.policy
        except OSError as exc:
            die(f"{args.policy}: {exc.strerror}")
    else:
        active = active_policy()
        if active is None:
            die("no active IPE policy to evaluate against", hint="give --policy FILE")
        text, name = active
    try:
        info = file_info_from_path(args.path)
    except OSError as exc:
        die(f"{args.path}: {exc.strerror}")
    try:
        result = explain_file(text, name, info, args.op, args.hook)
    except PolicyError as exc:
        die(f"{name}: {exc}")
    except ValueError as exc:
        die(f"--op/--hook: {exc}", code=ExitCode.USAGE)
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(result), ensure_ascii=False))
    else:
        print("\n".join(map(escape_controls, result.lines())))
    return ExitCode.OK


def run(args: argparse.Namespace) -> int:
    if args.path:
        if args.record or args.source:
            die("--path cannot be combined with records", code=ExitCode.USAGE)
        return _explain_path(args)
    if not args.record and not args.source:
        die("give a record, --source FILE or --path P", code=ExitCode.USAGE)
    return _explain_records(args)
