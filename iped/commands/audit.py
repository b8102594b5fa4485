"""``iped audit [--follow] [--json] [--since TIME] [--source S] [--denials-only] [--policy FILE]``.

Shows IPE audit events: one human line per IPE record (time, decision, op/hook, exe or comm,
path, rule and its policy file:line), or JSON Lines (``--json``, schema in docs/audit.md).

Sources: ``netlink`` (live only: the audit multicast group), ``journal`` (history and live),
``auto`` (netlink when permitted, else the journal; the choice is printed on stderr), or a FILE
(auditd log, ``ausearch --raw`` output, kmsg lines or a ``journalctl -o export`` stream).
Without ``--follow`` the default is the journal's history; with it, ``auto``.

Rules are located in ``--policy FILE`` or, by default, in the active policy's text read from
securityfs (``policies/*/active`` + ``policy``). A search that prints nothing says on stderr
what it read and that nothing matched. Exit 0, 1 when the source cannot be opened (EPERM:
netlink needs CAP_AUDIT_READ) or a FILE holds no audit record, 130 on interrupt.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from iped.commands import ExitCode, die

if TYPE_CHECKING:
    from iped.audit.explain import PolicyIndex
    from iped.audit.files import Unproven
    from iped.audit.group import Event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--follow", "-f", action="store_true", help="keep reading new records")
    parser.add_argument("--json", action="store_true", help="JSON Lines output (docs/audit.md)")
    parser.add_argument("--since", metavar="TIME", help="start at TIME: UNIX seconds, ISO 8601, -10m/2h ago, today")
    from iped.commands import add_deprecated_alias

    parser.add_argument("--source", default=None, metavar="journal|netlink|auto|FILE",
                        help="audit records to read (default: the journal's history; with --follow, auto)")
    parser.add_argument("--denials-only", action="store_true", help="only access records with action=DENY")
    add_deprecated_alias(parser, "--denials", "--denials-only", dest="denials_only", takes_value=False)
    parser.add_argument("--policy", metavar="FILE", help="policy source to locate rules in")
    parser.add_argument("--state-dir", metavar="DIR", help="save/resume the journal cursor here")


_RELATIVE = re.compile(r"^-?(\d+)\s*([smhd])(?:\s+ago)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``--since`` -> UNIX time. Raises ValueError for anything else."""
    import datetime

    now = time.time() if now is None else now
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    if text in ("today", "yesterday"):
        day = datetime.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return day.timestamp() - (86400 if text == "yesterday" else 0)
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.datetime.fromisoformat(text)
    return stamp.timestamp()


def load_index(policy: str | None) -> PolicyIndex | None:
    """The rule index from ``--policy`` or the active policy in securityfs (None if neither)."""
    from iped.audit.explain import PolicyIndex, active_policy
    from iped.emulator.policy_parser import PolicyError

    if policy is not None:
        try:
            return PolicyIndex.from_file(policy)
        except OSError as exc:
            die(f"{policy}: {exc.strerror}")
        except PolicyError as exc:
            die(f"{policy}: {exc}", hint="the policy must parse to locate rules in it")
    active = active_policy()
    if active is None:
        return None
    try:
        return PolicyIndex.from_text(active[0], active[1])
    except PolicyError:
        return None


class _Printer:
    def __init__(self, args: argparse.Namespace, index: PolicyIndex | None) -> None:
        from iped.audit.render import JsonLines

        self.json = bool(args.json)
        self.denials = bool(args.denials_only)
        self.since = parse_since(args.since) if args.since else None
        self.since_text = str(args.since)
        self.index = index
        self.json_lines = JsonLines(index)
        self.printed = 0
        self.ipe_events = 0  # IPE events read, before --since and --denials-only

    def events(self, events: Iterable[Event]) -> None:
        """Print the events' lines, written and flushed once per call (a live source calls it
        per batch read; the file source per :data:`_FILE_BATCH` events)."""
        out: list[str] = []
        if self.json and not self.denials and self.since is None:  # every IPE event's lines, as they come
            self.ipe_events += self.json_lines.extend(out, events)
        else:
            self._filtered(events, out)
        if out:
            out.append("")
            sys.stdout.write("\n".join(out))
            sys.stdout.flush()
            self.printed += len(out) - 1

    def _filtered(self, events: Iterable[Event], out: list[str]) -> None:
        """:meth:`events`' lines under --since, --denials-only, or for people."""
        from iped.audit.render import event_objects, human_line

        for event in events:
            if not event.is_ipe:
                continue
            self.ipe_events += 1
            if self.since is not None and event.timestamp < self.since:
                continue
            if self.json:
                for rec, line in self.json_lines.lines(event):
                    if not self.denials or (rec is not None and rec.action == "DENY"):
                        out.append(line)
                continue
            for obj in event_objects(event, self.index):
                if not self.denials or (obj["kind"] == "access" and obj["decision"] == "DENY"):
                    out.append(human_line(obj))

    def say_if_nothing_matched(self, source: str, records: int) -> None:
        """Nothing printed: say on stderr what was read, so an empty answer is not a silent one."""
        if self.printed:
            return
        filters = [f"--since {self.since_text}"] if self.since is not None else []
        filters += ["--denials-only"] if self.denials else []
        where = f" ({', '.join(filters)})" if filters else ""
        print(f"iped: audit: {source}: {records} records read, {self.ipe_events} IPE events, "
              f"none matched{where}", file=sys.stderr, flush=True)


