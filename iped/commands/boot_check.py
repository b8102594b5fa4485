"""``iped boot-check``: at boot, before iped.service, record what PID 1 loaded; fail closed when asked.

Run by ``iped-boot.service`` (docs/boot.md). It reads the kernel's IPE state (never writes it),
writes the record (:mod:`iped.daemon.bootrecord`) and prints one line. Exit 1 only when the
declared policy is not active *and* fail-closed is on (``[boot] fail_closed`` or
``iped.fail_closed`` on the kernel command line) *and* enforce is declared: then the drop-in
``fail-closed.conf`` halts the boot. Everything else -- an unreadable configuration without the
command line switch, a kernel without IPE -- is reported and exits 0, so a machine that never
opted in never halts because of this check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iped.commands import ExitCode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default="/etc/iped/iped.toml", help="iped.toml to read")
    parser.add_argument("--ipe-root", metavar="DIR", default="/sys/kernel/security/ipe",
                        help="the IPE securityfs directory to read (default: %(default)s)")
    parser.add_argument("--cmdline", metavar="FILE", default="/proc/cmdline",
                        help="the kernel command line to read iped.fail_closed=1 from (default: %(default)s)")


def _say(line: str) -> None:
    sys.stderr.write(f"iped-boot: {line}\n")
    sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    from iped.backend import SecurityfsBackend
    from iped.daemon.bootrecord import build_record, cmdline_fail_closed, current_boot_id, read_deployed
    from iped.fsutil import write_atomically
    from iped.settings import Settings

    try:
        cmdline = Path(args.cmdline).read_text()
    except OSError:
        cmdline = ""
    forced = cmdline_fail_closed(cmdline)
    settings = Settings()
    try:
        from iped.config import ConfigError, load_settings

        try:
            settings = load_settings(Path(args.config))
        except ConfigError as e:
            _say(f"{args.config}: invalid, checking with the defaults: {'; '.join(str(p) for p in e.problems)}")
    except FileNotFoundError:
        _say(f"{args.config}: not found, checking with the defaults")
    fail_closed = forced or settings.boot.fail_closed
    from iped.daemon.bootrecord import read_record

    earlier = read_record(settings.boot.record, current_boot_id())
    if earlier is not None:  # started again later in this boot (iped restarted, upgraded): keep the boot's
        _say(f"recorded at this boot already ({earlier.get('recorded_at')}): {earlier.get('reason')}")
        return ExitCode.OK
    ipe_root = Path(args.ipe_root)
    if not ipe_root.is_dir():
        why = f"{ipe_root}: no IPE in this kernel (securityfs not mounted, or IPE not in lsm=)"
        _say(f"FAIL-CLOSED: {why}: stopping the boot" if fail_closed and settings.policies.enforce else why)
        return ExitCode.FAILED if fail_closed and settings.policies.enforce else ExitCode.OK
    try:
        record = build_record(SecurityfsBackend(ipe_root, "boot-check"), settings.boot.copy_dir,
                              settings.policies.active, settings.policies.enforce, fail_closed=fail_closed,
                              boot_id=current_boot_id() or "", deployed=read_deployed(settings.daemon.state_dir))
    except OSError as e:
        _say(f"{ipe_root}: cannot read the IPE state: {e}")
        return ExitCode.FAILED if fail_closed and settings.policies.enforce else ExitCode.OK
    try:
        import json

        settings.boot.record.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(settings.boot.record, json.dumps(record, indent=1, sort_keys=True) + "\n", 0o644,
                         exact_mode=True)
    except OSError as e:
        _say(f"{settings.boot.record}: cannot write the boot record: {e.strerror or e}")
    if record["stops_boot"]:
        _say(f"FAIL-CLOSED: {record['reason']}: stopping the boot")
        return ExitCode.FAILED
    _say(record["reason"] if record["in_force"] else f"WARNING: {record['reason']}")
    return ExitCode.OK
