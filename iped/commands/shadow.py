"""``iped shadow [--policy FILE] [--output FILE] [--watch PATH]...``: IPE's decisions without IPE.

For kernels without IPE (or before activating a policy): watch executions with fanotify
``FAN_OPEN_EXEC`` — notification only, an exec never waits for iped — evaluate each against the
policy (``--policy FILE``, else the configuration's declared active policy) with the emulator
and the file's properties, and append IPE-shaped audit events (1420 + SYSCALL marked
``key="iped-shadow"`` + EOE) to ``--output`` (default stdout). ``iped audit``, ``iped survey``
and ``iped suggest`` read that file with ``--source FILE``. What fanotify cannot see that IPE
does (library mmaps, mprotect, module and firmware loads, ...) is listed in docs/rollout.md.

Runs until SIGINT/SIGTERM, ``--duration`` seconds or ``--count`` executions; then prints the
counters (``--json``: as JSON) on stderr. Needs CAP_SYS_ADMIN. Exit 0 after a clean stop, 1
when fanotify or the output cannot be used (EPERM: not privileged), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys

from iped.commands import ExitCode, die
from iped.commands import rollout_cli as cmdline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", metavar="FILE", help="policy to evaluate (default: the declared active policy)")
    parser.add_argument("--config", metavar="FILE", help="iped.toml declaring the active policy")
    parser.add_argument("--output", "-o", default="-", metavar="FILE", help="append events to FILE (default: stdout)")
    parser.add_argument(
        "--watch", action="append", metavar="PATH",
        help="watch the filesystem holding PATH (repeatable; default: every mounted filesystem but pseudo ones)",
    )  # fmt: skip
    parser.add_argument("--denials-only", action="store_true", help="write only would-be denials (success_audit=0)")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop after SECONDS")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N executions")
    parser.add_argument("--json", action="store_true", help="counters as JSON on stderr at the end")
    parser.add_argument(
        "--prometheus-textfile", metavar="FILE",
        help="write iped's audit counters over the shadow events here (every 10 s and at the end)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-ms", type=float, default=10.0, metavar="MS",
        help="after a wake-up, let notifications gather this long before reading them (fewer wake-ups per "
        "execution; the exec itself never waits; default 10)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import contextlib
    import selectors
    import signal
    import socket
    import time

    from iped.audit.counters import write_textfile
    from iped.rollout import engine
    from iped.rollout.fanotify import Fanotify, FanotifyError
    from iped.rollout.shadow import Shadow, ShadowLog, counters_line, default_watch_paths

    source = cmdline.policy_file(args.policy) if args.policy else cmdline.declared_policy(args)
    if source is None:
        die("no policy to shadow", hint="give --policy FILE or declare [policies] active in iped.toml",
            code=ExitCode.USAGE)  # fmt: skip
    with contextlib.ExitStack() as stack:
        if args.output == "-":
            out = sys.stdout
        else:
            try:
                out = stack.enter_context(open(args.output, "a", encoding="utf-8", errors="surrogateescape"))
            except OSError as e:
                die(f"--output {args.output}: {e.strerror}")
        try:
            shadow = Shadow(source.text, ShadowLog(out), success_audit=not args.denials_only)
        except engine.PolicyError as e:
            die(f"{source.origin}: {e}", hint="check it with 'iped validate'", code=ExitCode.USAGE)
        try:
            fan = Fanotify()
            stack.callback(fan.close)
            for path in args.watch or default_watch_paths():
                try:
                    fan.mark(path)
                except FanotifyError as e:
                    if args.watch:
                        raise
                    cmdline.say(f"not watched: {e}")
        except FanotifyError as e:
            die(f"fanotify: {e}")
        stop = False

        def _stop(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True

        # A signal wakes the select through this pair (signal.set_wakeup_fd): polling for the
        # stop flag on a timer kept an idle shadow running up to a second (2.1 s measured) after
        # SIGTERM, and woke it every second for nothing.
        sig_r, sig_w = socket.socketpair()
        stack.callback(sig_r.close)
        stack.callback(sig_w.close)
        for s in (sig_r, sig_w):
            s.setblocking(False)
        stack.callback(signal.set_wakeup_fd, signal.set_wakeup_fd(sig_w.fileno(), warn_on_full_buffer=False))
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _stop)
        cmdline.say(f"shadow: evaluating executions against {source.origin}")
        deadline = None if args.duration is None else time.monotonic() + args.duration
        next_metrics = time.monotonic() + 10
        sel = selectors.DefaultSelector()
        stack.callback(sel.close)
        sel.register(fan.fileno(), selectors.EVENT_READ, "fanotify")
        sel.register(sig_r, selectors.EVENT_READ, "signal")
        while not stop:
            wake_at = [t for t in (deadline, next_metrics if args.prometheus_textfile else None) if t is not None]
            timeout = max(0.0, min(wake_at) - time.monotonic()) if wake_at else None
            for key, _ in sel.select(timeout):
                if key.data == "signal":
                    with contextlib.suppress(BlockingIOError):
                        sig_r.recv(4096)  # the handler has set stop already
                elif not stop:
                    time.sleep(args.batch_ms / 1000)  # a burst of execs is read in one go
                    shadow.drain(fan)
            if args.prometheus_textfile and time.monotonic() >= next_metrics:
                write_textfile(shadow.counters.audit, args.prometheus_textfile)
                next_metrics = time.monotonic() + 10
            if (deadline is not None and time.monotonic() >= deadline) or (
                args.count is not None and shadow.counters.execs >= args.count
            ):
                break
        counters = shadow.counters
        if args.prometheus_textfile:
            write_textfile(counters.audit, args.prometheus_textfile)
        print(json.dumps(counters.as_dict()) if args.json else f"iped: {counters_line(counters)}", file=sys.stderr)
    return ExitCode.OK