#: events of a file printed per write (a write per line cost ~1 s per 250k events)
_FILE_BATCH = 512
#: stamps of a file's completed events kept to drop late duplicates (Grouper.done_max): the
#: 120 s ttl on the records' own time alone kept every event of a busy two minutes (~260
#: bytes each: 65 MB for 250k events); a duplicate more than this many events late is read
#: as a new, incomplete event
_DONE_MAX = 16384


def _from_file(path: str, printer: _Printer) -> int:
    from itertools import islice

    from iped.audit.files import Unproven, iter_file_events
    from iped.audit.group import Grouper

    grouper = Grouper(2.0, done_max=_DONE_MAX)
    unproven = Unproven()
    try:
        # auditd logs take the bulk path (iped.audit.bulk); other formats feed the records
        events = iter_file_events(path, grouper, unproven)
        while batch := list(islice(events, _FILE_BATCH)):
            printer.events(batch)
    except BrokenPipeError:
        raise  # stdout's reader went away (| head): cli.main ends quietly
    except OSError as exc:
        die(f"{path}: {exc.strerror}")
    printer.events(grouper.flush())
    report_unproven(path, unproven, printer.json)
    if not grouper.stats.records and not unproven.lines and _has_content(path):
        die(f"{path}: no audit record in it (not an auditd log, 'ausearch --raw' output, kmsg audit lines or a "
            "'journalctl -o export' stream)")
    printer.say_if_nothing_matched(path, grouper.stats.records)
    return ExitCode.OK


def _has_content(path: str) -> bool:
    """Anything but whitespace in the file (an empty or blank log is an answer, not an error)?"""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            if chunk.strip():
                return True
    return False


def report_unproven(source: str, unproven: Unproven, as_json: bool) -> None:
    """Say that lines of ``source`` were not read as the kernel's: on stderr, and with ``--json``
    one object of kind ``unproven`` after the records (docs/audit.md)."""
    from iped.textsafe import escape_controls

    if not unproven.lines:
        return
    note = unproven.note(source)
    print(f"iped: {escape_controls(note)}", file=sys.stderr, flush=True)
    if as_json:
        import json

        sys.stdout.write(json.dumps({"schema_version": 1, "kind": "unproven", "source": source,
                                     "lines": unproven.lines, "first": unproven.first, "explanation": note}) + "\n")
        sys.stdout.flush()


def _live(kind: str, args: argparse.Namespace, printer: _Printer) -> int:
    import selectors
    from pathlib import Path

    from iped.audit.counters import AuditCounters
    from iped.audit.follow import Follower, open_source

    counters = AuditCounters()
    try:
        source, why = open_source(
            kind,
            counters,
            state_dir=Path(args.state_dir) if args.state_dir else None,
            since=printer.since if not args.follow or kind == "journal" else None,
        )
    except PermissionError:
        die(f"cannot open the {kind} audit source: EPERM", hint="netlink needs CAP_AUDIT_READ; try --source journal")
    except ImportError as exc:
        die(f"cannot open the {kind} audit source: {exc}", hint="install python3-systemd")
    except OSError as exc:
        die(f"cannot open the {kind} audit source: {exc.strerror}")
    print(f"iped: audit source: {why}", file=sys.stderr, flush=True)
    follower = Follower(source, description=why, counters=counters)
    if not args.follow:
        printer.events(follower.on_readable())
        printer.events(follower.flush())
        follower.close()
        printer.say_if_nothing_matched(why.split(":", 1)[0], follower.grouper.stats.records)
        return ExitCode.OK
    sel = selectors.DefaultSelector()
    sel.register(follower.fileno(), selectors.EVENT_READ)
    lost_reported = 0
    try:
        printer.events(follower.on_readable())
        while True:
            timeout = follower.timeout()
            if sel.select(1.0 if timeout is None else min(timeout, 1.0)):
                printer.events(follower.on_readable())
            # Expire due events even while records keep arriving: a steady trickle of unrelated
            # records must not hold back an event that is waiting for its EOE.
            printer.events(follower.on_timeout(time.monotonic()))
            lost = sum(counters.lost.values())
            if lost != lost_reported:
                lost_reported = lost
                print(f"iped: audit records lost: {counters.lost}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        printer.events(follower.flush())
        return ExitCode.INTERRUPTED
    finally:
        follower.close()


def run(args: argparse.Namespace) -> int:
    source = args.source or ("auto" if args.follow else "journal")
    if args.since:
        try:
            parse_since(args.since)
        except ValueError:
            die(f"--since: cannot read time {args.since!r}", code=ExitCode.USAGE)
    printer = _Printer(args, load_index(args.policy))
    if source not in ("auto", "netlink", "journal"):
        return _from_file(source, printer)
    return _live(source, args, printer)
